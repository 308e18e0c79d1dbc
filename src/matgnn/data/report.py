"""What a load kept and skipped, and why: printed and saved with every load."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matgnn.errors import StructureError


@dataclass
class LoadReport:
    """Counts of kept and skipped entries of one source, with every skipped entry listed."""

    source: str
    kept: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    #: entries whose id an earlier entry already had and that were given a new one (prediction)
    renamed: int = 0
    #: head → structures whose answer sat at the bound of the head's training range (log transforms; prediction)
    at_bound: dict[str, int] = field(default_factory=dict)
    #: seconds the work on the kept entries took (prediction), for the summary line's rate
    seconds: float = 0.0

    def skip(self, error: StructureError) -> None:
        self.skipped.append(error.as_dict())

    @property
    def total(self) -> int:
        return self.kept + len(self.skipped)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s["code"] for s in self.skipped).most_common())

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "total": self.total, "kept": self.kept,
                "skipped": len(self.skipped), "skipped_by_reason": self.reasons(),
                "skipped_entries": self.skipped}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadReport:
        return cls(source=d["source"], kept=d["kept"], skipped=list(d["skipped_entries"]))

    def save(self, folder: str | Path) -> Path:
        """Write ``load_report.json`` and ``skipped.csv`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "load_report.json").write_text(json.dumps(self.as_dict(), indent=1))
        self.write_skipped(folder / "skipped.csv")
        return folder / "load_report.json"

    def write_skipped(self, path: str | Path) -> None:
        """The skipped entries as CSV (id, file, code, detail)."""
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "file", "code", "detail"])
            w.writeheader()
            w.writerows(self.skipped)

    def summary_lines(self, max_listed: int = 10) -> list[str]:
        lines = [f"{self.source}: {self.total} entries, {self.kept} kept, {len(self.skipped)} skipped"]
        for code, n in self.reasons().items():
            lines.append(f"  skipped {n} x {code.replace('_', ' ')}")
        for s in self.skipped[:max_listed]:
            lines.append(f"    - {s['id']}: {s['detail']}" + (f" [{s['file']}]" if s.get("file") else ""))
        if len(self.skipped) > max_listed:
            lines.append(f"    ... and {len(self.skipped) - max_listed} more (see skipped.csv)")
        return lines

    def print(self, console: Any = None) -> None:
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        for line in self.summary_lines():
            console.print(line, markup=False, highlight=False)
