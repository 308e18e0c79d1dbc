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

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.graphs.backbone_features import CHGNET_VERSION, FEATURE_DIM, SEVENNET_DIM, sevennet_version
from matgnn.models.base import MatgnnModel, ModelSettings


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
    feature_dim = FEATURE_DIM

    @staticmethod
    def current_version() -> str:
        return CHGNET_VERSION

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 backbone_version: str = CHGNET_VERSION, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        if backbone_version != self.current_version():
            raise ValueError(f"this model was trained on {self.backbone_title} {backbone_version} features; matgnn "
                             f"computes {self.backbone_title} {self.current_version()}'s")
        self.crystal_feature = crystal_feature
        width = self.feature_dim * (2 if crystal_feature else 1)
        self.input = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.LayerNorm(hidden))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.LayerNorm(hidden),
                                               nn.Dropout(dropout)) for _ in range(layers - 1))

    def node_features(self, batch: Any) -> torch.Tensor:
        x = batch[keys.BACKBONE_ATOM]
        if self.crystal_feature:
            mean = scatter(x, batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce="mean")
            x = torch.cat([x, mean[batch[keys.BATCH]]], dim=1)
        h = self.input(x)
        for layer in self.mlp:
            h = h + layer(h)
        return h


class SevenNetConfig(CHGNetConfig):
    """``model: {name: sevennet, ...}``: our MLP of ``layers`` layers (width ``hidden``) on SevenNet-0's
    frozen 128 invariant features per atom (with their structure's mean beside each atom's)."""

    name: Literal["sevennet"] = "sevennet"  # type: ignore[assignment]
    crystal_feature: bool = Field(True, description="give every atom the mean of its structure's backbone features too")


class SevenNetBackbone(CHGNetBackbone):
    """Frozen SevenNet-0 features (each atom's, beside its structure's mean) → per-atom MLP → pooling → heads."""

    config_class = SevenNetConfig
    batch_fields = ("sevennet_features",)
    backbone_title = "SevenNet"
    feature_dim = SEVENNET_DIM

    @staticmethod
    def current_version() -> str:
        return sevennet_version()

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 128, layers: int = 2, crystal_feature: bool = True,
                 backbone_version: str | None = None, cutoff: float = 8.0, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        version = backbone_version or sevennet_version()
        super().__init__(heads, hidden, layers, crystal_feature, version, cutoff, dropout, pooling, head_hidden)
        self.init_args["backbone_version"] = version  # saved: a reload checks the features are the same
