"""SevenNet-0 (Park et al., J. Chem. Theory Comput. 20, 4857, 2024; MIT licence; weights in the ``sevenn`` wheel,
trained on MPtrj) as a matgnn backbone: its feature store, its own graphs and its models.

- Features: 128 invariant features per atom, its last interaction block's output (the ``128x0e`` input of its
  energy readout), read through a forward hook; the per-structure feature is their mean (SevenNet has none of its
  own).
- ``model: {name: sevennet, ...}``: our MLP on the frozen features (:class:`SevenNetBackbone`).
- ``model: {name: sevennet_ft, ...}``: SevenNet-0 itself trained with our MLP and heads (:class:`SevenNetFineTune`),
  on its own graphs (its neighbour list at its 5 Å cutoff).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.graphs.backbone_features import (
    FrozenBackbone,
    add_backbone_features,
    not_the_structures_fault,
    register_feature_store,
    structure_objects,
)
from matgnn.graphs.extras import register_batch_field
from matgnn.models.backbones.base import (
    FineTunedBackbone,
    FineTuneSettings,
    FrozenFeaturesModel,
    FrozenFeaturesSettings,
    add_feature_mlp,
    feature_mlp,
)
from matgnn.models.base import MatgnnModel
from matgnn.packages import import_backbone, require_package

#: SevenNet's package version and pretrained model (both name the features a saved model was trained on)
SEVENNET_MODEL = "7net-0"
SEVENNET_DIM = 128


def sevennet_version() -> str:
    import importlib.metadata

    try:
        return f"{importlib.metadata.version('sevenn')}-{SEVENNET_MODEL}"
    except importlib.metadata.PackageNotFoundError:
        return f"unknown-{SEVENNET_MODEL}"


@register_feature_store
class SevennetFeatures(FrozenBackbone):
    """SevenNet-0's 128 invariant per-atom features (its energy readout's input) and their mean."""

    name = "sevennet"
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


def add_graphs(batch: Any) -> Any:
    """Batch field ``sevennet_graphs``: SevenNet's own graphs (its neighbour list at its 5 Å cutoff, edge vectors
    included) of the batch's structures, built once per structure in this process. An element SevenNet-0 does not
    know is a :class:`~matgnn.errors.UserError` naming the structure."""
    from ase import Atoms

    from matgnn.errors import UserError

    AtomGraphData = import_backbone("sevenn.atom_graph_data", "AtomGraphData", "sevennet_ft", "sevenn")
    to_graph = import_backbone("sevenn.train.dataload", "unlabeled_atoms_to_graph", "sevennet_ft", "sevenn")
    net = _sevennet_reference()

    def build(sid: str, z: np.ndarray, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> Any:
        unknown = sorted({int(x) for x in z} - set(net["type_map"]))
        if unknown:
            raise UserError(f"structure {sid}: SevenNet-0 was not trained on element(s) Z={unknown}; model "
                            "'sevennet_ft' cannot use it")
        atoms = Atoms(numbers=np.asarray(z, int), positions=np.asarray(pos, float), cell=np.asarray(cell, float),
                      pbc=np.asarray(pbc, bool))
        data = to_graph(atoms, net["cutoff"], with_shift=False)
        data.pop("data_info", None)
        return AtomGraphData.from_numpy_dict(data)

    batch[keys.backbone_graphs("sevennet")] = structure_objects(batch, _SEVENNET_GRAPHS, build)
    return batch


def add_features(batch: Any) -> Any:
    """Batch field ``sevennet_features``: SevenNet-0's frozen features of the batch's structures."""
    return add_backbone_features(batch, "sevennet")


register_batch_field("sevennet_features", add_features)
register_batch_field("sevennet_graphs", add_graphs)


_SEVENNET_META: dict[str, Any] = {}


def _sevennet_reference() -> dict[str, Any]:
    """SevenNet-0's cutoff and element map (from the wheel's checkpoint)."""
    if not _SEVENNET_META:
        config = _sevennet_checkpoint().config
        _SEVENNET_META.update(cutoff=float(config["cutoff"]), type_map=dict(config["_type_map"]))
    return _SEVENNET_META


class SevenNetConfig(FrozenFeaturesSettings):
    """``model: {name: sevennet, ...}``: our MLP of ``layers`` layers (width ``hidden``) on SevenNet-0's
    frozen 128 invariant features per atom (with their structure's mean beside each atom's)."""

    name: Literal["sevennet"] = "sevennet"


class SevenNetBackbone(FrozenFeaturesModel):
    """Frozen SevenNet-0 features (each atom's, beside its structure's mean) → per-atom MLP → pooling → heads."""

    config_class = SevenNetConfig
    backbone_name = "sevennet"
    # the constructor is the frozen-features model's: SevenNet-0 predicts no magnetic moments to start from


#: SevenNet-0's modules by layer group: its embeddings, then interaction block k = the modules named ``k_*``;
#: the energy readout after ``reduce_input_to_hidden`` (``backbone_readout``) is not read and stays frozen
_SEVENNET_EMBEDDING = ("edge_embedding", "onehot_idx_to_onehot", "onehot_to_feature_x")
_SEVENNET_FEATURES_END = "reduce_input_to_hidden"
#: the last module of SevenNet's energy readout (run only for the anchor loss) and the per-atom energies it writes
_SEVENNET_ENERGY_END = "rescale_atomic_energy"
_SEVENNET_ATOM_ENERGY = "atomic_energy"


def _codegen_constant(key: str) -> bool:
    return key.rsplit(".", 1)[-1].startswith("_tensor_constant")


def _drop_codegen_constants(_module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    for key in [k for k in state if k.startswith(prefix) and _codegen_constant(k)]:
        del state[key]


def _forgive_codegen_constants(_module: nn.Module, incompatible: Any) -> None:
    for key in [k for k in incompatible.missing_keys if _codegen_constant(k)]:
        incompatible.missing_keys.remove(key)
    for key in [k for k in incompatible.unexpected_keys if _codegen_constant(k)]:
        incompatible.unexpected_keys.remove(key)


class SevenNetFineTuneConfig(FineTuneSettings):
    """``model: {name: sevennet_ft, ...}``: SevenNet-0 itself trained with our MLP and heads on its 128 invariant
    per-atom features (the input of its energy readout; the backbone starts from the wheel's weights)."""

    name: Literal["sevennet_ft"] = "sevennet_ft"
    freeze: list[str] = Field(default_factory=list, description=(
        "backbone layer groups kept at the pretrained weights: embedding, conv_0 .. conv_4 (SevenNet-0's "
        "interaction block k: self-connection, self-interactions, convolution, gate); the rest of the backbone "
        "trains. `matgnn finetune` policies apply too"))
    backbone_lr_scale: float = Field(1.0, gt=0, description=(
        "learning rate of SevenNet's own layers (embedding, conv_k) as a multiple of train.lr"))
    anchor_weight: float = Field(0.0, ge=0, description=(
        "weight of an auxiliary L1 loss keeping SevenNet's own energy (eV/atom, through its frozen energy "
        "readout) of each training structure near the pretrained SevenNet-0's, so that fine-tuning does not "
        "forget what it knew (no labels needed; forces are not anchored: they would need a second backward "
        "pass); 0: off"))


class SevenNetFineTune(FineTunedBackbone, MatgnnModel):
    """SevenNet-0 (weights from the sevenn wheel, then trained) → its 128 invariant features per atom (what its
    energy readout reads) → each beside its structure's mean → our per-atom MLP → pooling → heads. Layer
    groups: SevenNet's embeddings (``embedding``), interaction block k (``conv_k``), our MLP (``readout``),
    heads (``head``); SevenNet's energy readout and force output (``backbone_readout``) are not run."""

    config_class = SevenNetFineTuneConfig
    backbone_name = "sevennet"

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 freeze: list[str] | None = None, backbone_lr_scale: float = 1.0, anchor_weight: float = 0.0,
                 backbone_version: str | None = None, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        require_package(self.backbone_package, "model 'sevennet_ft'")
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        version = backbone_version or sevennet_version()
        if version != sevennet_version():
            raise ValueError(f"this model fine-tuned SevenNet {version}; matgnn starts from SevenNet "
                             f"{sevennet_version()}")
        self.record_resolved(backbone_version=version)
        self.sevennet = sevennet_network()
        # e3nn's generated tensor-product code holds constants (``..._tensor_constantN``) that appear in the
        # module only after its code runs; they are rebuilt with the network, so they are neither saved nor
        # expected when weights are loaded (else a copy made before a forward pass cannot take the weights after)
        self.sevennet._register_state_dict_hook(_drop_codegen_constants)
        self.sevennet.register_load_state_dict_post_hook(_forgive_codegen_constants)
        names = list(self.sevennet._modules)
        self._feature_modules = names[:names.index(_SEVENNET_FEATURES_END)]
        self.n_blocks = len({n.split("_", 1)[0] for n in self._feature_modules if n.split("_", 1)[0].isdigit()})
        add_feature_mlp(self, SEVENNET_DIM, hidden, layers, crystal_feature, dropout)
        self._readout_modules = names[names.index(_SEVENNET_FEATURES_END):names.index(_SEVENNET_ENERGY_END) + 1]
        self._fix_groups(freeze, self.n_blocks)
        self.backbone_lr_scale = float(backbone_lr_scale)
        self._init_anchor(anchor_weight)

    def backbone_group(self, name: str) -> str:
        module = name.partition(".")[0]
        if module in _SEVENNET_EMBEDDING:
            return "embedding"
        block = module.split("_", 1)[0]
        if block.isdigit() and module in self._feature_modules:
            return f"conv_{block}"
        return "backbone_readout"

    def _run(self, net: Any, graphs: list[Any], modules: list[str]) -> Any:
        """``graphs`` batched and passed through ``net``'s ``modules`` in order (SevenNet writes into the batch)."""
        from torch_geometric.data import Batch

        data = Batch.from_data_list(graphs).to(self.input[0].weight.device)
        if net.eval_type_map:
            data[net.key_node_feature] = net._atomic_numbers_to_onehot(data[net.key_atomic_numbers])  # noqa: SLF001
        for name in modules:
            data = net._modules[name](data)
        return data

    def _energy_per_atom(self, net: Any, data: Any) -> torch.Tensor:
        """Each structure's energy per atom from ``net``'s energy readout on the features in ``data``."""
        for name in self._readout_modules:
            data = net._modules[name](data)
        return scatter(data[_SEVENNET_ATOM_ENERGY].reshape(-1), data.batch, dim=0, dim_size=data.num_graphs,
                       reduce="mean")

    def node_features(self, batch: Any) -> torch.Tensor:
        graphs = batch[keys.backbone_graphs("sevennet")]
        data = self._run(self.sevennet, graphs, self._feature_modules)
        features = data["x"]  # the readout below replaces data["x"]; these stay what our MLP reads
        if self.training and self.anchor_weight > 0:  # keep SevenNet's own energy near the pretrained model's
            def compute(todo: list[int]) -> list[tuple[torch.Tensor]]:
                ref = self._pretrained_backbone(sevennet_network).to(features.device)
                pre = self._run(ref, [graphs[i] for i in todo], self._feature_modules)
                return [(e,) for e in self._energy_per_atom(ref, pre)]

            e_ref = torch.stack([e for (e,) in self._anchor_references(batch, compute)])
            e = self._energy_per_atom(self.sevennet, data)
            self._anchor_term = self.anchor_weight * (e - e_ref.to(e.device)).abs().mean()
        return feature_mlp(self, features, batch)
