"""Pretrained universal-potential backbones as models.

``model: {name: sevennet, ...}``: the same on SevenNet-0's 128 invariant features per atom (``sevenn``
wheel, MIT licence; also trained on MPtrj).

``model: {name: chgnet, ...}``: CHGNet 0.3.0's frozen features (64 per atom;
:mod:`matgnn.graphs.backbone_features`, computed once per structure and cached) feed our trainable
part: an MLP per atom (the atom's feature, with its structure's mean beside it), then pooling
and the heads — graph heads (band gaps, exfoliation energies) and node heads (magnetic moments)
alike. Everything downstream is an ordinary matgnn model: predict (with σ in ensembles),
load_model, transfer and freeze policies over its own layers, model cards.

CHGNet builds its own graphs (6 Å atom graph, 3 Å bond graph); the run's graph settings do not
change its features. CHGNet was trained on MPtrj, which holds Materials Project structures: a
benchmark on MP ids with this backbone says so.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.graphs.backbone_features import (
    CHGNET_VERSION,
    FEATURE_DIM,
    SEVENNET_DIM,
    require_package,
    sevennet_version,
)
from matgnn.models.base import MatgnnModel, ModelSettings


def add_feature_mlp(model: nn.Module, dim: int, hidden: int, layers: int, crystal_feature: bool,
                    dropout: float) -> None:
    """Our trainable part on a backbone's per-atom features: ``input`` (Linear, SiLU, LayerNorm) and
    ``mlp`` (``layers - 1`` residual blocks); with ``crystal_feature`` each atom also gets its structure's mean."""
    model.crystal_feature = crystal_feature
    model.input = nn.Sequential(nn.Linear(dim * (2 if crystal_feature else 1), hidden), nn.SiLU(), nn.LayerNorm(hidden))
    model.mlp = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.LayerNorm(hidden),
                                            nn.Dropout(dropout)) for _ in range(layers - 1))


def feature_mlp(model: nn.Module, x: torch.Tensor, batch: Any) -> torch.Tensor:
    """Per-atom features → ``model``'s MLP (see :func:`add_feature_mlp`)."""
    if model.crystal_feature:
        mean = scatter(x, batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce="mean")
        x = torch.cat([x, mean[batch[keys.BATCH]]], dim=1)
    h = model.input(x)
    for layer in model.mlp:
        h = h + layer(h)
    return h


class CHGNetConfig(ModelSettings):
    """``model: {name: chgnet, ...}``: our MLP of ``layers`` layers (width ``hidden``) on CHGNet
    0.3.0's frozen per-atom features (with its per-structure feature beside each atom's)."""

    name: Literal["chgnet"] = "chgnet"
    hidden: int = Field(128, ge=1, description="width of the MLP on the backbone features")
    layers: int = Field(2, ge=1, description="layers of the MLP on the backbone features")
    crystal_feature: bool = Field(True, description=(
        "give every atom the mean of its structure's backbone features too (intensive: a supercell "
        "gets the same; CHGNet's own crystal feature is a sum over atoms and is not used)"))


class CHGNetBackbone(MatgnnModel):
    """Frozen CHGNet features (each atom's, beside its structure's mean) → per-atom MLP (Linear,
    SiLU, LayerNorm; residual) → pooling → heads."""

    config_class = CHGNetConfig
    batch_fields = ("chgnet_features",)
    block_modules = ("mlp",)
    embedding_modules = ("input",)
    #: the backbone's title, feature width and the version of it matgnn computes now
    backbone_title = "CHGNet"
    backbone_name = "chgnet"  # its batch field: keys.backbone_atom(backbone_name)
    feature_dim = FEATURE_DIM
    #: the package computing the features (the ``[foundation]`` extra), checked before anything is built
    backbone_package = "chgnet"

    @staticmethod
    def current_version() -> str:
        return CHGNET_VERSION

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 backbone_version: str = CHGNET_VERSION, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        require_package(self.backbone_package, f"model {self.config_class.model_fields['name'].default!r}")
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        if backbone_version != self.current_version():
            raise ValueError(f"this model was trained on {self.backbone_title} {backbone_version} features; matgnn "
                             f"computes {self.backbone_title} {self.current_version()}'s")
        add_feature_mlp(self, self.feature_dim, hidden, layers, crystal_feature, dropout)
        if any(h["baseline"] == "backbone" for h in self.head_specs):
            self._add_magmom_reference()

    def node_features(self, batch: Any) -> torch.Tensor:
        return feature_mlp(self, batch[keys.backbone_atom(self.backbone_name)], batch)

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
                from matgnn.graphs.backbone_features import chgnet_features

                head = chgnet_features().model.site_wise
                with torch.no_grad():
                    self.backbone_magmom_weight.copy_(head.weight.detach().reshape(-1))
                    self.backbone_magmom_bias.copy_(head.bias.detach().reshape(()))
            self._magmom_reference_ready = True
        f = batch[keys.backbone_atom(self.backbone_name)]
        return torch.abs(f @ self.backbone_magmom_weight + self.backbone_magmom_bias)


