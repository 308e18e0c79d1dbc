"""Structural twins: entries of one data set that are the same crystal (or monolayer) under two ids.

Databases hold such twins — JARVIS ``dft_2d`` has the same monolayer under two JVASP ids with the same
label (299 of its 1,076 entries have a twin), Materials Project keeps polymorph duplicates — and a random
split that puts one twin in training and the other in test measures a lookup, not a prediction.
``split: {kind: grouped | grouped_kfold, group_by: structure}`` keeps each set of twins in one split.

Two structures are twins when they have the same reduced formula and pymatgen's ``StructureMatcher``
fits them at :data:`DEFAULT_TOLERANCES` (primitive cells compared, volumes scaled, so a supercell, a
rotation, a translation or another vacuum thickness of a monolayer is the same structure); the same test
the reference model (:mod:`matgnn.models.reference`) uses to answer from its reference. Twins of twins
are one group (union over every fitting pair found)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: StructureMatcher tolerances used unless given: looser than pymatgen's (0.2, 0.3, 5°) because the
#: same monolayer relaxed with two functionals differs in lattice constants and vacuum
DEFAULT_TOLERANCES = {"ltol": 0.3, "stol": 0.5, "angle_tol": 10.0}


def to_pymatgen(numbers: Any, positions: Any, cell: Any) -> Any:
    """A pymatgen ``Structure`` of atomic numbers, Cartesian positions (Å) and cell rows."""
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(np.asarray(cell, float).reshape(3, 3)), [int(z) for z in numbers],
                     np.asarray(positions, float).reshape(-1, 3), coords_are_cartesian=True)


def structure_matcher(tolerances: dict[str, float] | None = None) -> Any:
    """The ``StructureMatcher`` twins are found with."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(primitive_cell=True, scale=True, attempt_supercell=False,
                            **{**DEFAULT_TOLERANCES, **(tolerances or {})})


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
        made = {k: to_pymatgen(*structure(k)) for k in members}
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
