"""Structural twins: entries of one data set that are the same crystal (or monolayer) under two ids.

Databases hold such twins — JARVIS ``dft_2d`` has the same monolayer under two JVASP ids with the same
label (288 of its 1,076 entries have a twin under the rule below), Materials Project keeps polymorph duplicates — and a random
split that puts one twin in training and the other in test measures a lookup, not a prediction.
``split: {kind: grouped | grouped_kfold, group_by: structure}`` keeps each set of twins in one split.

Two structures are twins when they have the same reduced formula and pymatgen's ``StructureMatcher``
fits them at :data:`TOLERANCES` (primitive cells compared, volumes scaled, so a supercell, a rotation or a
translation is the same structure), after :func:`matching_structure` has given every slab (a monolayer
with vacuum) the same :data:`SLAB_VACUUM` above its layer. Compared as stored, the vacuum dominates the
volume per atom the site tolerance scales with, and a 1H and a 1T monolayer (MoS2: 1.66 eV and a metal in
``dft_2d``) fit; normalised, they do not, while the same monolayer with 10 or 30 Å of vacuum still does. The
same test the reference model (:mod:`matgnn.models.reference`) answers from its reference with. Twins of
twins are one group (union over every fitting pair found)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

#: StructureMatcher tolerances of the rule: the lattice and angle ones looser than pymatgen's (0.2, 5°) because
#: the same monolayer relaxed with two functionals differs in lattice constants
TOLERANCES = {"ltol": 0.3, "stol": 0.3, "angle_tol": 10.0}
#: Å of vacuum every slab gets above its layer before matching
SLAB_VACUUM = 4.0
#: the rule of reference models saved before slabs were normalised (no ``slab_vacuum`` in their model.json):
#: whole cells as stored, a looser site tolerance
WHOLE_CELL_TOLERANCES = {"ltol": 0.3, "stol": 0.5, "angle_tol": 10.0}
#: a gap along a cell vector wider than this (Å, between the planes of atoms) makes a structure a slab
SLAB_GAP = 5.0


def to_pymatgen(numbers: Any, positions: Any, cell: Any) -> Any:
    """A pymatgen ``Structure`` of atomic numbers, Cartesian positions (Å) and cell rows."""
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(np.asarray(cell, float).reshape(3, 3)), [int(z) for z in numbers],
                     np.asarray(positions, float).reshape(-1, 3), coords_are_cartesian=True)


def matching_structure(numbers: Any, positions: Any, cell: Any, slab_vacuum: float | None = SLAB_VACUUM) -> Any:
    """The pymatgen structure twins are compared as: a slab (a gap wider than :data:`SLAB_GAP` between its
    planes of atoms along one cell vector; the widest such) gets that vector replaced by one normal to the
    layer, as long as the layer's thickness plus ``slab_vacuum``, the layer made contiguous; anything else (and
    everything when ``slab_vacuum`` is None) as stored."""
    cell = np.asarray(cell, float).reshape(3, 3)
    pos = np.asarray(positions, float).reshape(-1, 3)
    if slab_vacuum is None or len(pos) == 0:
        return to_pymatgen(numbers, pos, cell)
    frac = np.linalg.solve(cell.T, pos.T).T
    best = None
    for i in range(3):
        normal = np.cross(*cell[[a for a in range(3) if a != i]])
        normal /= np.linalg.norm(normal)
        f = np.sort(np.mod(frac[:, i], 1.0))
        gaps = np.diff(np.r_[f, f[0] + 1.0])
        gap = gaps.max() * abs(cell[i] @ normal)
        if gap > SLAB_GAP and (best is None or gap > best[1]):
            best = (i, gap, normal, f[(int(np.argmax(gaps)) + 1) % len(f)])
    if best is None:
        return to_pymatgen(numbers, pos, cell)
    i, _, normal, start = best
    frac[:, i] = np.mod(frac[:, i] - start, 1.0)  # the layer from 0 up, in one piece
    cart = frac @ cell
    height = cart @ normal
    new = cell.copy()
    new[i] = normal * (height.max() - height.min() + slab_vacuum)
    return to_pymatgen(numbers, cart - np.outer(height.min(), normal), new)


def structure_matcher(tolerances: dict[str, float] | None = None) -> Any:
    """The ``StructureMatcher`` twins are found with."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(primitive_cell=True, scale=True, attempt_supercell=False,
                            **{**TOLERANCES, **(tolerances or {})})


