"""CGCNN (Xie & Grossman, PRL 120, 145301, 2018) and the seed research's CGConv network, on our
factorised gated convolution (:class:`matgnn.models.layers.GatedConv`, the function of PyG's CGConv)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from matgnn import keys
from matgnn.graphs.features import AtomFeatures, EdgeFeatures
from matgnn.models.base import MatgnnModel, ModelSettings
from matgnn.models.layers import GatedConv, RowBatchNorm, gated_conv_edges


class CGCNNConfig(ModelSettings):
    """``model: {name: cgcnn, ...}``: CGCNN as published."""

    name: Literal["cgcnn"] = "cgcnn"
    atom_features: str = Field("cgcnn", description="atom encoding: cgcnn (92 features) or onehot")
    n_rbf: int = Field(40, ge=2, description="Gaussian RBF functions of the edge length")


class CGConvNetConfig(ModelSettings):
    """``model: {name: cgconv_net, ...}``: the seed research's CGConv network."""

    name: Literal["cgconv_net"] = "cgconv_net"
    atom_features: str = Field("cgcnn", description="atom encoding: cgcnn (92 features) or onehot")
    n_rbf: int = Field(40, ge=2, description="Gaussian RBF functions of the edge length")

class CGCNN(MatgnnModel):
    """Atom features (CGCNN's 92) → linear embedding → ``layers`` gated graph
    convolutions ``x_i + Σ_j σ(z_ij W_f) ⊙ softplus(z_ij W_s)`` with batch norm →
    pooling → one softplus MLP per head. Edges carry a Gaussian RBF of the distance."""

    config_class = CGCNNConfig
    VERSION = 2  # 2: GatedConv weights (lin_centre/lin_neighbour/lin_edge) instead of PyG CGConv's

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 64, layers: int = 3,
                 atom_features: str = "cgcnn", cutoff: float = 8.0, n_rbf: int = 40,
                 dropout: float = 0.0, pooling: str = "mean", head_hidden: int = 128) -> None:
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling,
                         dropout=dropout)
        self.atom_features = AtomFeatures(atom_features)
        self.edge_features = EdgeFeatures(cutoff=cutoff, n_rbf=n_rbf)
        self.embed = nn.Linear(self.atom_features.dim, hidden)
        self.convs = nn.ModuleList(GatedConv(hidden, n_rbf, aggr="add", batch_norm=True) for _ in range(layers))
        self.act = nn.Softplus()
        self.dropout = nn.Dropout(dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        h = self.embed(self.atom_features(batch[keys.Z]))
        edges = gated_conv_edges(self.edge_features, batch, h)
        for conv in self.convs:
            h = self.dropout(self.act(conv(h, batch[keys.EDGE_INDEX], **edges)))
        return h


class CGConvNet(MatgnnModel):
    """The seed research's improved CGCNN: atom features → linear embedding → ``layers``
    CGConv layers, each followed by batch norm, ReLU and dropout → mean pool → heads."""

    config_class = CGConvNetConfig
    VERSION = 2

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 64, layers: int = 3,
                 atom_features: str = "cgcnn", cutoff: float = 8.0, n_rbf: int = 40,
                 dropout: float = 0.0, pooling: str = "mean", head_hidden: int = 128) -> None:
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling,
                         dropout=dropout)
        self.atom_features = AtomFeatures(atom_features)
        self.edge_features = EdgeFeatures(cutoff=cutoff, n_rbf=n_rbf)
        self.embed = nn.Linear(self.atom_features.dim, hidden)
        self.convs = nn.ModuleList(GatedConv(hidden, n_rbf, aggr="mean", batch_norm=False) for _ in range(layers))
        self.norms = nn.ModuleList(RowBatchNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        h = self.embed(self.atom_features(batch[keys.Z]))
        edges = gated_conv_edges(self.edge_features, batch, h)
        for conv, norm in zip(self.convs, self.norms):
            h = self.dropout(torch.relu(norm(conv(h, batch[keys.EDGE_INDEX], **edges))))
        return h
