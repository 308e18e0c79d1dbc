"""The structure record every source yields, and the checks that need no neighbour list."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matgnn import errors
from matgnn.errors import StructureError

#: Highest atomic number the featurisers know (Fm). Heavier elements are rejected.
MAX_Z = 100


@dataclass
class Structure:
    """A periodic (or partly periodic) atomic structure with its labels.

    Attributes:
        id: identifier given by the source (JARVIS id, file stem, row number ...).
        numbers: atomic numbers, ``[n]``.
        positions: Cartesian positions in Å, ``[n, 3]``.
        cell: cell vectors as rows in Å, ``[3, 3]``.
        pbc: periodicity along each cell vector, ``[3]`` bool. A monolayer or slab with
            vacuum along c is ``[True, True, False]``.
        graph_targets: graph-level labels; NaN marks a missing label.
        node_targets: per-atom labels, each ``[n]``.
        meta: free-form metadata (``source``, ``file``, ``dimensionality`` ...).
    """

    id: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    graph_targets: dict[str, float] = field(default_factory=dict)
    node_targets: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def formula(self) -> str:
        return reduced_formula(self.numbers)

    def error(self, code: str, detail: str) -> StructureError:
        """A :class:`StructureError` naming this structure."""
        return StructureError(self.id, code, detail, self.meta.get("file"))

    def to_ase(self):  # noqa: ANN201 - ase is imported lazily
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)

    @classmethod
    def from_ase(cls, atoms: Any, sid: str, graph_targets: dict[str, float] | None = None,
                 node_targets: dict[str, np.ndarray] | None = None, meta: dict[str, Any] | None = None) -> Structure:
        """The structure of ASE ``Atoms`` (numbers, Cartesian positions, cell rows, per-axis pbc)."""
        return cls(sid, np.array(atoms.numbers, np.int64), np.array(atoms.positions, float),
                   np.asarray(atoms.cell[:], float), np.asarray(atoms.pbc, bool), graph_targets or {},
                   node_targets or {}, meta or {})


def reduced_formula(numbers: np.ndarray) -> str:
    """Reduced formula in Hill-like order (C, H first if carbon present, then alphabetical)."""
    from ase.data import chemical_symbols

    counts = np.bincount(np.asarray(numbers))
    zs = np.flatnonzero(counts)
    counts = counts[zs]
    g = int(np.gcd.reduce(counts)) if len(counts) else 1
    parts = {chemical_symbols[z]: c // g for z, c in zip(zs.tolist(), counts.tolist())}
    order = sorted(parts)
    if "C" in parts:
        order = ["C"] + (["H"] if "H" in parts else []) + [s for s in order if s not in ("C", "H")]
    return "".join(s + (str(parts[s]) if parts[s] > 1 else "") for s in order)


def missing_value(value: Any) -> bool:
    """True for the values sources use to mean "no label": None, "na", "", NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("", "na", "n/a", "none", "null")
    if isinstance(value, float) and math.isnan(value):
        return True
    return False


def validate_structure(s: Structure) -> None:
    """Checks that need no neighbour list. Raises :class:`StructureError`.

    Empty structure, unknown elements, non-finite geometry, degenerate or left-handed
    cell (zero or negative volume), non-finite labels, per-atom labels whose length is
    not the number of atoms.
    """
    n = s.n_atoms
    if n == 0:
        raise s.error(errors.EMPTY_STRUCTURE, "structure has no atoms")
    if s.numbers.min() < 1 or s.numbers.max() > MAX_Z:
        bad = (s.numbers < 1) | (s.numbers > MAX_Z)
        k = int(np.flatnonzero(bad)[0])
        raise s.error(
            errors.UNKNOWN_ELEMENT,
            f"atom {k} has atomic number {int(s.numbers[k])}; supported are 1..{MAX_Z}",
        )
    # A sum is NaN/inf exactly when some element is (short of overflow): one cheap check.
    if s.positions.shape != (n, 3) or not math.isfinite(float(s.positions.sum())):
        raise s.error(errors.NON_FINITE_GEOMETRY, "positions are not a finite [n, 3] array")
    if s.cell.shape != (3, 3) or not math.isfinite(float(s.cell.sum())):
        raise s.error(errors.NON_FINITE_GEOMETRY, "cell is not a finite 3x3 array")
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = s.cell.tolist()
    pbc = s.pbc.tolist()
    if all(pbc):
        vol = ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)
        if vol <= 1e-6:
            kind = "zero" if abs(vol) <= 1e-6 else "negative (left-handed cell vectors)"
            raise s.error(errors.BAD_CELL, f"cell volume is {vol:.4g} Å^3: {kind}")
    elif any(pbc):
        # Partly periodic: the periodic vectors must be independent (non-zero length/area).
        vecs = [v for v, p in zip(((ax, ay, az), (bx, by, bz), (cx, cy, cz)), pbc) if p]
        if len(vecs) == 1:
            size = math.hypot(*vecs[0])
        else:
            (ux, uy, uz), (vx, vy, vz) = vecs
            size = math.hypot(uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx)
        if size <= 1e-6:
            raise s.error(errors.BAD_CELL, f"periodic cell vectors {vecs} are degenerate")
    for name, value in s.graph_targets.items():
        if value in (math.inf, -math.inf):
            raise s.error(errors.BAD_TARGET, f"graph target '{name}' is {value}")
    for name, arr in s.node_targets.items():
        if arr.shape != (n,):
            raise s.error(
                errors.TARGET_LENGTH,
                f"per-atom target '{name}' has {arr.size} values for {n} atoms",
            )
        if not math.isfinite(float(arr.sum())):
            k = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise s.error(errors.BAD_TARGET, f"per-atom target '{name}' is {arr[k]} at atom {k}")


def make_contiguous(s: Structure) -> Structure:
    """Re-image atoms along each non-periodic cell vector so the atoms form one
    contiguous block (a monolayer cut by the cell boundary becomes whole again).

    Data computed with 3D periodicity (JARVIS monolayers, slabs from DFT codes) may
    place part of a layer at the top of the cell and the rest at the bottom. Once the
    vacuum axis is made non-periodic, the two halves would be far apart. Shifting an
    atom by a whole cell vector is exact for the 3D-periodic data, so we move the
    largest empty gap along that axis to the cell boundary.
    """
    if s.pbc.all() or s.n_atoms < 2:
        return s
    frac = np.linalg.solve(s.cell.T, s.positions.T).T
    shift = np.zeros_like(frac)
    for ax in np.flatnonzero(~s.pbc):
        if np.linalg.norm(s.cell[ax]) < 1e-8:
            continue
        f = frac[:, ax]
        wrapped = f - np.floor(f)
        order = np.argsort(wrapped)
        srt = wrapped[order]
        gaps = np.diff(np.concatenate([srt, srt[:1] + 1.0]))
        g = int(np.argmax(gaps))
        start = srt[(g + 1) % len(srt)]  # lowest coordinate of the contiguous block
        target = wrapped + np.where(wrapped < start - 1e-12, 1.0, 0.0)
        # keep the block where most of its atoms already were
        target -= np.round(np.median(target - f))
        shift[:, ax] = target - f
    if not shift.any():
        return s
    s.positions = s.positions + shift @ s.cell
    return s
