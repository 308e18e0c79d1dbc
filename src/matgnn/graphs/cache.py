"""LMDB cache of graphs, keyed by (source fingerprint, graph settings).

Built once, in parallel over CPU cores, and reused by every model with the same graph
settings. Each record is written in an LMDB transaction together with the record of
every skipped entry, and the cache is marked complete only in the final transaction,
so a build killed half way is never used as if complete: the next build resumes it,
re-using every committed record.

Nothing in a cache is pickled: a record is a JSON header followed by the raw bytes of its
arrays (:func:`pack_record`), metadata and skipped entries are JSON, so opening a cache
someone else wrote can never run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matgnn.artifacts import default_cache_root
from matgnn.data.report import LoadReport
from matgnn.data.sources.base import Deferred, StructureSource
from matgnn.data.structure import Structure, validate_structure
from matgnn.errors import StructureError, UnsafeArtifactError, UserError
from matgnn.graphs.neighbors import GraphSettings, build_neighbor_graph

_META = b"__meta__"
_MAP_SIZE = 1 << 40  # address space only; the file grows as records are written
CACHE_FORMAT = 3
_MAGIC = b"MGR3"


_ARRAYS = ("z", "pos", "cell", "pbc", "src", "dst", "offsets")


#: dtypes an array in a record may have (anything else in a file is refused)
_DTYPES = {"|u1", "|i1", "<i4", "<i8", "<f4", "<f8", "|b1", "<u4"}


def _enc(a: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return a.dtype.str, a.shape, a.tobytes()


def _dec(t: tuple[str, tuple[int, ...], bytes]) -> np.ndarray:
    return np.frombuffer(t[2], dtype=t[0]).reshape(t[1])


def pack_record(rec: dict[str, Any]) -> bytes:
    """Serialise a graph record: ``MGR3``, the header's length, a JSON header (plain
    fields, and dtype/shape/offset of each array) and the arrays' raw bytes (several times
    cheaper than pickling numpy arrays, and loading it cannot run code)."""
    arrays = [(k, np.ascontiguousarray(rec[k])) for k in _ARRAYS]
    arrays += [("node:" + k, np.ascontiguousarray(v)) for k, v in rec["node_targets"].items()]
    layout, offset, chunks = [], 0, []
    for name, a in arrays:
        b = a.tobytes()
        layout.append([name, a.dtype.str, list(a.shape), offset, len(b)])
        chunks.append(b)
        offset += len(b)
    plain = {k: v for k, v in rec.items() if k not in _ARRAYS and k != "node_targets"}
    header = json.dumps({"plain": plain, "arrays": layout}, separators=(",", ":"), default=_plain).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *chunks])


def unpack_record(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`pack_record` (arrays are read-only views of the blob); anything
    else is refused with :class:`UnsafeArtifactError`."""
    view = memoryview(blob)
    if bytes(view[:4]) != _MAGIC:
        raise UnsafeArtifactError("a graph-cache record is not in matgnn's format (stale or foreign cache); "
                                  "delete the cache folder to rebuild it")
    (n,) = struct.unpack("<I", view[4:8])
    header = json.loads(bytes(view[8:8 + n]))
    payload = view[8 + n:]
    d = dict(header["plain"])
    d["node_targets"] = {}
    for name, dtype, shape, offset, size in header["arrays"]:
        if dtype not in _DTYPES:
            raise UnsafeArtifactError(f"a graph-cache record holds an array of dtype {dtype!r}")
        a = np.frombuffer(payload[offset:offset + size], dtype=dtype).reshape(shape)
        if name.startswith("node:"):
            d["node_targets"][name[5:]] = a
        else:
            d[name] = a
    return d


def _plain(v: Any) -> Any:
    """JSON for numpy scalars and small arrays in plain fields."""
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} cannot go into a graph cache")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_plain).encode()


def _loads(blob: Any) -> Any:
    return json.loads(bytes(blob))


def _pack_structure(s: Structure) -> tuple:
    return (s.id, _enc(s.numbers), _enc(s.positions), _enc(s.cell), _enc(s.pbc), s.graph_targets,
            {k: _enc(np.asarray(v)) for k, v in s.node_targets.items()}, s.meta)


