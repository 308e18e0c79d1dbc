"""The interface every structure source implements."""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from matgnn import errors
from matgnn.data.structure import Structure, missing_value
from matgnn.errors import StructureError

#: What a source yields: a structure, or the reason one entry could not be read.
Entry = Structure | StructureError


class Deferred:
    """An entry whose parsing is put off: a module-level function and its (picklable) arguments
    that return an :data:`Entry`. A source whose entries are costly to parse (CIF text) yields
    these from ``_entries``; iterating the source resolves them in order, and the graph-cache
    builder resolves them in its worker processes instead, so parsing runs on every core."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., Entry], *args: Any) -> None:
        self.fn, self.args = fn, args

    def resolve(self) -> Entry:
        return self.fn(*self.args)


class StructureSource(ABC):
    """An iterable of :class:`Structure` (or :class:`StructureError` for entries that
    cannot be read), with a cheap fingerprint that changes whenever the data would.

    The fingerprint is computed without parsing the structures (file hashes and the
    source's options), so a cache lookup is fast.
    """

    #: Short name used in cache folder names and reports.
    name: str = "source"

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    @abstractmethod
    def _entries(self) -> Iterator[Entry]:
        """All entries, in a fixed order."""

    @abstractmethod
    def _fingerprint_parts(self) -> dict[str, Any]:
        """What the data depends on: file hashes, dataset names, options."""

    def __iter__(self) -> Iterator[Entry]:
        for entry in self.raw_entries():
            yield entry.resolve() if isinstance(entry, Deferred) else entry

    def raw_entries(self) -> Iterator[Entry | Deferred]:
        """The entries with ``limit`` applied, parsing still deferred where the source defers it
        (the graph-cache builder resolves :class:`Deferred` entries in its workers)."""
        for k, entry in enumerate(self._entries()):
            if self.limit is not None and k >= self.limit:
                return
            yield entry

    def fingerprint(self) -> str:
        parts = dict(self._fingerprint_parts(), kind=type(self).__name__, limit=self.limit)
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def describe(self) -> str:
        return self.name

    def _size(self) -> int | None:
        """Number of entries when known without parsing them (progress bars), else None."""
        return None

    def size_hint(self) -> int | None:
        """How many entries iterating yields, when known cheaply (``limit`` applied), else None."""
        n = self._size()
        if n is None:
            return self.limit
        return n if self.limit is None else min(n, self.limit)


def count_lines(path: str | Path) -> int:
    """Non-empty lines of a (possibly gzipped) text file, counted without parsing them: the entries of a
    JSON Lines file, for progress totals."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    n = 0
    with opener(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def parse_label(value: Any, name: str, sid: str, file: str | None = None) -> float:
    """A graph-level label as float: missing values become NaN, anything else that is
    not a finite number is a :class:`StructureError`."""
    if missing_value(value):
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise StructureError(sid, errors.BAD_TARGET, f"target '{name}' is {value!r}, not a number", file) from None
    if not math.isfinite(x):
        raise StructureError(sid, errors.BAD_TARGET, f"target '{name}' is {value!r}", file)
    return x


def numbers_from_symbols(symbols: list[str], sid: str, file: str | None = None) -> np.ndarray:
    """Atomic numbers from element symbols; an unknown symbol names the structure."""
    from ase.data import atomic_numbers

    out = np.empty(len(symbols), dtype=np.int64)
    for k, sym in enumerate(symbols):
        z = atomic_numbers.get(str(sym).strip())
        if z is None or z == 0:
            raise StructureError(sid, errors.UNKNOWN_ELEMENT, f"atom {k} has unknown element {sym!r}", file)
        out[k] = z
    return out
