"""CHGNet 0.3.0 (Deng et al., Nat. Mach. Intell. 5, 1031, 2023; modified BSD licence; its weights ship inside the
``chgnet`` wheel, so nothing is downloaded) as a matgnn backbone: its feature store, its own graphs and its models.

- Features: for every structure a 64-d feature per atom (its last atom-convolution output) and a 64-d crystal
  feature (its pooled readout input), cached per structure (:mod:`matgnn.graphs.backbone_features`).
- ``model: {name: chgnet, ...}``: our MLP on the frozen features (:class:`CHGNetBackbone`); ``baseline: backbone``
  on a magnetic-moment head learns the residual to CHGNet's own zero-shot moment of each atom.
- ``model: {name: chgnet_ft, ...}``: CHGNet itself trained with our MLP and heads (:class:`CHGNetFineTune`), on its
  own graphs (6 Å atom graph, 3 Å bond graph; the run's graph settings do not change them).

CHGNet was trained on MPtrj, which holds Materials Project structures: a benchmark on MP ids with this backbone
says so.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from matgnn import keys
from matgnn.graphs.backbone_features import (
    FrozenBackbone,
    add_backbone_features,
    backbone_features,
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

#: the CHGNet version whose weights are used (and whose features a saved model was trained on)
CHGNET_VERSION = "0.3.0"
FEATURE_DIM = 64


@register_feature_store
class ChgnetFeatures(FrozenBackbone):
    """CHGNet 0.3.0's per-atom features and crystal feature."""

    name = "chgnet"
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


def add_features(batch: Any) -> Any:
    """Batch field ``chgnet_features``: CHGNet's frozen features of the batch's structures."""
    return add_backbone_features(batch, "chgnet")


def _store() -> ChgnetFeatures:
    return backbone_features("chgnet")  # type: ignore[return-value]


_GRAPHS: dict[str, Any] = {}


def add_graphs(batch: Any) -> Any:
    """Batch field ``chgnet_graphs``: CHGNet's own graphs (its converter: 6 Å atom graph, 3 Å bond graph) of the
    batch's structures, built once per structure in this process. A structure CHGNet cannot make a graph of (an
    atom without a neighbour within 6 Å) is a :class:`~matgnn.errors.UserError` naming it: a fine-tuned backbone
    has no features to fall back on."""
    from pymatgen.core import Lattice, Structure

    from matgnn.errors import UserError

    converter = _store().model.graph_converter

    def build(sid: str, z: np.ndarray, pos: np.ndarray, cell: np.ndarray, _pbc: np.ndarray) -> Any:
        s = Structure(Lattice(np.asarray(cell, float)), [int(x) for x in z], np.asarray(pos, float),
                      coords_are_cartesian=True)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                return converter(s, graph_id=str(sid))
        except Exception as e:  # noqa: BLE001 - CHGNet's converter refuses it
            raise UserError(f"structure {sid}: CHGNet {CHGNET_VERSION} cannot make its graph ({e}); model "
                            "'chgnet_ft' cannot use it") from None

    batch[keys.backbone_graphs("chgnet")] = structure_objects(batch, _GRAPHS, build)
    return batch


register_batch_field("chgnet_features", add_features)
register_batch_field("chgnet_graphs", add_graphs)


class CHGNetConfig(FrozenFeaturesSettings):
    """``model: {name: chgnet, ...}``: our MLP of ``layers`` layers (width ``hidden``) on CHGNet
    0.3.0's frozen per-atom features (with its per-structure feature beside each atom's)."""

    name: Literal["chgnet"] = "chgnet"
    crystal_feature: bool = Field(True, description=(
        "give every atom the mean of its structure's backbone features too (intensive: a supercell "
        "gets the same; CHGNet's own crystal feature is a sum over atoms and is not used)"))


class CHGNetBackbone(FrozenFeaturesModel):
    """Frozen CHGNet features (each atom's, beside its structure's mean) → per-atom MLP (Linear,
    SiLU, LayerNorm; residual) → pooling → heads."""

    config_class = CHGNetConfig
    backbone_name = "chgnet"

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 backbone_version: str = CHGNET_VERSION, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        super().__init__(heads, hidden, layers, crystal_feature, backbone_version, cutoff, dropout, pooling,
                         head_hidden)
        if any(h["baseline"] == "backbone" for h in self.head_specs):
            self._add_magmom_reference()

    # ``baseline: backbone``: CHGNet's own magnetic moment of each atom, |w·f + b|, its ``site_wise`` head on
    # the very features the cache holds (the atom features before its last convolution), so the
    # reference costs nothing beyond the cached features and equals CHGNet's zero-shot moment
    backbone_references = True

    def _add_magmom_reference(self) -> None:
        # CHGNet's site_wise weights, saved with ours: a saved model brings them in its state; a new one takes
        # the wheel's on first use (loading CHGNet costs a second, which loading a saved model does not pay)
        self.register_buffer("backbone_magmom_weight", torch.full((self.feature_dim,), float("nan")))
        self.register_buffer("backbone_magmom_bias", torch.tensor(float("nan")))
        self._magmom_reference_ready = False

    def backbone_reference(self, k: int, batch: Any) -> torch.Tensor:
        if not self._magmom_reference_ready:
            if bool(torch.isnan(self.backbone_magmom_bias)):
                head = _store().model.site_wise
                with torch.no_grad():
                    self.backbone_magmom_weight.copy_(head.weight.detach().reshape(-1))
                    self.backbone_magmom_bias.copy_(head.bias.detach().reshape(()))
            self._magmom_reference_ready = True
        f = batch[keys.backbone_atom(self.backbone_name)]
        return torch.abs(f @ self.backbone_magmom_weight + self.backbone_magmom_bias)


