"""JSON Lines whose records hold a CIF string and labels (``../shared/data/mp_cgcnn`` layout:
``material_id``, ``cif``, ``formation_energy_per_atom``, ``band_gap``, ...)."""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matgnn import errors
from matgnn.data.sources.base import (
    Deferred,
    Entry,
    StructureSource,
    file_digest,
    parse_label,
)
from matgnn.data.sources.folder import structure_from_pymatgen
from matgnn.data.structure import missing_value
from matgnn.errors import StructureError


class CifJsonlSource(StructureSource):
    """One structure per line: a CIF string (``cif_field``), an id (``id_field``) and
    graph-level labels (``targets``; None keeps every numeric field). null is a missing label.
    CIFs are parsed with pymatgen (~8 ms each; once, in the graph-cache builder's worker processes,
    then the graph cache holds them)."""

    def __init__(self, path: str | Path, id_field: str = "material_id", cif_field: str = "cif",
                 targets: list[str] | None = None, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found")
        self.id_field, self.cif_field, self.targets = id_field, cif_field, targets
        self.name = self.path.name.split(".")[0]

    def _size(self) -> int:
        from matgnn.data.sources.base import count_lines

        return count_lines(self.path)

    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"content": file_digest(self.path), "id": self.id_field, "cif": self.cif_field, "targets": self.targets}

    def _entries(self) -> Iterator[Deferred]:
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rt") as f:
            for lineno, line in enumerate(f, start=1):
                yield Deferred(parse_record, line, f"{self.path}:{lineno}", f"{self.name}:{lineno}", self.name,
                               self.id_field, self.cif_field, self.targets)


def parse_record(line: str, where: str, sid: str, name: str, id_field: str, cif_field: str,
                 targets: list[str] | None) -> Entry:
    """One JSON line → a :class:`Structure` with its labels, or the :class:`StructureError` saying why not
    (module level: the graph-cache builder calls it in worker processes)."""
    from pymatgen.core import Structure as PmgStructure

    try:
        rec = json.loads(line)
        sid = str(rec.get(id_field) or sid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pmg = PmgStructure.from_str(rec[cif_field], fmt="cif")
        s = structure_from_pymatgen(pmg, sid, where)
        names = targets if targets is not None else [
            k for k, v in rec.items() if k not in (id_field, cif_field)
            and (isinstance(v, (int, float)) and not isinstance(v, bool) or missing_value(v))]
        s.graph_targets = {n: parse_label(rec.get(n), n, sid, where) for n in names}
    except StructureError as e:
        return e
    except Exception as e:  # malformed JSON or CIF
        return StructureError(sid, errors.UNPARSABLE, f"cannot parse: {type(e).__name__}: {e}", where)
    s.meta["source"] = name
    return s
