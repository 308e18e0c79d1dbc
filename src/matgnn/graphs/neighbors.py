"""Periodic neighbour lists (vesin) turned into graphs.

A graph has one directed edge ``j -> i`` for each neighbour ``j`` of centre atom ``i``
within the cutoff, including periodic images (and an atom's own images in small
cells). The displacement is ``D = r_j + S·cell − r_i`` with integer cell offsets
``S``; along a non-periodic axis (``pbc`` False, e.g. the vacuum of a monolayer)
``S`` is always 0, so no edge crosses the vacuum.

``max_neighbors`` keeps, for each centre, its nearest neighbours: the ``k`` closest,
plus every neighbour whose distance ties the ``k``-th (within ``tie_tolerance``). Ties
are kept rather than broken arbitrarily so the graph does not depend on atom order
or on the choice of origin (12 neighbours in bcc cut through the 6-fold second shell).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from matgnn import errors
from matgnn.data.structure import Structure

#: Atoms closer than this (Å) are an error: overlapping atoms.
MIN_DISTANCE = 0.5


class GraphSettings(BaseModel):
    """How structures become graphs; part of the graph-cache key."""

    model_config = ConfigDict(extra="forbid")

    cutoff: float = Field(8.0, gt=0, le=30.0, description=(
        "neighbour cutoff radius in Å (at most 30: beyond that a dense crystal has tens of thousands of "
        "neighbours per atom and the graph build does not end in useful time)"))
    max_neighbors: int | None = Field(12, ge=1, le=1000, description=(
        "nearest neighbours kept per atom (ties kept; at most 1000); None keeps all"))
    tie_tolerance: float = Field(1e-4, ge=0, description="distances within this (Å) of the k-th count as ties")

    def cache_key(self) -> dict:
        """What the graphs depend on (goes into the graph-cache key)."""
        return {"cutoff": self.cutoff, "max_neighbors": self.max_neighbors, "tie_tolerance": self.tie_tolerance,
                "builder": "vesin", "vesin": vesin_version(), "format": 1}


@functools.cache
def vesin_version() -> str:
    """The installed vesin's version (part of the cache key: its private C entry point is used)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vesin")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class NeighborGraph:
    """Edges of one structure. ``src`` is the neighbour ``j``, ``dst`` the centre ``i``."""

    src: np.ndarray  # [E] int64
    dst: np.ndarray  # [E] int64
    offsets: np.ndarray  # [E, 3] int
    distances: np.ndarray  # [E] float64


class _VesinDirect:
    """vesin's C neighbour search (``vesin_neighbors``, the function its Python
    ``NeighborList`` wraps) called with reusable options and cheap output copies.

    vesin's generic wrapper spends about as long converting ctypes pointers (numpy,
    torch and cupy paths) as the search itself takes on a small cell; for thousands of
    small structures that overhead dominates. Results are identical (tested); if the
    bindings of an installed vesin differ, :func:`full_neighbor_list` uses the public
    wrapper instead.
    """

    def __init__(self, cutoff: float) -> None:
        import ctypes

        from vesin._c_api import VesinCPU, VesinDevice, VesinNeighborList, VesinOptions
        from vesin._c_lib import get_library

        self._ct = ctypes
        self._lib = get_library()
        self._nl = VesinNeighborList()
        self._device = VesinDevice(VesinCPU, 0)
        opts = VesinOptions()
        opts.cutoff, opts.full, opts.sorted, opts.algorithm = cutoff, True, False, 0
        opts.skin, opts.n_threads = 0.0, 1
        opts.return_shifts, opts.return_distances, opts.return_vectors = True, True, False
        self._opts = opts
        self._err = ctypes.c_char_p()
        self._pd = ctypes.POINTER(ctypes.c_double)
        self._pb = ctypes.POINTER(ctypes.c_bool)

    def _copy(self, ptr, dtype, count: int, width: int) -> np.ndarray:
        ct = self._ct
        addr = ct.cast(ptr, ct.c_void_p).value
        # string_at copies the bytes once; no per-length ctypes array type is created.
        arr = np.frombuffer(ct.string_at(addr, count * width * np.dtype(dtype).itemsize), dtype=dtype)
        return arr.reshape(count, width) if width > 1 else arr

    def __call__(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
        ct = self._ct
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        box = np.ascontiguousarray(cell, dtype=np.float64)
        per = np.ascontiguousarray(pbc, dtype=np.bool_)
        status = self._lib.vesin_neighbors(
            pos.ctypes.data_as(self._pd), pos.shape[0], box.ctypes.data_as(self._pd),
            per.ctypes.data_as(self._pb), self._device, self._opts, ct.byref(self._nl), ct.byref(self._err))
        if status != 0:
            raise RuntimeError(self._err.value.decode("utf8"))
        n = int(self._nl.length)
        if n == 0:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int32), np.zeros(0))
        pairs = self._copy(self._nl.pairs, np.int64, n, 2)
        shifts = self._copy(self._nl.shifts, np.int32, n, 3)
        dist = self._copy(self._nl.distances, np.float64, n, 1)
        return pairs[:, 0], pairs[:, 1], shifts, dist

    def __del__(self) -> None:
        try:
            self._lib.vesin_free(self._ct.byref(self._nl))
        except Exception:  # interpreter shutdown
            pass


