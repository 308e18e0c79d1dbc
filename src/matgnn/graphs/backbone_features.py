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
arrays (``allow_pickle=False``).

A structure the backbone refuses (CHGNet refuses, for example, an atom without any neighbour within
its 6 Å graph) is recorded with the backbone's reason (a ``.refused`` file beside the cache files;
the ``.rejected`` markers of earlier versions are not trusted and computed again). Its features are
zero, and the batch carries its reason under :data:`matgnn.keys.BACKBONE_REFUSED` so that prediction
lists it instead of answering from zero features. A failure that is not the structure's fault (the
backbone's package missing or broken, out of memory, an interrupt) is raised, never cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.artifacts import default_cache_root

#: the backbone version whose weights are used (and whose features a saved model was trained on)
CHGNET_VERSION = "0.3.0"
FEATURE_DIM = 64


#: optional package -> the extra of matgnn that installs it
EXTRAS = {"chgnet": "foundation", "sevenn": "foundation", "xgboost": "baselines", "optuna": "sweep"}


def missing_package_message(package: str, what: str) -> str:
    """One line: ``what`` needs ``package``, and the command that installs it."""
    extra = EXTRAS.get(package, "foundation")
    return f"{what} needs the {package} package: pip install 'matgnn[{extra}]'"


def package_installed(package: str) -> bool:
    """Whether ``package`` can be found (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def require_package(package: str, what: str) -> None:
    """A :class:`~matgnn.errors.UserError` naming the extra unless ``package`` is installed (checked before any
    work, so nothing is computed or cached without it)."""
    if not package_installed(package):
        from matgnn.errors import UserError

        raise UserError(missing_package_message(package, what))


def import_backbone(module: str, name: str, model: str, package: str) -> Any:
    """``module.name`` from a backbone's package, or a :class:`~matgnn.errors.UserError` saying how to
    install it (the ``[foundation]`` extra); a package that is there but fails to import is said too."""
    import importlib

    from matgnn.errors import UserError

    require_package(package, f"model {model!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 - a broken install: its own error, in one line
        raise UserError(f"model {model!r}: the {package} package is installed but does not import "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); reinstall it: "
                        f"pip install --force-reinstall 'matgnn[{EXTRAS.get(package, 'foundation')}]'") from None


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
    Subclasses give ``name``, ``version``, ``dim`` and ``_compute``."""

    name = "backbone"
    title = "backbone"
    version = "0"
    dim = FEATURE_DIM
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


class ChgnetFeatures(FrozenBackbone):
    """CHGNet 0.3.0's per-atom features and crystal feature."""

    name = "chgnet"
    title = "CHGNet"
    version = CHGNET_VERSION
    dim = FEATURE_DIM
    package = "chgnet"

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
        model = self.model  # outside the try: a missing or broken package is never a structure's refusal
        try:
            with torch.inference_mode(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # CHGNet's own tensor-conversion warning
                preds = model.predict_structure(pmg, task="e", return_atom_feas=True, return_crystal_feas=True,
                                                batch_size=len(pmg))
            preds = preds if isinstance(preds, list) else [preds]
        except Exception as e:  # noqa: BLE001 - CHGNet's own checks: one by one, to find the structures it refuses
            if not_the_structures_fault(e):
                raise
            preds = []
            for s in pmg:
                try:
                    with torch.inference_mode(False), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        preds.append(model.predict_structure(s, task="e", return_atom_feas=True,
                                                             return_crystal_feas=True))
                except Exception as e1:  # noqa: BLE001
                    if not_the_structures_fault(e1):
                        raise
                    preds.append(f"{type(e1).__name__}: {e1}")
        out = []
        for (sid, z, *_), key, p in zip(structures, keys_, preds):
            if isinstance(p, str):
                self._reject(sid, key, p)
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
    package = "sevenn"

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
        calc = self.calculator  # outside any try: a missing or broken package is never a structure's refusal
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
        except Exception as e:  # noqa: BLE001 - sevenn's own checks (e.g. an element it does not know)
            if not_the_structures_fault(e):
                raise
            self._reject(sid, key, f"{type(e).__name__}: {e}")
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
