"""A folder of CIF / POSCAR / extxyz files with an ``id_prop.csv`` (CGCNN/ALIGNN layout)."""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from matgnn import errors
from matgnn.data.sources.base import Entry, StructureSource, parse_label
from matgnn.data.structure import Structure
from matgnn.errors import StructureError

_SUFFIXES = ("", ".cif", ".vasp", ".poscar", ".POSCAR", ".extxyz", ".xyz", ".json")


def read_structure_file(path: str | Path, sid: str | None = None) -> Structure:
    """Read one CIF, POSCAR/CONTCAR or extxyz file. Raises :class:`StructureError`
    naming the file when it cannot be parsed."""
    path = Path(path)
    sid = sid if sid is not None else path.stem
    name = path.name.lower()
    try:
        if name.endswith((".xyz", ".extxyz")):
            from ase.io import read

            atoms = read(path, index=0)
            return Structure(sid, atoms.numbers.astype(np.int64), atoms.positions.astype(float),
                             np.asarray(atoms.cell[:], float), np.asarray(atoms.pbc, bool),
                             meta={"file": str(path)})
        from pymatgen.core import Structure as PmgStructure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pmg = PmgStructure.from_file(str(path))
    except StructureError:
        raise
    except FileNotFoundError:
        raise StructureError(sid, errors.UNPARSABLE, "file not found", str(path)) from None
    except Exception as e:  # pymatgen/ASE raise many different types on bad files
        raise StructureError(sid, errors.UNPARSABLE, f"cannot parse: {type(e).__name__}: {e}", str(path)) from e
    return structure_from_pymatgen(pmg, sid, str(path))


def structure_from_pymatgen(pmg: Any, sid: str, file: str | None = None) -> Structure:
    """Convert an ordered pymatgen Structure."""
    if not pmg.is_ordered:
        raise StructureError(sid, errors.UNPARSABLE,
                             "structure has partially occupied (disordered) sites", file)
    from pymatgen.core.periodic_table import DummySpecies

    for k, site in enumerate(pmg):
        if isinstance(site.specie, DummySpecies):
            raise StructureError(sid, errors.UNKNOWN_ELEMENT, f"atom {k} has unknown element {str(site.specie)!r}", file)
    numbers = np.array([site.specie.Z for site in pmg], dtype=np.int64)
    return Structure(sid, numbers, np.asarray(pmg.cart_coords, float),
                     np.asarray(pmg.lattice.matrix, float), np.ones(3, bool), meta={"file": file})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.strip().lower() in ("", "na", "nan")
    return True


class FolderSource(StructureSource):
    """Structures in ``folder`` listed by ``folder/id_prop.csv``.

    The CSV's first column is the structure id, the others are graph-level targets.
    With a header row the columns keep its names; without one (CGCNN's layout) they
    are called ``target`` (one column) or ``target_1``, ``target_2`` .... The file of
    id ``X`` is the first of ``X``, ``X.cif``, ``X.vasp``, ``X.poscar``, ``X.extxyz``,
    ``X.xyz`` found in the folder. Empty cells and ``na`` are missing labels.
    """

    def __init__(self, folder: str | Path, id_prop: str = "id_prop.csv",
                 limit: int | None = None) -> None:
        super().__init__(limit)
        self.folder = Path(folder)
        self.id_prop = self.folder / id_prop
        self.name = f"folder-{self.folder.name}"
        if not self.id_prop.is_file():
            raise FileNotFoundError(f"{self.id_prop} not found: a structure folder needs an id_prop.csv "
                                    "whose first column is the id and the others the targets")

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        with open(self.id_prop, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        if not rows:
            return [], []
        first = rows[0]
        if len(first) > 1 and not all(_is_number(c) for c in first[1:]):
            return [c.strip() for c in first[1:]], rows[1:]
        n = len(first) - 1
        return (["target"] if n == 1 else [f"target_{k + 1}" for k in range(n)]), rows

    def _fingerprint_parts(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for p in sorted(self.folder.iterdir()):
            if p.is_file():
                h.update(p.name.encode())
                h.update(hashlib.sha256(p.read_bytes()).digest())
        return {"folder": str(self.folder.resolve()), "content": h.hexdigest(), "id_prop": self.id_prop.name}

    def _find(self, sid: str) -> Path | None:
        for suffix in _SUFFIXES:
            p = self.folder / f"{sid}{suffix}"
            if p.is_file() and p != self.id_prop:
                return p
        return None

    def _entries(self) -> Iterator[Entry]:
        names, rows = self._rows()
        for row in rows:
            sid = row[0].strip()
            path = self._find(sid)
            if path is None:
                yield StructureError(sid, errors.UNPARSABLE, f"no structure file for this id in {self.folder}",
                                     str(self.id_prop))
                continue
            try:
                if len(row) - 1 != len(names):
                    raise StructureError(sid, errors.BAD_TARGET,
                                         f"id_prop.csv row has {len(row) - 1} values for {len(names)} targets",
                                         str(self.id_prop))
                s = read_structure_file(path, sid)
                s.graph_targets = {n: parse_label(v, n, sid, str(path)) for n, v in zip(names, row[1:])}
            except StructureError as e:
                yield e
                continue
            s.meta["source"] = self.name
            yield s
