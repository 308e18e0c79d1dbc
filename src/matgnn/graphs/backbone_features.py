"""Frozen features of a pretrained universal interatomic potential, per atom and per structure,
computed once per structure and cached on disk (CHGNet 0.3.0 and SevenNet-0).

CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 5, 1031, 2023; modified BSD licence; its weights
ship inside the ``chgnet`` wheel, so nothing is downloaded) gives for every structure a 64-d
feature per atom (its last atom-convolution output) and a 64-d crystal feature (its pooled
readout input). A model that declares ``batch_fields = ("chgnet_features",)`` gets them as batch
fields ``keys.backbone_atom("chgnet")`` ``[n_atoms, 64]`` and ``keys.backbone_crystal("chgnet")`` ``[n_graphs, 64]``.

SevenNet-0 (Park et al., J. Chem. Theory Comput. 20, 4857, 2024; MIT licence; weights in the
``sevenn`` wheel) gives 128 invariant features per atom: its last interaction block's output (the
``128x0e`` input of its energy readout), read through a forward hook; its per-structure feature is
the mean over the atoms (SevenNet has none of its own). Models declare ``sevennet_features``.

The cache (``$MATGNN_CACHE_DIR/embeddings/<backbone>-<version>/``, one ``.npy`` per structure) is
keyed by the backbone's name and version and a SHA-256 of the structure (atomic numbers,
positions, cell, periodicity as the batch holds them), so a sweep, an ensemble or a second run
over the same structures computes nothing again; files are written atomically and read as plain
arrays (``allow_pickle=False``). A structure the backbone rejects (CHGNet refuses, for example,
an atom without any neighbour within its 6 Å graph) gets zero features, and its id is said on
stderr once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.graphs.cache import default_cache_root

#: the backbone version whose weights are used (and whose features a saved model was trained on)
CHGNET_VERSION = "0.3.0"
FEATURE_DIM = 64


def import_backbone(module: str, name: str, model: str, package: str) -> Any:
    """``module.name`` from a backbone's package, or a :class:`~matgnn.errors.UserError` saying how to
    install it (the ``[foundation]`` extra)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        from matgnn.errors import UserError

        raise UserError(f"model {model!r} needs the {package} package: pip install 'matgnn[foundation]'") from None


def _default_root() -> Path:
    return default_cache_root() / "embeddings"