class _VesinPublic:
    """vesin's public ``NeighborList`` (fallback)."""

    def __init__(self, cutoff: float) -> None:
        from vesin import NeighborList

        self._nl = NeighborList(cutoff=cutoff, full_list=True, n_threads=1)

    def __call__(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
        i, j, S, d = self._nl.compute(positions, cell, pbc, quantities="ijSd", copy=True)
        return i.astype(np.int64), j.astype(np.int64), S, d


_NL_CACHE: dict[tuple[float, bool], object] = {}


def _vesin(cutoff: float, direct: bool = True):
    nl = _NL_CACHE.get((cutoff, direct))
    if nl is None:
        try:
            nl = _VesinDirect(cutoff) if direct else _VesinPublic(cutoff)
        except (ImportError, AttributeError, TypeError):
            nl = _VesinPublic(cutoff)
        _NL_CACHE[(cutoff, direct)] = nl
    return nl


def full_neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float,
                       direct: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``cutoff``: ``(i, j, S, d)`` as ASE's ``neighbor_list('ijSd')``.

    ``direct=False`` goes through vesin's public wrapper (same results, slower)."""
    return _vesin(cutoff, direct)(positions, cell, pbc)


def build_neighbor_graph(s: Structure, settings: GraphSettings) -> NeighborGraph:
    """The graph of ``s``. Raises :class:`~matgnn.errors.StructureError` for
    overlapping atoms (< 0.5 Å, periodic images included) and for atoms without any
    neighbour inside the cutoff; the caller's policy decides whether such an error
    stops the run or skips the structure (and reports it)."""
    i, j, S, d = full_neighbor_list(s.positions, s.cell, s.pbc, settings.cutoff)
    return select_neighbors(s, i, j, S, d, settings)


def select_neighbors(s: Structure, i: np.ndarray, j: np.ndarray, S: np.ndarray, d: np.ndarray,
                     settings: GraphSettings) -> NeighborGraph:
    """Checks and nearest-neighbour selection on a full neighbour list ``(i, j, S, d)``
    of ``s`` (from any backend)."""
    n = s.n_atoms
    cutoff = settings.cutoff
    counts = np.bincount(i, minlength=n)
    if not len(d) or counts.min() == 0:
        lonely = np.flatnonzero(counts == 0)
        from ase.data import chemical_symbols

        names = ", ".join(f"{int(a)} ({chemical_symbols[int(s.numbers[a])]})" for a in lonely[:5])
        more = f" and {len(lonely) - 5} more" if len(lonely) > 5 else ""
        raise s.error(errors.ISOLATED_ATOM,
                      f"atom(s) {names}{more} have no neighbour within the {cutoff} Å cutoff")
    # One sort by (centre, distance). Exact ties come out in a deterministic order, and
    # the selection below keeps whole groups of ties, so their order never matters.
    order = np.argsort(i * (2.0 * cutoff + 1.0) + d)
    i_sorted = i[order]
    d_sorted = d[order]
    starts = np.cumsum(counts) - counts
    nearest = d_sorted[starts]  # each centre's nearest neighbour
    if nearest.min() < MIN_DISTANCE:
        a = int(np.argmin(nearest))
        e = order[starts[a]]
        what = "its own periodic image" if j[e] == a else f"atom {int(j[e])}"
        raise s.error(errors.OVERLAPPING_ATOMS,
                      f"atom {a} is {d[e]:.3f} Å from {what} (minimum {MIN_DISTANCE} Å)")
    k = settings.max_neighbors
    if k is not None and counts.max() > k:
        kth = np.where(counts > k, d_sorted[np.minimum(starts + k - 1, len(d) - 1)], np.inf)
        keep = d_sorted <= kth[i_sorted] + settings.tie_tolerance
        order, i_sorted, d_sorted = order[keep], i_sorted[keep], d_sorted[keep]
    return NeighborGraph(src=j[order], dst=i_sorted, offsets=S[order], distances=d_sorted)