def closest_match(mine: Any, candidates: Iterable[tuple[Any, Any]], matcher: Any) -> tuple[Any, float] | None:
    """The key of the candidate ``(key, structure)`` closest to ``mine`` among those ``matcher`` fits (the
    smallest RMS displacement) and that RMS, or None when none fits. Structures as :func:`matching_structure`
    makes them; ``candidates`` may be a generator that makes each one when it is reached."""
    best: tuple[Any, float] | None = None
    for key, theirs in candidates:
        try:
            rms = matcher.get_rms_dist(mine, theirs)
        except (ValueError, RuntimeError):  # pymatgen gives up on degenerate lattices
            rms = None
        if rms is not None and (best is None or rms[0] < best[1]):
            best = (key, float(rms[0]))
    return best


def twin_groups(formulas: Sequence[str], structure: Callable[[int], tuple[Any, Any, Any]],
                tolerances: dict[str, float] | None = None, progress: Callable[[str], None] | None = None
                ) -> list[int]:
    """A group number per entry: twins share one, every other entry has its own (numbered from 0 in the
    order of the first member). ``formulas``: each entry's reduced formula; ``structure(k)``: entry ``k``'s
    (numbers, positions, cell). Only entries of one formula are compared; ``progress`` gets one line when
    the comparison took long."""
    started = time.perf_counter()
    matcher = structure_matcher(tolerances)
    parent = list(range(len(formulas)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    by_formula: dict[str, list[int]] = {}
    for k, f in enumerate(formulas):
        by_formula.setdefault(f, []).append(k)
    compared = 0
    for members in by_formula.values():
        if len(members) < 2:
            continue
        made = {k: matching_structure(*structure(k)) for k in members}
        for a, k in enumerate(members):
            for other in members[:a]:
                if root(other) == root(k):
                    continue  # already one group through a third member
                compared += 1
                try:
                    fits = matcher.fit(made[k], made[other])
                except (ValueError, RuntimeError):  # pymatgen gives up on degenerate lattices
                    fits = False
                if fits:
                    parent[root(k)] = root(other)
    numbers: dict[int, int] = {}
    out = [numbers.setdefault(root(k), len(numbers)) for k in range(len(formulas))]
    seconds = time.perf_counter() - started
    if progress is not None and seconds > 5:
        progress(f"structural twins: {compared} pairs of one formula compared in {seconds:.0f} s")
    return out


def twin_summary(groups: Sequence[int]) -> tuple[int, int]:
    """How many entries have a twin, and in how many groups of two or more."""
    sizes = np.bincount(np.asarray(groups, dtype=np.int64)) if len(groups) else np.zeros(0, np.int64)
    return int(sizes[sizes > 1].sum()), int((sizes > 1).sum())


def twin_table(ids: Sequence[str], formulas: Sequence[str], groups: Sequence[int],
               labels: dict[str, Sequence[float]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the twins of a data set say about its labels: a summary (entries with a twin, sets, and per graph
    target the spread of the labels within a set: mean, largest, sets whose labels differ by more than 10 % of
    the target's standard deviation) and one row per entry that has a twin (``set``, ``id``, ``formula``, its
    labels), sets ordered by their largest spread first."""
    members: dict[int, list[int]] = {}
    for k, g in enumerate(groups):
        members.setdefault(g, []).append(k)
    sets = [m for m in members.values() if len(m) > 1]
    summary: dict[str, Any] = {"structures_with_a_twin": sum(map(len, sets)), "sets": len(sets),
                               "label_spread": {}}
    spread_of: dict[int, float] = {}
    for name, vals in labels.items():
        v = np.asarray(vals, float)
        std = float(np.nanstd(v)) if np.isfinite(v).any() else 0.0
        spreads = []
        for s_k, m in enumerate(sets):
            got = v[m][np.isfinite(v[m])]
            if len(got) > 1:
                spreads.append(float(got.max() - got.min()))
                spread_of[s_k] = max(spread_of.get(s_k, 0.0), spreads[-1] / std if std > 0 else 0.0)
        if spreads:
            summary["label_spread"][name] = {
                "sets_with_two_labels": len(spreads), "mean": float(np.mean(spreads)), "max": float(np.max(spreads)),
                "sets_differing_by_over_10pct_of_std": int(sum(x > 0.1 * std for x in spreads))}
    order = sorted(range(len(sets)), key=lambda s_k: -spread_of.get(s_k, 0.0))
    rows = [{"set": n, "id": ids[k], "formula": formulas[k], **{name: labels[name][k] for name in labels}}
            for n, s_k in enumerate(order) for k in sets[s_k]]
    return summary, rows