#: CHGNet's own modules by layer group (a module not listed is ``backbone_readout``: its energy MLP,
#: magmom head, pooling and norm, which our heads do not read and which stay frozen)
_CHGNET_EMBEDDING = ("atom_embedding", "bond_basis_expansion", "bond_embedding", "bond_weights_ag", "bond_weights_bg",
                     "angle_basis_expansion", "angle_embedding")
_CHGNET_BLOCKS = ("atom_conv_layers", "bond_conv_layers", "angle_layers")


class CHGNetFineTuneConfig(FineTuneSettings):
    """``model: {name: chgnet_ft, ...}``: CHGNet 0.3.0 itself trained with our MLP and heads on its last
    atom-convolution features (fine-tuning: the backbone starts from the wheel's weights)."""

    name: Literal["chgnet_ft"] = "chgnet_ft"
    freeze: list[str] = Field(default_factory=list, description=(
        "backbone layer groups kept at the pretrained weights: embedding, conv_0 .. conv_3 (CHGNet's atom, bond "
        "and angle layers of block k); the rest of the backbone trains. `matgnn finetune` policies apply too"))
    backbone_lr_scale: float = Field(1.0, gt=0, description=(
        "learning rate of CHGNet's own layers (embedding, conv_k) as a multiple of train.lr; e.g. 0.1 moves the "
        "pretrained weights ten times more gently than our new MLP and heads"))
    anchor_weight: float = Field(0.0, ge=0, description=(
        "weight of an auxiliary L1 loss keeping CHGNet's own outputs — its energy (eV/atom) and magnetic moments "
        "(μB) of each training structure — near those of the pretrained CHGNet, so that fine-tuning does not "
        "forget what it knew (no labels needed); 0: off"))


class CHGNetFineTune(FineTunedBackbone, MatgnnModel):
    """CHGNet 0.3.0 (weights from the chgnet wheel, then trained) → its final per-atom features (after the
    last atom convolution and its readout norm), each beside its structure's mean → our per-atom MLP →
    pooling → heads. Layer groups: CHGNet's embeddings (``embedding``), block k = its k-th atom, bond and
    angle layers (``conv_k``), our MLP (``readout``), heads (``head``); CHGNet's own energy readout
    (``backbone_readout``) is not read and stays frozen."""

    config_class = CHGNetFineTuneConfig
    backbone_name = "chgnet"

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 freeze: list[str] | None = None, backbone_lr_scale: float = 1.0, anchor_weight: float = 0.0,
                 backbone_version: str = CHGNET_VERSION, cutoff: float = 8.0,
                 dropout: float = 0.0, pooling: str = "mean", head_hidden: int = 128) -> None:
        require_package(self.backbone_package, "model 'chgnet_ft'")
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        if backbone_version != CHGNET_VERSION:
            raise ValueError(f"this model fine-tuned CHGNet {backbone_version}; matgnn starts from CHGNet "
                             f"{CHGNET_VERSION}")
        CHGNet = import_backbone("chgnet.model", "CHGNet", "chgnet_ft", "chgnet")
        with contextlib.redirect_stdout(io.StringIO()):
            self.chgnet = CHGNet.load(model_name=CHGNET_VERSION, verbose=False)
        add_feature_mlp(self, FEATURE_DIM, hidden, layers, crystal_feature, dropout)
        self._fix_groups(freeze, self.chgnet.n_conv)
        # CHGNet's final per-atom features, kept on its readout norm by a hook (copies of the model keep theirs)
        self.chgnet.readout_norm.register_forward_hook(lambda m, _a, out: setattr(m, "matgnn_out", out))
        self.backbone_lr_scale = float(backbone_lr_scale)
        self._init_anchor(anchor_weight)

    def backbone_group(self, name: str) -> str:
        module, _, tail = name.partition(".")
        if module in _CHGNET_EMBEDDING:
            return "embedding"
        if module in _CHGNET_BLOCKS and tail.split(".", 1)[0].isdigit():
            return f"conv_{tail.split('.', 1)[0]}"
        return "backbone_readout"

    def _pretrained_outputs(self, graphs: list[Any], batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The pretrained CHGNet's energy per structure and moments per atom (computed once per structure)."""

        def load() -> Any:
            with contextlib.redirect_stdout(io.StringIO()):
                return type(self.chgnet).load(model_name=CHGNET_VERSION, verbose=False)

        def compute(todo: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            ref = self._pretrained_backbone(load).to(graphs[0].atomic_number.device)
            out = ref([graphs[i] for i in todo], task="em")
            return [(out["e"][j].reshape(()), out["m"][j].reshape(-1)) for j in range(len(todo))]

        refs = self._anchor_references(batch, compute)
        return torch.stack([e for e, _ in refs]), torch.cat([m for _, m in refs])

    def node_features(self, batch: Any) -> torch.Tensor:
        device = self.input[0].weight.device
        graphs = [g.to(device) for g in batch[keys.backbone_graphs("chgnet")]]
        anchored = self.training and self.anchor_weight > 0
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")  # inside CHGNet
            out = self.chgnet(graphs, task="em" if anchored else "e")
        if anchored:  # keep CHGNet's own energy and moments near the pretrained model's
            e_ref, m_ref = self._pretrained_outputs(graphs, batch)
            m = torch.cat([t.reshape(-1) for t in out["m"]])
            self._anchor_term = self.anchor_weight * ((out["e"].reshape(-1) - e_ref.to(device)).abs().mean()
                                                      + (m - m_ref.to(device)).abs().mean())
        return feature_mlp(self, self.chgnet.readout_norm.matgnn_out, batch)
