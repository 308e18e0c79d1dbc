"""The embedded demonstration set: random fcc/bcc alloy cells labelled with ASE's EMT.

Needs no download and is generated in seconds, deterministically from a seed. It is
real (if simple) physics, the Effective Medium Theory potential of Jacobsen et al.,
but it is a demonstration set, not DFT data.

Graph target ``mixing_energy`` (eV/atom): EMT energy minus the composition-weighted
energies of the pure fcc metals at their reference lattice constants, per atom.
Node target ``atom_energy`` (eV): EMT's per-atom energy.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from matgnn.data.sources.base import Entry, StructureSource
from matgnn.data.structure import Structure

#: Elements EMT parametrises, with fcc lattice constants (Å) near EMT's equilibrium.
FCC_LATTICE = {"Al": 4.05, "Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92}
GENERATOR_VERSION = 1


@lru_cache(maxsize=None)
def _pure_energy_per_atom(symbol: str) -> float:
    from ase.build import bulk
    from ase.calculators.emt import EMT

    atoms = bulk(symbol, "fcc", a=FCC_LATTICE[symbol], cubic=True)
    atoms.calc = EMT()
    return float(atoms.get_potential_energy()) / len(atoms)


def emt_structure(index: int, seed: int = 0) -> Structure:
    """The ``index``-th structure of the set made with ``seed`` (independent of how many
    structures are asked for)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    symbols = sorted(FCC_LATTICE)
    n_species = int(rng.integers(1, 4))
    species = list(rng.choice(symbols, size=n_species, replace=False))
    lattice = "fcc" if rng.random() < 0.6 else "bcc"
    if lattice == "fcc":
        reps = tuple(int(x) for x in rng.integers(1, 3, size=3))  # 4..32 atoms
    else:
        reps = tuple(int(x) for x in rng.integers(1, 4, size=3))  # 2..54 atoms
        while 2 * np.prod(reps) > 32:
            reps = tuple(int(x) for x in rng.integers(1, 4, size=3))
    n = (4 if lattice == "fcc" else 2) * int(np.prod(reps))
    chosen = rng.choice(species, size=n)
    # Vegard's law at equal volume per atom; bcc at the same atomic volume as fcc.
    a_fcc = float(np.mean([FCC_LATTICE[s] for s in chosen]))
    a = a_fcc if lattice == "fcc" else a_fcc / 2 ** (1 / 3)
    a *= 1.0 + rng.uniform(-0.03, 0.03)
    atoms = bulk("Cu", lattice, a=a, cubic=True).repeat(reps)
    atoms.set_chemical_symbols(list(chosen))
    atoms.positions += rng.normal(0.0, 0.05, size=atoms.positions.shape)
    atoms.calc = EMT()
    energies = atoms.get_potential_energies()
    reference = sum(_pure_energy_per_atom(s) for s in chosen)
    mixing = (float(energies.sum()) - reference) / n
    return Structure(
        id=f"emt-{seed}-{index:05d}",
        numbers=atoms.numbers.astype(np.int64),
        positions=atoms.positions.copy(),
        cell=np.asarray(atoms.cell[:], float),
        pbc=np.ones(3, bool),
        graph_targets={"mixing_energy": mixing},
        node_targets={"atom_energy": np.asarray(energies, float)},
        meta={"source": "emt", "lattice": lattice},
    )


class EmtAlloySource(StructureSource):
    """``n_structures`` EMT-labelled alloy cells (Al, Cu, Ag, Au, Ni, Pd, Pt; 2–32 atoms)."""

    def __init__(self, n_structures: int = 1000, seed: int = 0, limit: int | None = None) -> None:
        super().__init__(limit)
        self.n_structures = n_structures
        self.seed = seed
        self.name = "emt-alloys"

    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"n": self.n_structures, "seed": self.seed, "version": GENERATOR_VERSION}

    def _size(self) -> int:
        return self.n_structures

    def _entries(self) -> Iterator[Entry]:
        for k in range(self.n_structures):
            yield emt_structure(k, self.seed)
