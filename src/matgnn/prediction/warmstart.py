"""Predicted magnetic moments as DFT starting points: a VASP ``MAGMOM`` line, ASE
``initial_magnetic_moments`` in an extxyz file, and a GPAW script.

Sign convention: the magnetic-moment models predict |m| (the size of each atom's moment), so
every start written here is **ferromagnetic** (all moments positive), the usual first
spin-polarised run. For an antiferromagnetic start, flip the sign of one sublattice
(``signs=``: one +1/−1 per atom, e.g. from a checkerboard of the magnetic sites); moments below
``zero_below`` μB are written as 0 so non-magnetic atoms start unpolarised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from matgnn.data.structure import Structure


def start_moments(moments: Sequence[float], signs: Sequence[int] | None = None, zero_below: float = 0.05,
                  decimals: int = 2) -> np.ndarray:
    """Rounded starting moments in atom order: |m| (times ``signs``), 0 below ``zero_below``."""
    m = np.abs(np.asarray(moments, float))
    m = np.where(m < zero_below, 0.0, m)
    if signs is not None:
        if len(signs) != len(m):
            raise ValueError(f"{len(signs)} signs for {len(m)} atoms")
        m = m * np.sign(np.asarray(signs, float))
    return np.round(m, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


def magmom_incar_line(moments: Sequence[float], **kw) -> str:
    """``MAGMOM = 2*0.0 1*2.31 ...``: one value per atom in POSCAR order, runs of equal values
    compressed VASP's way (``count*value``)."""
    m = start_moments(moments, **kw)
    parts, k = [], 0
    while k < len(m):
        j = k
        while j + 1 < len(m) and m[j + 1] == m[k]:
            j += 1
        parts.append(f"{j - k + 1}*{m[k]:g}")
        k = j + 1
    return "MAGMOM = " + " ".join(parts)


def parse_magmom_line(line: str) -> np.ndarray:
    """The per-atom values of a ``MAGMOM = ...`` line (``count*value`` runs expanded)."""
    body = line.split("=", 1)[1] if "=" in line else line
    out: list[float] = []
    for tok in body.split("!")[0].split():
        count, star, value = tok.partition("*")
        out.extend([float(value)] * int(count) if star else [float(count)])
    return np.array(out)


def write_extxyz(structure: Structure, moments: Sequence[float], path: str | Path, **kw) -> Path:
    """The structure with ``initial_magnetic_moments`` set (read back with
    ``ase.io.read(path, format="extxyz")``: ids like POSCAR fool ASE's format guess)."""
    from ase import Atoms
    from ase.io import write

    atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=structure.pbc)
    atoms.set_initial_magnetic_moments(start_moments(moments, **kw))
    path = Path(path)
    write(path, atoms, format="extxyz")
    return path


def gpaw_script(structure_file: str, moments: Sequence[float], **kw) -> str:
    """A GPAW script that reads ``structure_file`` and starts a spin-polarised PBE run from the moments."""
    m = ", ".join(f"{v:g}" for v in start_moments(moments, **kw))
    return f'''"""Spin-polarised GPAW run started from matgnn's predicted moments (|m|: a ferromagnetic start)."""
from ase.io import read
from gpaw import GPAW, PW

atoms = read("{structure_file}", format="extxyz")
atoms.set_initial_magnetic_moments([{m}])
atoms.calc = GPAW(mode=PW(500), xc="PBE", kpts={{"density": 4.0}}, spinpol=True, txt="gpaw.txt")
print(atoms.get_potential_energy(), atoms.get_magnetic_moments())
'''


def export_warm_start(structure: Structure, moments: Sequence[float], folder: str | Path, **kw) -> list[Path]:
    """``<id>.MAGMOM`` (INCAR line), ``<id>.extxyz`` (with initial moments) and ``<id>_gpaw.py`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in structure.id)
    incar = folder / f"{stem}.MAGMOM"
    incar.write_text(magmom_incar_line(moments, **kw) + "\n")
    xyz = write_extxyz(structure, moments, folder / f"{stem}.extxyz", **kw)
    gp = folder / f"{stem}_gpaw.py"
    gp.write_text(gpaw_script(xyz.name, moments, **kw))
    return [incar, xyz, gp]