class FrozenBackbone:
    """A backbone's frozen per-atom and per-structure features, memoised in RAM and cached on disk.
    Subclasses give ``name``, ``version``, ``dim`` and ``_compute``."""

    name = "backbone"
    title = "backbone"
    version = "0"
    dim = FEATURE_DIM

    def __init__(self, root: Path | None = None, batch_size: int = 32) -> None:
        self.folder = (root or _default_root()) / f"{self.name}-{self.version}"
        self.batch_size = batch_size
        self._model = None
        self._memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._said: set[str] = set()

    @property
    def rejected(self) -> set[str]:
        """Ids of the structures the backbone refused in this process (their features are zero)."""
        return set(self._said)

    def _zeros(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((n, self.dim), np.float32), np.zeros(self.dim, np.float32)

    def _reject(self, sid: str, key: str | None = None) -> None:
        """Name a structure the backbone refused (once per process). With its ``key``, remember the refusal
        on disk (a ``.rejected`` marker beside the cache files) so that no later process runs the backbone on
        it again; this process memoises the zero features :meth:`features` gets."""
        if key is not None:
            from matgnn.models.base import write_atomic

            try:
                self._path(key).parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self._rejected_path(key), sid.encode())
            except OSError:
                pass  # a read-only or full cache only costs the recomputation next time
        if sid not in self._said:
            self._said.add(sid)
            print(f"{self.name}: structure {sid} rejected by {self.title} {self.version}; its backbone features are "
                  "zero", file=sys.stderr)

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
        return self._path(key).with_suffix(".rejected")

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
        from matgnn.models.base import write_atomic

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
        keys_ = [self.key(*s[1:]) for s in structures]
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for (sid, z, *_), k in zip(structures, keys_):
            got = self._memo.get(k)
            if got is None:
                got = self._read(k)
                if got is not None:
                    self._memo[k] = got
                elif self._rejected_path(k).is_file():  # refused before (by this or another process)
                    self._reject(sid)
                    got = self._memo[k] = self._zeros(len(z))
            out.append(got)
        todo = [i for i, o in enumerate(out) if o is None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for i, feats in zip(chunk, self._compute([structures[i] for i in chunk], [keys_[i] for i in chunk])):
                self._memo[keys_[i]] = feats
                out[i] = feats
        return out  # type: ignore[return-value]


class ChgnetFeatures(FrozenBackbone):
    """CHGNet 0.3.0's per-atom features and crystal feature."""

    name = "chgnet"
    title = "CHGNet"
    version = CHGNET_VERSION
    dim = FEATURE_DIM

    @property
    def model(self):  # noqa: ANN201 - chgnet's CHGNet
        if self._model is None:
            CHGNet = import_backbone("chgnet.model", "CHGNet", "chgnet", "chgnet")
            with contextlib.redirect_stdout(io.StringIO()):  # its "initialized with N parameters" banner
                self._model = CHGNet.load(model_name=self.version, verbose=False).eval()
        return self._model

    def _compute(self, structures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 keys_: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        from pymatgen.core import Lattice, Structure

        pmg = [Structure(Lattice(np.asarray(cell, float)), [int(x) for x in z], np.asarray(pos, float),
                         coords_are_cartesian=True) for _, z, pos, cell, _ in structures]
        try:
            with torch.inference_mode(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # CHGNet's own tensor-conversion warning
                preds = self.model.predict_structure(pmg, task="e", return_atom_feas=True, return_crystal_feas=True,
                                                     batch_size=len(pmg))
            preds = preds if isinstance(preds, list) else [preds]
        except Exception:  # noqa: BLE001 - CHGNet's own checks: one by one, to find the structures it refuses
            preds = []
            for s in pmg:
                try:
                    with torch.inference_mode(False), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        preds.append(self.model.predict_structure(s, task="e", return_atom_feas=True,
                                                                  return_crystal_feas=True))
                except Exception:  # noqa: BLE001
                    preds.append(None)
        out = []
        for (sid, z, *_), key, p in zip(structures, keys_, preds):
            if p is None:
                self._reject(sid, key)
                out.append(self._zeros(len(z)))
                continue
            atom = np.asarray(p["atom_fea"], np.float32).reshape(len(z), FEATURE_DIM)
            crystal = np.asarray(p["crystal_fea"], np.float32).reshape(FEATURE_DIM)
            self._write(key, atom, crystal)
            out.append((atom, crystal))
        return out


#: SevenNet's package version and pretrained model (both name the features a saved model was trained on)
SEVENNET_MODEL = "7net-0"
SEVENNET_DIM = 128


def sevennet_version() -> str:
    import importlib.metadata

    try:
        return f"{importlib.metadata.version('sevenn')}-{SEVENNET_MODEL}"
    except importlib.metadata.PackageNotFoundError:
        return f"unknown-{SEVENNET_MODEL}"


class SevennetFeatures(FrozenBackbone):
    """SevenNet-0's 128 invariant per-atom features (its energy readout's input) and their mean."""

    name = "sevennet"
    title = "SevenNet"
    dim = SEVENNET_DIM

    def __init__(self, root: Path | None = None, batch_size: int = 32) -> None:
        self.version = sevennet_version()
        super().__init__(root, batch_size)
        self._calc = None
        self._captured: list[torch.Tensor] = []

    @property
    def calculator(self):  # noqa: ANN201 - sevenn's SevenNetCalculator
        if self._calc is None:
            SevenNetCalculator = import_backbone("sevenn.calculator", "SevenNetCalculator", "sevennet", "sevenn")
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                self._calc = SevenNetCalculator(SEVENNET_MODEL, device="cpu")
            readout = self._calc.model._modules["reduce_input_to_hidden"]

            def capture(_m, args):  # noqa: ANN001, ANN202
                self._captured.append(args[0]["x"].detach().clone())
                raise _FeaturesTaken  # the readout, the energy and the forces and stress (a backward pass) are not needed

            readout.register_forward_pre_hook(capture)
        return self._calc

    def _compute(self, structures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                 keys_: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        calc = self.calculator
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one small structure at a time: threads only wait on each other (200x slower
        try:                      # on a busy machine with spinning OpenMP threads, measured)
            return [self._one(calc, *s, key) for s, key in zip(structures, keys_)]
        finally:
            torch.set_num_threads(threads)

    def _one(self, calc, sid: str, z: np.ndarray, pos: np.ndarray, cell: np.ndarray,  # noqa: ANN001
             pbc: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        from ase import Atoms

        self._captured.clear()
        try:
            atoms = Atoms(numbers=np.asarray(z, int), positions=np.asarray(pos, float),
                          cell=np.asarray(cell, float), pbc=np.asarray(pbc, bool))
            with torch.inference_mode(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    calc.calculate(atoms, properties=["energy"])
                except _FeaturesTaken:
                    pass
            atom = self._captured[-1].cpu().numpy().astype(np.float32).reshape(len(z), self.dim)
        except Exception:  # noqa: BLE001 - sevenn's own checks (e.g. an element it does not know)
            self._reject(sid, key)
            return self._zeros(len(z))
        crystal = atom.mean(0)
        self._write(key, atom, crystal)
        return atom, crystal


class _FeaturesTaken(Exception):
    """Stops SevenNet's forward pass once the features are captured."""


#: backbone name -> its feature store class
BACKBONES: dict[str, type[FrozenBackbone]] = {"chgnet": ChgnetFeatures, "sevennet": SevennetFeatures}
_FEATURES: dict[tuple[str, str], FrozenBackbone] = {}


def backbone_features(name: str = "chgnet") -> FrozenBackbone:
    """The process's feature store of backbone ``name`` (one model load, one memo)."""
    key = (name, str(_default_root()))
    if key not in _FEATURES:
        _FEATURES[key] = BACKBONES[name]()
    return _FEATURES[key]


def chgnet_features() -> ChgnetFeatures:
    """The process's CHGNet feature store."""
    return backbone_features("chgnet")  # type: ignore[return-value]


def add_chgnet_features(batch: Any) -> Any:
    return add_backbone_features(batch, "chgnet")


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
    feats = store.features(batch_structures(batch))
    batch[keys.backbone_atom(name)] = torch.from_numpy(np.concatenate([a for a, _ in feats]) if feats
                                                       else np.zeros((0, store.dim), np.float32))
    batch[keys.backbone_crystal(name)] = torch.from_numpy(np.stack([c for _, c in feats]) if feats
                                                          else np.zeros((0, store.dim), np.float32))
    return batch


_GRAPHS: dict[str, Any] = {}


def add_chgnet_graphs(batch: Any) -> Any:
    """CHGNet's own graphs (its converter: 6 Å atom graph, 3 Å bond graph) of the batch's structures as
    ``keys.CHGNET_GRAPHS``, built once per structure in this process. A structure CHGNet cannot make a graph
    of (an atom without a neighbour within 6 Å) is a :class:`~matgnn.errors.UserError` naming it: a
    fine-tuned backbone has no features to fall back on."""
    from pymatgen.core import Lattice, Structure

    from matgnn.errors import UserError

    converter = chgnet_features().model.graph_converter
    graphs = []
    for sid, zg, pg, cell, pbc in batch_structures(batch):
        key = FrozenBackbone.key(zg, pg, cell, pbc)
        graph = _GRAPHS.get(key)
        if graph is None:
            s = Structure(Lattice(np.asarray(cell, float)), [int(x) for x in zg], np.asarray(pg, float),
                          coords_are_cartesian=True)
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    graph = converter(s, graph_id=str(sid))
            except Exception as e:  # noqa: BLE001 - CHGNet's converter refuses it
                raise UserError(f"structure {sid}: CHGNet {CHGNET_VERSION} cannot make its graph ({e}); model "
                                "'chgnet_ft' cannot use it") from None
            _GRAPHS[key] = graph
        graphs.append(graph)
    batch[keys.CHGNET_GRAPHS] = graphs
    return batch


_SEVENNET_CHECKPOINT: list[Any] = []


def _sevennet_checkpoint():  # noqa: ANN202 - sevenn's SevenNetCheckpoint
    """The sevenn wheel's SevenNet-0 checkpoint, read once per process (the fine-tuned network and the
    graph builder's cutoff and element map both come from it)."""
    if not _SEVENNET_CHECKPOINT:
        load_checkpoint = import_backbone("sevenn.util", "load_checkpoint", "sevennet_ft", "sevenn")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            _SEVENNET_CHECKPOINT.append(load_checkpoint(SEVENNET_MODEL))
    return _SEVENNET_CHECKPOINT[0]


def sevennet_network():  # noqa: ANN201 - sevenn's AtomGraphSequential
    """A fresh SevenNet-0 network from the sevenn wheel's checkpoint, set for batched graphs (model
    ``sevennet_ft``)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        net = _sevennet_checkpoint().build_model()
    net.set_is_batch_data(True)
    return net


_SEVENNET_GRAPHS: dict[str, Any] = {}


def add_sevennet_graphs(batch: Any) -> Any:
    """SevenNet's own graphs (its neighbour list at its 5 Å cutoff, edge vectors included) of the batch's
    structures as ``keys.SEVENNET_GRAPHS``, built once per structure in this process. An element SevenNet-0
    does not know is a :class:`~matgnn.errors.UserError` naming the structure."""
    from ase import Atoms

    from matgnn.errors import UserError

    AtomGraphData = import_backbone("sevenn.atom_graph_data", "AtomGraphData", "sevennet_ft", "sevenn")
    to_graph = import_backbone("sevenn.train.dataload", "unlabeled_atoms_to_graph", "sevennet_ft", "sevenn")
    net = _sevennet_reference()
    graphs = []
    for sid, zg, pg, cell, pbc in batch_structures(batch):
        key = FrozenBackbone.key(zg, pg, cell, pbc)
        graph = _SEVENNET_GRAPHS.get(key)
        if graph is None:
            unknown = sorted({int(z) for z in zg} - set(net["type_map"]))
            if unknown:
                raise UserError(f"structure {sid}: SevenNet-0 was not trained on element(s) Z={unknown}; model "
                                "'sevennet_ft' cannot use it")
            atoms = Atoms(numbers=np.asarray(zg, int), positions=np.asarray(pg, float),
                          cell=np.asarray(cell, float), pbc=np.asarray(pbc, bool))
            data = to_graph(atoms, net["cutoff"], with_shift=False)
            data.pop("data_info", None)
            graph = AtomGraphData.from_numpy_dict(data)
            _SEVENNET_GRAPHS[key] = graph
        graphs.append(graph)
    batch[keys.SEVENNET_GRAPHS] = graphs
    return batch


_SEVENNET_META: dict[str, Any] = {}


def _sevennet_reference() -> dict[str, Any]:
    """SevenNet-0's cutoff and element map (from the wheel's checkpoint)."""
    if not _SEVENNET_META:
        config = _sevennet_checkpoint().config
        _SEVENNET_META.update(cutoff=float(config["cutoff"]), type_map=dict(config["_type_map"]))
    return _SEVENNET_META
