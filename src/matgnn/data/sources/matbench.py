"""A Matbench v0.1 task's data file (``matbench_<task>.json.gz``, as matminer downloads it): a
pandas "split" frame ``{"index": [...], "columns": ["structure", "<target>"], "data": [[...], ...]}``
whose structures are pymatgen ``Structure.as_dict()`` objects. Read as data (our pymatgen-JSON
reader, never monty's decoder, which would import the ``@module`` a file names). Ids are Matbench's
own (``mb-jdft2d-001`` …: the task name, then the row number padded as Matbench pads it), so the
official folds select by id."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matgnn import errors
from matgnn.data.sources.base import Entry, StructureSource, file_digest, parse_label
from matgnn.data.sources.folder import structure_from_json
from matgnn.errors import StructureError, UserError


def matbench_ids(task: str, n: int, index: list[Any]) -> list[str]:
    """Matbench's ids of a task's rows (``matbench.data_ops.load``'s rule)."""
    prefix = task.replace("matbench", "mb").replace("_", "-")
    width = math.floor(math.log(n, 10)) + 1
    return [f"{prefix}-{int(i) + 1:0{width}d}" for i in index]


class MatbenchSource(StructureSource):
    """The structures and the target of a Matbench data file (``task``: from the file name)."""

    def __init__(self, path: str | Path, task: str | None = None, limit: int | None = None) -> None:
        super().__init__(limit)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found")
        self.task = task or self.path.name.split(".")[0]
        self.name = self.task
        self._target: str | None = None

    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"content": file_digest(self.path), "task": self.task}

    def frame(self) -> dict[str, Any]:
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "rt", encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError) as e:
            raise UserError(f"{self.path}: not a Matbench data file ({type(e).__name__}: {e})") from None
        if not (isinstance(d, dict) and isinstance(d.get("columns"), list) and isinstance(d.get("data"), list)
                and "structure" in d["columns"] and len(d["columns"]) == 2):
            raise UserError(f"{self.path}: not a Matbench structure-task file (needs columns [structure, <target>] "
                            "and data rows)")
        return d

    @property
    def target(self) -> str:
        """The task's target column (read with the file; known without reading it again once iterated)."""
        if self._target is None:
            self._target = next(c for c in self.frame()["columns"] if c != "structure")
        return self._target

    def _entries(self) -> Iterator[Entry]:
        d = self.frame()
        col_s = d["columns"].index("structure")
        target = self._target = d["columns"][1 - col_s]
        index = d.get("index") or list(range(len(d["data"])))
        for sid, row in zip(matbench_ids(self.task, len(d["data"]), index), d["data"]):
            where = f"{self.path}:{sid}"
            try:
                s = structure_from_json(json.dumps(row[col_s]), sid, where)
                s.graph_targets = {target: parse_label(row[1 - col_s], target, sid, where)}
            except StructureError as e:
                yield e
                continue
            except (TypeError, IndexError) as e:
                yield StructureError(sid, errors.UNPARSABLE, f"cannot parse: {type(e).__name__}: {e}", where)
                continue
            s.meta["source"] = self.name
            yield s