def _unpack_structure(t: tuple) -> Structure:
    return Structure(t[0], _dec(t[1]), _dec(t[2]), _dec(t[3]), _dec(t[4]), t[5],
                     {k: _dec(v) for k, v in t[6].items()}, t[7])


def graph_record(s: Structure, settings: GraphSettings) -> dict[str, Any]:
    """Validate ``s`` and build its graph record (plain numpy; what the cache stores).

    Displacements and distances are not stored: they are recomputed exactly from
    positions, cell and integer offsets when a graph is loaded.
    """
    validate_structure(s)
    g = build_neighbor_graph(s, settings)
    wide = len(g.offsets) and (g.offsets.max() > 126 or g.offsets.min() < -126)
    return {
        "id": s.id,
        "z": s.numbers.astype(np.uint8),
        "pos": np.asarray(s.positions, np.float64),
        "cell": np.asarray(s.cell, np.float64),
        "pbc": np.asarray(s.pbc, bool),
        "src": g.src.astype(np.int32),
        "dst": g.dst.astype(np.int32),
        "offsets": g.offsets.astype(np.int32 if wide else np.int8),
        "graph_targets": s.graph_targets,
        "node_targets": {k: np.asarray(v, np.float32) for k, v in s.node_targets.items()},
        "formula": s.formula,
        "meta": {k: v for k, v in s.meta.items() if k in ("dimensionality", "file", "lattice")},
    }


def _work(item: tuple[int, Any, GraphSettings]) -> tuple[int, bytes | StructureError]:
    idx, entry, settings = item
    if isinstance(entry, Deferred):  # parsed here, in the worker
        entry = entry.resolve()
    if isinstance(entry, StructureError):
        return idx, entry
    if isinstance(entry, tuple):
        entry = _unpack_structure(entry)
    try:
        return idx, pack_record(graph_record(entry, settings))
    except StructureError as e:
        return idx, e


