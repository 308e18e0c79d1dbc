"""PNA (Corso et al., 2020), HydraGNN's default operator: several aggregators and
degree scalers; edges carry a Gaussian RBF of the distance."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch_geometric.nn import BatchNorm, PNAConv

from matgnn import keys
from matgnn.graphs.features import AtomFeatures, EdgeFeatures
from matgnn.models.base import MatgnnModel, ModelSettings


class PNAConfig(ModelSettings):
    """``model: {name: pna, ...}``: principal neighbourhood aggregation (HydraGNN's default)."""

    name: Literal["pna"] = "pna"
    atom_features: str = Field("cgcnn", description="atom encoding: cgcnn (92 features) or onehot")
    n_rbf: int = Field(40, ge=2, description="Gaussian RBF functions of the edge length")


class PNA(MatgnnModel):
    config_class = PNAConfig

    @classmethod
    def training_statistics(cls, records: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """PNA's degree scalers need the histogram of atoms' in-degrees over the training graphs."""
        hist = np.zeros(1, np.int64)
        for rec in records:
            counts = np.bincount(np.bincount(rec["dst"]))
            if len(counts) > len(hist):
                hist = np.pad(hist, (0, len(counts) - len(hist)))
            hist[: len(counts)] += counts
        return {"deg": hist.tolist()}

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
        self.norms = nn.ModuleList(BatchNorm(hidden, allow_single_element=True) for _ in range(layers))
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        h = self.embed(self.atom_features(batch[keys.Z]))
        e = self.edge_features(batch)
        for conv, norm in zip(self.convs, self.norms):
            h = h + self.dropout(self.act(norm(conv(h, batch[keys.EDGE_INDEX], e))))
        return h