class SevenNetConfig(CHGNetConfig):
    """``model: {name: sevennet, ...}``: our MLP of ``layers`` layers (width ``hidden``) on SevenNet-0's
    frozen 128 invariant features per atom (with their structure's mean beside each atom's)."""

    name: Literal["sevennet"] = "sevennet"  # type: ignore[assignment]
    crystal_feature: bool = Field(True, description="give every atom the mean of its structure's backbone features too")


class SevenNetBackbone(CHGNetBackbone):
    """Frozen SevenNet-0 features (each atom's, beside its structure's mean) → per-atom MLP → pooling → heads."""

    config_class = SevenNetConfig
    batch_fields = ("sevennet_features",)
    backbone_references = False  # SevenNet-0 predicts no magnetic moments
    backbone_title = "SevenNet"
    backbone_name = "sevennet"
    feature_dim = SEVENNET_DIM
    backbone_package = "sevenn"

    @staticmethod
    def current_version() -> str:
        return sevennet_version()

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 backbone_version: str | None = None, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        require_package(self.backbone_package, "model 'sevennet'")
        version = backbone_version or sevennet_version()
        super().__init__(heads, hidden, layers, crystal_feature, version, cutoff, dropout, pooling, head_hidden)
        self.record_resolved(backbone_version=version)  # saved: a reload checks the features are the same


#: CHGNet's own modules by layer group (a module not listed is ``backbone_readout``: its energy MLP,
#: magmom head, pooling and norm, which our heads do not read and which stay frozen)
_CHGNET_EMBEDDING = ("atom_embedding", "bond_basis_expansion", "bond_embedding", "bond_weights_ag", "bond_weights_bg",
                     "angle_basis_expansion", "angle_embedding")
_CHGNET_BLOCKS = ("atom_conv_layers", "bond_conv_layers", "angle_layers")


class _FineTunedGroups:
    """Layer groups of a backbone trained in place (``chgnet_ft``, ``sevennet_ft``): the backbone's own
    ``embedding`` and ``conv_k`` groups (named by :meth:`backbone_group`), its unread ``backbone_readout``
    (always frozen), our ``readout`` MLP and the ``head``s; the groups a config freezes stay at the wheel's
    weights, and the backbone's groups learn at ``backbone_lr_scale`` × ``train.lr``."""

    #: the attribute holding the backbone network
    backbone_attr = ""
    backbone_lr_scale = 1.0

    def _fix_groups(self, freeze: list[str] | None, n_blocks: int) -> None:
        self._fixed = {"backbone_readout", *(freeze or ())}
        unknown = self._fixed - {"backbone_readout", "embedding", *(f"conv_{k}" for k in range(n_blocks))}
        if unknown:
            raise ValueError(f"freeze: unknown backbone layer groups {sorted(unknown)} (embedding, conv_0 .. "
                             f"conv_{n_blocks - 1})")
        for name, p in self.named_parameters():  # type: ignore[attr-defined]
            p.requires_grad_(self.parameter_group(name) not in self._fixed)

    def fixed_groups(self) -> set[str]:
        return set(self._fixed)

    def parameter_group(self, name: str) -> str:
        first, _, rest = name.partition(".")
        if first != self.backbone_attr:
            return "head" if first == "heads" else "readout" if first in ("input", "mlp") else "other"
        return self.backbone_group(rest)

    def backbone_group(self, name: str) -> str:
        """The group of a backbone parameter (``name`` inside the backbone)."""
        raise NotImplementedError

    def lr_scale(self, group: str) -> float:
        return self.backbone_lr_scale if group == "embedding" or group.startswith("conv_") else 1.0

    def _init_anchor(self, weight: float) -> None:
        """The anchor loss's state: its weight, the term of the last training forward, the pretrained
        backbone's outputs per structure key and the pretrained backbone itself (neither saved)."""
        self.anchor_weight = float(weight)
        self._anchor_term: torch.Tensor | None = None
        self._anchors: dict[str, tuple[torch.Tensor, ...]] = {}
        self._pretrained: list[Any] = []  # a list: not a submodule, so not saved or trained

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The anchor term of the last training forward (once), for the trainer to add to the loss."""
        term, self._anchor_term = self._anchor_term, None
        return term

    def _pretrained_backbone(self, load: Any) -> Any:
        """The frozen pretrained backbone, made by ``load()`` on first use."""
        if not self._pretrained:
            self._pretrained.append(load().eval().requires_grad_(False))
        return self._pretrained[0]

    def _anchor_references(self, batch: Any, compute: Any) -> list[tuple[torch.Tensor, ...]]:
        """The pretrained backbone's outputs for each structure of ``batch``, each structure computed once:
        ``compute(positions)`` gives them for the batch positions not seen before."""
        from matgnn.graphs.backbone_features import FrozenBackbone, batch_structures

        keys_ = [FrozenBackbone.key(*s[1:]) for s in batch_structures(batch)]
        todo = [i for i, k in enumerate(keys_) if k not in self._anchors]
        if todo:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
                for i, ref in zip(todo, compute(todo)):
                    self._anchors[keys_[i]] = tuple(t.detach() for t in ref)
        return [self._anchors[k] for k in keys_]


class _FineTuneSettings(ModelSettings):
    """What both fine-tuned backbones share: our MLP on the backbone's per-atom features."""

    hidden: int = Field(128, ge=1, description="width of the MLP on the backbone features")
    layers: int = Field(2, ge=1, description="layers of the MLP on the backbone features")
    crystal_feature: bool = Field(True, description="give every atom the mean of its structure's features too")


