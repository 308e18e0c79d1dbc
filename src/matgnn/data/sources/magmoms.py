"""Per-atom magnetic moments in JSON Lines (``../shared/data/mp_magmoms`` layout)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from matgnn import errors
from matgnn.data.sources.base import Entry, StructureSource, file_digest
from matgnn.data.structure import Structure
from matgnn.errors import StructureError


class MagmomSource(StructureSource):
    """Materials Project magnetic ground states, one JSON object per line:
    ``atomic_numbers``, ``lattice`` (rows), ``cart_coords``, ``magmoms`` (signed, μB).

    The node target is ``magmom``: |m| by default (as CHGNet predicts), the signed
    moment with ``signed=True``. The graph target ``magmom_abs_mean`` is the mean |m| per
    atom (μB/atom), a structure-level magnetisation that graph-level models (and tools that
    only predict per structure, such as CGCNN) can learn. Ids are ``mp_id`` where the line has one, else
    ``<file stem>:<line number>`` (1-based).
    """

    def __init__(self, path: str | Path, signed: bool = False, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found")
        self.signed = signed
        self.name = "mp_magmoms" if "magmom" in self.path.name else f"magmoms-{self.path.stem}"

    def _size(self) -> int:
        from matgnn.data.sources.base import count_lines

        return count_lines(self.path)

    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"content": file_digest(self.path), "signed": self.signed, "targets": 2}

    def _entries(self) -> Iterator[Entry]:
        opener = gzip.open if self.path.suffix == ".gz" else open
        stem = self.path.name.split(".")[0]
        with opener(self.path, "rt") as f:
            for lineno, line in enumerate(f, start=1):
                sid = f"{stem}:{lineno}"
                try:
                    rec = json.loads(line)
                    sid = str(rec.get("mp_id") or sid)
                    m = np.asarray(rec["magmoms"], dtype=float)
                    s = Structure(sid, np.asarray(rec["atomic_numbers"], dtype=np.int64),
                                  np.asarray(rec["cart_coords"], dtype=float).reshape(-1, 3),
                                  np.asarray(rec["lattice"], dtype=float), np.ones(3, bool),
                                  graph_targets={"magmom_abs_mean": float(np.abs(m).mean()) if len(m) else np.nan},
                                  node_targets={"magmom": m if self.signed else np.abs(m)},
                                  meta={"source": self.name, "file": f"{self.path}:{lineno}"})
                except (KeyError, TypeError, ValueError) as e:
                    yield StructureError(sid, errors.UNPARSABLE, f"malformed line: {e!r}", f"{self.path}:{lineno}")
                    continue
                yield s
