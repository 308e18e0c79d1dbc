"""PNA (Corso et al., 2020), HydraGNN's default operator: several aggregators and
degree scalers; edges carry a Gaussian RBF of the distance."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.nn import BatchNorm, PNAConv

from matgnn import keys
from matgnn.graphs.features import AtomFeatures, EdgeFeatures
from matgnn.models.base import MatgnnModel


class PNA(MatgnnModel):
    #: The run computes the in-degree histogram of the training graphs for this model.
    needs_degree_histogram = True

    def __init__(self, heads: list[dict[str, Any]], deg: list[int], hidden: int = 64, layers: int = 3,
                 atom_features: str = "cgcnn", cutoff: float = 8.0, n_rbf: int = 40, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        self.atom_features = AtomFeatures(atom_features)
        self.edge_features = EdgeFeatures(cutoff=cutoff, n_rbf=n_rbf)
        self.embed = nn.Linear(self.atom_features.dim, hidden)
        deg_t = torch.tensor(deg, dtype=torch.long)
        self.convs = nn.ModuleList(
            PNAConv(hidden, hidden, aggregators=["mean", "min", "max", "std"],
                    scalers=["identity", "amplification", "attenuation"], deg=deg_t, edge_dim=n_rbf,
                    towers=1, pre_layers=1, post_layers=1, divide_input=False) for _ in range(layers))
        self.norms = nn.ModuleList(BatchNorm(hidden) for _ in range(layers))
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        h = self.embed(self.atom_features(batch[keys.Z]))
        e = self.edge_features(batch)
        for conv, norm in zip(self.convs, self.norms):
            h = h + self.dropout(self.act(norm(conv(h, batch[keys.EDGE_INDEX], e))))
        return h