def cache_key(source: StructureSource, settings: GraphSettings) -> str:
    blob = json.dumps({"source": source.fingerprint(), "graphs": settings.cache_key(),
                       "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class BuildStats:
    built: int
    reused: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.built / self.seconds if self.seconds > 0 else float("inf")


class GraphCache:
    """A complete graph cache on disk (read-only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = read_meta(self.path)
        if meta is None:
            raise FileNotFoundError(f"{self.path} is not a complete graph cache")
        self.meta = meta
        self.keys: list[bytes] = [b"g:%09d" % k for k in meta["index"]]
        self._resolved = str(self.path.resolve())
        self.build_stats: BuildStats | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def _txn(self):
        return _reader(self._resolved).begin(buffers=True)

    def record(self, k: int) -> dict[str, Any]:
        with self._txn() as txn:
            return unpack_record(txn.get(self.keys[k]))

    def records(self) -> Iterator[dict[str, Any]]:
        with self._txn() as txn:
            for key in self.keys:
                yield unpack_record(txn.get(key))

    @property
    def ids(self) -> list[str]:
        return self.meta["ids"]

    def check_unique_ids(self) -> None:
        """A :class:`UserError` naming the ids that occur more than once (a split by id, the
        saved split of a run, and predictions by id are only exact when ids are unique)."""
        from collections import Counter

        dup = [i for i, n in Counter(self.ids).items() if n > 1]
        if dup:
            raise UserError(f"source {self.meta['source']}: {len(dup)} ids occur more than once "
                            f"({', '.join(map(repr, dup[:5]))}{', ...' if len(dup) > 5 else ''}); ids must be "
                            "unique so that no structure lands in two splits")

    @property
    def report(self) -> LoadReport:
        return LoadReport.from_dict(self.meta["report"])


_READERS: dict[tuple[str, int], Any] = {}


def _reader(path: Path | str):
    """The process's read-only LMDB environment of ``path`` (LMDB allows one per
    process, and none may cross a fork, hence the pid in the key). ``path`` as a str
    must already be resolved (the hot path of reading records)."""
    key = (path if isinstance(path, str) else str(Path(path).resolve()), os.getpid())
    env = _READERS.get(key)
    if env is None:
        import lmdb

        for other in [k for k in _READERS if k[0] == key[0]]:  # inherited through a fork (loader workers):
            _READERS.pop(other).close()                        # py-lmdb refuses a second open of the path
        env = lmdb.open(key[0], readonly=True, lock=False, readahead=False, meminit=False, max_readers=512)
        _READERS[key] = env
    return env


def _drop_reader(path: Path) -> None:
    env = _READERS.pop((str(Path(path).resolve()), os.getpid()), None)
    if env is not None:
        env.close()


def read_meta(path: Path) -> dict[str, Any] | None:
    """The cache's metadata if it is complete, else None."""
    if not (path / "data.mdb").is_file():
        return None
    env = _reader(path)
    with env.begin() as txn:
        blob = txn.get(_META)
    if blob is None:  # incomplete: let a writer open it
        _drop_reader(path)
        return None
    try:
        meta = _loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnsafeArtifactError(f"{path}: the graph cache's metadata is not matgnn's JSON (a stale or foreign "
                                  "cache); delete the folder to rebuild it") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise UnsafeArtifactError(f"{path}: not a graph cache of format {CACHE_FORMAT}; delete it to rebuild")
    return meta


def build_graph_cache(source: StructureSource, settings: GraphSettings | None = None, *,
                      cache_root: str | Path | None = None, workers: int | None = None,
                      on_invalid: str = "skip", progress: bool = True, chunk: int = 256,
                      on_chunk: Callable[[int], None] | None = None) -> GraphCache:
    """Build (or reuse, or finish) the graph cache of ``source`` under ``settings``.

    Args:
        source: where the structures come from.
        settings: cutoff and neighbour settings.
        cache_root: folder of all caches (default :func:`default_cache_root` / graphs).
        workers: processes building graphs (default: all CPU cores; 1 builds inline).
        on_invalid: ``"skip"`` records bad entries in the load report and goes on;
            ``"error"`` raises the first :class:`StructureError`.
        progress: show a progress bar.
        chunk: records per LMDB transaction.
        on_chunk: called with the number of records committed so far (tests use it
            to interrupt a build).
    """
    import lmdb

    if on_invalid not in ("skip", "error"):
        raise ValueError(f"on_invalid must be 'skip' or 'error', not {on_invalid!r}")
    settings = settings or GraphSettings()
    root = Path(cache_root) if cache_root is not None else default_cache_root() / "graphs"
    path = root / f"{source.name}-{cache_key(source, settings)}"
    if read_meta(path) is not None:
        cache = GraphCache(path)
        cache.build_stats = BuildStats(0, len(cache), 0.0)
        return cache
    path.mkdir(parents=True, exist_ok=True)
    try:
        env = lmdb.open(str(path), map_size=_MAP_SIZE, readahead=False, meminit=False)
    except lmdb.Error as e:
        raise UserError(f"graph cache {path}: cannot open for writing: {e} (set MATGNN_CACHE_DIR or "
                        "cache_dir to a writable folder)") from None
    t0 = time.perf_counter()
    try:
        with env.begin() as txn:
            done = {int(bytes(k)[2:]) for k in txn.cursor().iternext(keys=True, values=False)
                    if bytes(k)[:2] in (b"g:", b"s:")}
        workers = workers or os.cpu_count() or 1
        wire = (lambda e: _pack_structure(e) if isinstance(e, Structure) else e) if workers > 1 else (lambda e: e)
        todo = ((idx, wire(entry), settings) for idx, entry in enumerate(source.raw_entries()) if idx not in done)
        built = _write_records(env, todo, workers, on_invalid, progress, chunk, source.describe(),
                               len(done), on_chunk, source.size_hint())
        _finalise(env, path, source, settings, time.perf_counter() - t0)
    except lmdb.Error as e:  # a full disk, an I/O error: the graphs written so far are kept for the next try
        raise UserError(f"graph cache {path}: writing failed ({e}); free space there or set MATGNN_CACHE_DIR / "
                        "cache_dir to another folder, then run again (the graphs already written are kept)") from None
    finally:
        env.close()
    cache = GraphCache(path)
    cache.build_stats = BuildStats(built, len(done), time.perf_counter() - t0)
    return cache


def _results(todo: Iterable, workers: int) -> Iterator:
    if workers <= 1:
        yield from map(_work, todo)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(workers, initializer=_worker_start)
    try:
        yield from pool.imap(_work, todo, chunksize=32)
    except BaseException:  # an error, Ctrl-C, or the caller stopped early (GeneratorExit): end the workers now
        pool.terminate()
        raise
    # A finished build lets the workers leave on their own (close + join) instead of Pool.terminate(), whose
    # signal-and-join can hang when the pool was forked from a process with other threads (CPython #78178).
    pool.close()
    pool.join()


def _worker_start() -> None:
    """A graph-build worker: Ctrl-C (SIGINT to the whole process group) is the parent's to handle — it
    ends the pool — so a worker ignores it (no worker tracebacks, no pool left waiting on a dead worker);
    and a worker dies with its parent (Linux ``PR_SET_PDEATHSIG``), never running on as an orphan."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the pool's own terminate() on exit still ends the workers
    if os.getppid() == 1:  # the parent died before the death signal was armed
        os._exit(1)


def _write_records(env, todo, workers: int, on_invalid: str, progress: bool, chunk: int,
                   label: str, already: int, on_chunk, total: int | None = None) -> int:
    from matgnn.progress import Progress

    built = 0
    pending: list[tuple[bytes, bytes]] = []
    todo_total = None if total is None else max(total - already, 0)
    with Progress(f"graphs {label}", total=todo_total, enabled=progress) as bar:

        def commit() -> None:
            with env.begin(write=True) as txn:
                for key, value in pending:
                    txn.put(key, value)
            pending.clear()
            if on_chunk is not None:
                on_chunk(built)

        for idx, result in _results(todo, workers):
            if isinstance(result, StructureError):
                if on_invalid == "error":
                    if pending:
                        commit()
                    raise result
                pending.append((b"s:%09d" % idx, _dumps(result.as_dict())))
            else:
                pending.append((b"g:%09d" % idx, result))
            built += 1
            if len(pending) >= chunk:
                commit()
                bar.advance(chunk)
        if pending:
            bar.advance(len(pending))
            commit()
    return built


def _finalise(env, path: Path, source: StructureSource, settings: GraphSettings, seconds: float) -> None:
    report = LoadReport(source=source.describe())
    index: list[int] = []
    ids: list[str] = []
    n_atoms: list[int] = []
    n_edges: list[int] = []
    formulas: list[str] = []
    graph_names: dict[str, None] = {}
    node_names: dict[str, None] = {}
    with env.begin() as txn:
        for key, value in txn.cursor():
            key = bytes(key)
            if key.startswith(b"s:"):
                report.skipped.append(_loads(value))
            elif key.startswith(b"g:"):
                rec = unpack_record(value)
                index.append(int(key[2:]))
                ids.append(rec["id"])
                n_atoms.append(len(rec["z"]))
                n_edges.append(len(rec["src"]))
                formulas.append(rec["formula"])
                graph_names.update(dict.fromkeys(rec["graph_targets"]))
                node_names.update(dict.fromkeys(rec["node_targets"]))
    report.kept = len(index)
    meta = {
        "complete": True, "format": CACHE_FORMAT, "source": source.describe(),
        "source_fingerprint": source.fingerprint(), "settings": settings.model_dump(),
        "index": index, "ids": ids, "n_atoms": n_atoms, "n_edges": n_edges, "formula": formulas,
        "graph_targets": list(graph_names), "node_targets": list(node_names),
        "report": report.as_dict(), "build_seconds": seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report.save(path)
    summary = {k: v for k, v in meta.items() if k not in ("index", "ids", "n_atoms", "n_edges", "formula", "report")}
    summary.update(n_graphs=len(index), n_skipped=len(report.skipped), total_atoms=int(sum(n_atoms)),
                   total_edges=int(sum(n_edges)))
    (path / "meta.json").write_text(json.dumps(summary, indent=1))
    with env.begin(write=True) as txn:  # the completion mark: last, in its own transaction
        txn.put(_META, _dumps(meta))
    env.sync(True)
