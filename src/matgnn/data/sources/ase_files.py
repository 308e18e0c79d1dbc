"""extxyz / ASE trajectory files and ASE databases, with per-atom arrays as node targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from matgnn import errors
from matgnn.data.sources.base import Entry, StructureSource, file_digest, parse_label
from matgnn.data.structure import Structure
from matgnn.errors import StructureError

#: Array names that are geometry, never targets.
_GEOMETRY = {"numbers", "positions", "momenta", "masses", "tags", "initial_charges"}


def _scalar_fields(mapping: dict[str, Any]) -> list[str]:
    return [k for k, v in mapping.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]


class AseSource(StructureSource):
    """Structures from an extxyz/traj file or an ASE database (``.db``).

    Graph targets come from ``atoms.info`` (extxyz comment line) or a database row's
    key-value pairs, and from scalar calculator results (``energy``); node targets
    from per-atom arrays (``atoms.arrays`` / ``row.data``) or per-atom calculator
    results (``magmoms``, ``charges``, ``energies``). None picks every scalar / every
    per-atom numeric field found on the first structure.

    Ids: ``atoms.info['id']`` (or the ``id`` key of a database row); else
    ``<file stem>[<index>]``.
    """

    def __init__(self, path: str | Path, graph_targets: list[str] | None = None,
                 node_targets: list[str] | None = None, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} not found")
        self.graph_targets = graph_targets
        self.node_targets = node_targets
        #: the file's name without its suffixes (``x`` of ``x.extxyz.gz``)
        self.stem = self.path.name.split(".")[0] if self.path.name.lower().endswith(".gz") else self.path.stem
        self.name = f"ase-{self.stem}"

    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "content": file_digest(self.path),
                "graph_targets": self.graph_targets, "node_targets": self.node_targets}

    def _iter_atoms(self) -> Iterator[tuple[str, Any, dict[str, Any], dict[str, Any]]]:
        """(id, atoms, scalar fields, per-atom fields) for each entry."""
        if self.path.suffix == ".db":
            from ase.db import connect

            for row in connect(str(self.path)).select():
                atoms = row.toatoms()
                scalars = dict(row.key_value_pairs)
                for key in ("energy", "free_energy"):
                    if row.get(key) is not None:
                        scalars[key] = row.get(key)
                arrays = {key: np.asarray(v) for key, v in (row.data or {}).items()}
                for key in ("magmoms", "charges", "energies"):
                    if row.get(key) is not None:
                        arrays[key] = np.asarray(row.get(key))
                sid = str(scalars.pop("id", None) or f"{self.path.stem}[{row.id}]")
                yield sid, atoms, scalars, arrays
            return
        from ase.io import iread

        if self.path.name.lower().endswith(".gz"):  # x.extxyz.gz / x.xyz.gz: read through gzip
            import gzip

            frames = iread(gzip.open(self.path, "rt"), index=":", format="extxyz")
        else:
            frames = iread(str(self.path), index=":")
        for k, atoms in enumerate(frames):
            scalars = dict(atoms.info)
            arrays = {key: v for key, v in atoms.arrays.items() if key not in _GEOMETRY}
            if atoms.calc is not None:
                for key, v in atoms.calc.results.items():
                    v = np.asarray(v)
                    if v.ndim == 0:
                        scalars[key] = float(v)
                    elif v.shape == (len(atoms),):
                        arrays[key] = v
            sid = str(scalars.pop("id", f"{self.stem}[{k}]"))
            yield sid, atoms, scalars, arrays

    def _entries(self) -> Iterator[Entry]:
        gnames, nnames = self.graph_targets, self.node_targets
        try:
            items = self._iter_atoms()
            for sid, atoms, scalars, arrays in items:
                if gnames is None:
                    gnames = _scalar_fields(scalars)
                if nnames is None:
                    nnames = [k for k, v in arrays.items() if np.asarray(v).ndim == 1
                              and np.issubdtype(np.asarray(v).dtype, np.number)]
                file = str(self.path)
                try:
                    graph = {n: parse_label(scalars.get(n), n, sid, file) for n in gnames}
                    node = {}
                    for n in nnames:
                        if n not in arrays:
                            raise StructureError(sid, errors.TARGET_LENGTH, f"per-atom target '{n}' is absent", file)
                        node[n] = np.asarray(arrays[n], dtype=float).reshape(-1)
                except StructureError as e:
                    yield e
                    continue
                yield Structure.from_ase(atoms, sid, graph, node, meta={"source": self.name, "file": file})
        except StructureError:
            raise
        except Exception as e:  # a broken file stops the whole read: say where
            yield StructureError(f"{self.path.name}", errors.UNPARSABLE,
                                 f"cannot parse: {type(e).__name__}: {e}", str(self.path))
