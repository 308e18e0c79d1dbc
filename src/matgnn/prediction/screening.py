"""Screening: keep structures whose predictions pass conditions, sort them, keep the top N.

A condition is ``KEY OP VALUE`` with ``OP`` one of ``< <= > >= == !=`` and ``KEY`` a graph-level
head (``optb88vdw_bandgap``), its ensemble spread (``optb88vdw_bandgap_std``), or ``n_atoms``:
``--where "optb88vdw_bandgap>=1" --where "optb88vdw_bandgap<=2"`` keeps gaps between 1 and 2 eV.
A sort key is a column name, descending with a leading ``-`` (``--sort-by=-optb88vdw_bandgap_std``
puts the least certain first).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_COND = re.compile(r"^\s*([A-Za-z_][\w.+-]*?)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+|nan|inf|-inf)\s*$")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: float

    def __call__(self, row: dict[str, Any]) -> bool:
        v = row.get(self.key)
        return v is not None and _OPS[self.op](float(v), self.value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"


def parse_condition(text: str, columns: Iterable[str]) -> Condition:
    """``"band_gap>=1"`` as a :class:`Condition`; the key must be one of ``columns``."""
    m = _COND.match(text)
    if not m:
        raise ValueError(f"condition {text!r} is not KEY OP NUMBER (OP one of < <= > >= == !=), e.g. 'band_gap>=1'")
    key, op, value = m.group(1), m.group(2), float(m.group(3))
    columns = list(columns)
    if key not in columns:
        raise ValueError(f"condition {text!r}: {key!r} is not a column of the predictions; columns: {columns}")
    return Condition(key, op, value)


def parse_sort(text: str, columns: Iterable[str]) -> tuple[str, bool]:
    """``"-band_gap_std"`` → (``"band_gap_std"``, descending)."""
    key, desc = (text[1:], True) if text.startswith("-") else (text, False)
    columns = list(columns)
    if key not in columns:
        raise ValueError(f"sort key {key!r} is not a column of the predictions; columns: {columns}")
    return key, desc


def sort_rows(rows: list[dict[str, Any]], key: str, descending: bool) -> list[dict[str, Any]]:
    """Rows by ``key`` (NaN last either way)."""
    def k(r: dict[str, Any]) -> tuple[bool, float]:
        v = float(r[key])
        return (v != v, -v if descending else v)
    return sorted(rows, key=k)
