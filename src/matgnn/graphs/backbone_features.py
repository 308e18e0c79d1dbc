"""Frozen features of a pretrained universal interatomic potential, per atom and per structure,
computed once per structure and cached on disk: the machinery every backbone shares.

Each backbone's own file (``matgnn.models.backbones.<name>``, listed in :data:`matgnn.packages.BACKBONES`)
subclasses :class:`FrozenBackbone` with its ``_compute`` and registers it (:func:`register_feature_store`), and
registers the batch fields its models declare (``<name>_features``, and ``<name>_graphs`` for a fine-tuned
backbone) with :func:`matgnn.graphs.extras.register_batch_field`. A model that declares
``batch_fields = ("<name>_features",)`` gets batch fields ``keys.backbone_atom(name)`` ``[n_atoms, dim]`` and
``keys.backbone_crystal(name)`` ``[n_graphs, dim]``.

The cache (``$MATGNN_CACHE_DIR/embeddings/<backbone>-<version>/``, one ``.npy`` per structure) is
keyed by the backbone's name and version and a SHA-256 of the structure (atomic numbers,
positions, cell, periodicity as the batch holds them), so a sweep, an ensemble or a second run
over the same structures computes nothing again; files are written atomically and read as plain
arrays (``allow_pickle=False``).

A structure the backbone refuses (CHGNet refuses, for example, an atom without any neighbour within
its 6 Å graph) is recorded with the backbone's reason (a ``.refused`` file beside the cache files;
the ``.rejected`` markers of earlier versions are not trusted and computed again). Its features are
zero, and the batch carries its reason under :data:`matgnn.keys.BACKBONE_REFUSED` so that prediction
lists it instead of answering from zero features. A failure that is not the structure's fault (the
backbone's package missing or broken, out of memory, an interrupt) is raised, never cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.artifacts import default_cache_root
from matgnn.packages import BACKBONES, require_package


def not_the_structures_fault(e: BaseException) -> bool:
    """Whether a backbone's exception comes from the machine or the install (import, memory, disk, our own
    user errors), not from the structure: such a failure is raised, never recorded as a refusal."""
    from matgnn.errors import MatgnnError

    if isinstance(e, (ImportError, MemoryError, OSError, MatgnnError, torch.OutOfMemoryError)):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def _default_root() -> Path:
    return default_cache_root() / "embeddings"


class FrozenBackbone:
    """A backbone's frozen per-atom and per-structure features, memoised in RAM and cached on disk.
    Subclasses give ``name``, ``version``, ``dim`` and ``_compute`` (:func:`register_feature_store` sets the
    title and package from the backbone's registry line)."""

    name = "backbone"
    title = "backbone"
    version = "0"
    dim = 0
    #: the package that computes the features (checked before any work)
    package = ""

    def __init__(self, root: Path | None = None, batch_size: int = 32) -> None:
        self.folder = (root or _default_root()) / f"{self.name}-{self.version}"
        self.batch_size = batch_size
        self._model = None
        self._memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._said: set[str] = set()
        #: cache key -> the backbone's reason, for every structure it refused (in this process or before)
        self.refusals: dict[str, str] = {}

    @property
    def rejected(self) -> set[str]:
        """Ids of the structures the backbone refused in this process (their features are zero)."""
        return set(self._said)

    def require(self) -> None:
        """The backbone's package is installed, else a one-line :class:`~matgnn.errors.UserError` naming the
        extra (before anything is computed or cached)."""
        if self.package:
            require_package(self.package, f"{self.title} features")

    def _zeros(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((n, self.dim), np.float32), np.zeros(self.dim, np.float32)

    def _reject(self, sid: str, key: str, reason: str, remember: bool = True) -> None:
        """Name a structure the backbone refused (once per process) with the backbone's ``reason``. With
        ``remember``, record the refusal on disk (a ``.refused`` file beside the cache files, holding the
        reason) so that no later process runs the backbone on it again."""
        reason = " ".join(reason.split())[:300] or "refused"
        self.refusals[key] = reason
        if remember:
            from matgnn.artifacts import write_atomic

            try:
                self._path(key).parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self._rejected_path(key), json.dumps({"id": sid, "reason": reason}).encode())
            except OSError:
                pass  # a read-only or full cache only costs the recomputation next time
        if sid not in self._said:
            self._said.add(sid)
            print(f"{self.name}: structure {sid} refused by {self.title} {self.version}: {reason}; it gets no "
                  "prediction", file=sys.stderr)

    def _refusal(self, key: str) -> str | None:
        """The reason recorded for a structure refused before, or None."""
        path = self._rejected_path(key)
        if not path.is_file():
            return None
        try:
            reason = json.loads(path.read_text())["reason"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: computed again
        return str(reason) if isinstance(reason, str) else None

    def _compute(self, structures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 keys_: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    @staticmethod
    def key(z: np.ndarray, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> str:
        h = hashlib.sha256()
        for a, dtype in ((z, np.int64), (pos, np.float32), (cell, np.float32), (pbc, np.bool_)):
            h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def _rejected_path(self, key: str) -> Path:
        # ``.refused`` (with the reason); earlier versions' ``.rejected`` markers also recorded failures that were
        # not the structure's (a missing package), so they are not read
        return self._path(key).with_suffix(".refused")

    def _read(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged file is computed again
        if table.ndim != 2 or table.shape[1] != self.dim or len(table) < 1:
            return None
        return table[1:], table[0]  # row 0: the crystal feature; then one row per atom

    def _write(self, key: str, atom: np.ndarray, crystal: np.ndarray) -> None:
        from matgnn.artifacts import write_atomic

        path = self._path(key)
        buf = io.BytesIO()
        np.save(buf, np.concatenate([crystal[None], atom]).astype(np.float32), allow_pickle=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, buf.getbuffer())
        except OSError:
            pass  # a read-only or full cache only costs the recomputation next time

    def features(self, structures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(per-atom ``[n, dim]``, per-structure ``[dim]``) features of (id, Z, positions, cell, pbc) tuples."""
        return self.features_and_refusals(structures)[0]

    def features_and_refusals(self, structures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                              ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str | None]]:
        """:meth:`features`, and for each structure the backbone's reason when it refused it (its features are
        zero), else None — from one hash of each structure."""
        keys_ = [self.key(*s[1:]) for s in structures]
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for (sid, z, *_), k in zip(structures, keys_):
            got = self._memo.get(k)
            if got is None:
                got = self._read(k)
                if got is not None:
                    self._memo[k] = got
                else:
                    reason = self._refusal(k)
                    if reason is not None:  # refused before (by this or another process)
                        self._reject(sid, k, reason, remember=False)
                        got = self._memo[k] = self._zeros(len(z))
            out.append(got)
        if any(o is None for o in out):
            self.require()
        todo = [i for i, o in enumerate(out) if o is None]
        from matgnn.progress import Progress

        with Progress(f"{self.name} features", total=len(todo)) as progress:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start:start + self.batch_size]
                for i, feats in zip(chunk, self._compute([structures[i] for i in chunk], [keys_[i] for i in chunk])):
                    self._memo[keys_[i]] = feats
                    out[i] = feats
                progress.advance(len(chunk))
        return out, [self.refusals.get(k) for k in keys_]  # type: ignore[return-value]


#: backbone name -> its feature store class, registered by the backbone's own module when it is imported
FEATURE_STORES: dict[str, type[FrozenBackbone]] = {}
_FEATURES: dict[tuple[str, str], FrozenBackbone] = {}


def register_feature_store(cls: type[FrozenBackbone]) -> type[FrozenBackbone]:
    """Record ``cls`` as the feature store of backbone ``cls.name`` (a class decorator); its title and package are
    the backbone's line in :data:`matgnn.packages.BACKBONES`."""
    entry = BACKBONES[cls.name]
    cls.title, cls.package = entry.title, entry.package
    FEATURE_STORES[cls.name] = cls
    return cls


def backbone_features(name: str) -> FrozenBackbone:
    """The process's feature store of backbone ``name`` (one model load, one memo); the backbone's module
    (``matgnn.models.backbones.<name>``) must have been imported, which registers it."""
    if name not in FEATURE_STORES:
        raise ValueError(f"backbone {name!r} has no feature store; registered: {', '.join(sorted(FEATURE_STORES))}")
    key = (name, str(_default_root()))
    if key not in _FEATURES:
        _FEATURES[key] = FEATURE_STORES[name]()
    return _FEATURES[key]


def batch_structures(batch: Any) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The batch's structures as (id, Z, positions, cell, pbc) numpy tuples (what the backbones take)."""
    starts = np.cumsum([0] + batch[keys.N_ATOMS].tolist())
    z, pos = batch[keys.Z].cpu().numpy(), batch[keys.POS].detach().cpu().numpy()
    cell, pbc = batch[keys.CELL].cpu().numpy(), batch[keys.PBC].cpu().numpy()
    return [(sid, z[starts[g]:starts[g + 1]], pos[starts[g]:starts[g + 1]], cell[g], pbc[g])
            for g, sid in enumerate(batch[keys.STRUCTURE_ID])]


def record_structure(rec: dict[str, Any]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A graph-cache record's structure as the (id, Z, positions, cell, pbc) tuple the backbones take (the
    same arrays, so the same cache key, as :func:`batch_structures` gives for it in a batch)."""
    return (rec["id"], np.asarray(rec["z"]), np.asarray(rec["pos"], np.float32), np.asarray(rec["cell"], np.float32),
            np.asarray(rec["pbc"], bool))


def add_backbone_features(batch: Any, name: str) -> Any:
    """Store the batch's features of backbone ``name`` as ``keys.backbone_atom(name)`` / ``keys.backbone_crystal(name)``."""
    store = backbone_features(name)
    structures = batch_structures(batch)
    feats, reasons = store.features_and_refusals(structures)
    refused = list(batch[keys.BACKBONE_REFUSED]) if keys.BACKBONE_REFUSED in batch else [""] * len(structures)
    for g, reason in enumerate(reasons):
        if reason and not refused[g]:
            refused[g] = f"refused by {store.title} {store.version}: {reason}"
    batch[keys.BACKBONE_REFUSED] = refused
    batch[keys.backbone_atom(name)] = torch.from_numpy(np.concatenate([a for a, _ in feats]) if feats
                                                       else np.zeros((0, store.dim), np.float32))
    batch[keys.backbone_crystal(name)] = torch.from_numpy(np.stack([c for _, c in feats]) if feats
                                                          else np.zeros((0, store.dim), np.float32))
    return batch


def structure_objects(batch: Any, memo: dict[str, Any], build: Any) -> list[Any]:
    """One object per structure of ``batch`` (a backbone's own graph), ``build(id, Z, positions, cell, pbc)``
    called once per structure and process (``memo``: cache key -> object)."""
    out = []
    for s in batch_structures(batch):
        key = FrozenBackbone.key(*s[1:])
        if key not in memo:
            memo[key] = build(*s)
        out.append(memo[key])
    return out