class CHGNetFineTuneConfig(_FineTuneSettings):
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


class CHGNetFineTune(_FineTunedGroups, MatgnnModel):
    """CHGNet 0.3.0 (weights from the chgnet wheel, then trained) → its final per-atom features (after the
    last atom convolution and its readout norm), each beside its structure's mean → our per-atom MLP →
    pooling → heads. Layer groups: CHGNet's embeddings (``embedding``), block k = its k-th atom, bond and
    angle layers (``conv_k``), our MLP (``readout``), heads (``head``); CHGNet's own energy readout
    (``backbone_readout``) is not read and stays frozen."""

    config_class = CHGNetFineTuneConfig
    batch_fields = ("chgnet_graphs",)
    backbone_attr = "chgnet"
    #: the package of the backbone's own network (the ``[foundation]`` extra), checked before anything is built
    backbone_package = "chgnet"

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 freeze: list[str] | None = None, backbone_lr_scale: float = 1.0, anchor_weight: float = 0.0,
                 backbone_version: str = CHGNET_VERSION, cutoff: float = 8.0,
                 dropout: float = 0.0, pooling: str = "mean", head_hidden: int = 128) -> None:
        require_package(self.backbone_package, "model 'chgnet_ft'")
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        if backbone_version != CHGNET_VERSION:
            raise ValueError(f"this model fine-tuned CHGNet {backbone_version}; matgnn starts from CHGNet "
                             f"{CHGNET_VERSION}")
        import contextlib
        import io

        from matgnn.graphs.backbone_features import import_backbone

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
            import contextlib
            import io

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
        graphs = [g.to(device) for g in batch[keys.CHGNET_GRAPHS]]
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


class SevenNetFineTuneConfig(_FineTuneSettings):
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


class SevenNetFineTune(_FineTunedGroups, MatgnnModel):
    """SevenNet-0 (weights from the sevenn wheel, then trained) → its 128 invariant features per atom (what its
    energy readout reads) → each beside its structure's mean → our per-atom MLP → pooling → heads. Layer
    groups: SevenNet's embeddings (``embedding``), interaction block k (``conv_k``), our MLP (``readout``),
    heads (``head``); SevenNet's energy readout and force output (``backbone_readout``) are not run."""

    config_class = SevenNetFineTuneConfig
    batch_fields = ("sevennet_graphs",)
    backbone_attr = "sevennet"
    #: the package of the backbone's own network (the ``[foundation]`` extra), checked before anything is built
    backbone_package = "sevenn"

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
        from matgnn.graphs.backbone_features import sevennet_network

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
        graphs = batch[keys.SEVENNET_GRAPHS]
        data = self._run(self.sevennet, graphs, self._feature_modules)
        features = data["x"]  # the readout below replaces data["x"]; these stay what our MLP reads
        if self.training and self.anchor_weight > 0:  # keep SevenNet's own energy near the pretrained model's
            from matgnn.graphs.backbone_features import sevennet_network

            def compute(todo: list[int]) -> list[tuple[torch.Tensor]]:
                ref = self._pretrained_backbone(sevennet_network).to(features.device)
                pre = self._run(ref, [graphs[i] for i in todo], self._feature_modules)
                return [(e,) for e in self._energy_per_atom(ref, pre)]

            e_ref = torch.stack([e for (e,) in self._anchor_references(batch, compute)])
            e = self._energy_per_atom(self.sevennet, data)
            self._anchor_term = self.anchor_weight * (e - e_ref.to(e.device)).abs().mean()
        return feature_mlp(self, features, batch)
