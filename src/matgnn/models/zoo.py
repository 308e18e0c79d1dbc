"""The operator zoo: embedding → L message-passing layers of one PyG operator → heads.

Edge information reaches each operator in the form it accepts: a Gaussian RBF of the
distance as edge features (``edge_dim``), the cosine cutoff envelope as a scalar edge
weight (graphconv, gcnconv), or the scaled distance as a 1-D pseudo-coordinate
(gmmconv, splineconv). Only rotation-invariant edge information is used.

No operator adds self-loops: PyG first *removes* existing self-loops, and in a small
periodic cell an edge from an atom to its own periodic image is a real edge i→i. Dropping
it would make a cell and its supercell different graphs. The residual connection carries
each atom's own state instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn
from torch_geometric import nn as gnn

from matgnn import keys
from matgnn.graphs.features import AtomFeatures, CosineCutoff, EdgeFeatures
from matgnn.graphs.geometry import edge_lengths
from matgnn.models.base import MatgnnModel, ModelSettings
from matgnn.models.layers import RowBatchNorm
from matgnn.models.schnet import InteractionBlock


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, o))


class _SchNetConv(nn.Module):
    """SchNet's continuous-filter interaction as a zoo operator."""

    def __init__(self, h: int, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.block = InteractionBlock(h, n_rbf, h, cutoff)

    def forward(self, x, edge_index, dist, rbf):  # noqa: ANN001
        return self.block(x, edge_index, dist, rbf)


def _spline(h: int) -> nn.Module:
    try:
        import torch_spline_conv  # noqa: F401
    except ImportError:
        raise ImportError("operator 'splineconv' needs the compiled extension torch-spline-conv, which is not "
                          "installed (no wheel exists for every torch version); pick another operator") from None
    return gnn.SplineConv(h, h, dim=1, kernel_size=5)


# name -> (constructor(h, n_rbf, cutoff), how edges are fed: "attr" | "weight" | "pseudo" | "none" | "schnet")
OPERATORS: dict[str, tuple[Callable[[int, int, float], nn.Module], str]] = {
    "cgconv": (lambda h, e, c: gnn.CGConv(h, dim=e, batch_norm=False), "attr"),
    "schnetconv": (lambda h, e, c: _SchNetConv(h, e, c), "schnet"),
    "graphconv": (lambda h, e, c: gnn.GraphConv(h, h), "weight"),
    "sageconv": (lambda h, e, c: gnn.SAGEConv(h, h), "none"),
    "gatv2conv": (lambda h, e, c: gnn.GATv2Conv(h, h, heads=1, edge_dim=e, add_self_loops=False), "attr"),
    "gcnconv": (lambda h, e, c: gnn.GCNConv(h, h, add_self_loops=False, normalize=True), "weight"),
    "transformerconv": (lambda h, e, c: gnn.TransformerConv(h, h, heads=1, edge_dim=e), "attr"),
    "gineconv": (lambda h, e, c: gnn.GINEConv(_mlp(h, h, h), edge_dim=e), "attr"),
    "nnconv": (lambda h, e, c: gnn.NNConv(h, h, _mlp(e, 32, h * h), aggr="mean"), "attr"),
    "genconv": (lambda h, e, c: gnn.GENConv(h, h, edge_dim=e), "attr"),
    "gmmconv": (lambda h, e, c: gnn.GMMConv(h, h, dim=1, kernel_size=4), "pseudo"),
    "resgatedgraphconv": (lambda h, e, c: gnn.ResGatedGraphConv(h, h, edge_dim=e), "attr"),
    "generalconv": (lambda h, e, c: gnn.GeneralConv(h, h, in_edge_channels=e), "attr"),
    "pdnconv": (lambda h, e, c: gnn.PDNConv(h, h, edge_dim=e, hidden_channels=h, add_self_loops=False), "attr"),
    "splineconv": (lambda h, e, c: _spline(h), "pseudo"),
}


class ZooConfig(ModelSettings):
    """``model: {name: zoo, operator: gatv2conv, ...}`` or ``model: {name: gatv2conv, ...}``: one of
    the PyG operators in :data:`OPERATORS` in a common residual trunk."""

    name: str = "zoo"
    operator: str | None = Field(None, description="the PyG operator (with name: zoo)")
    atom_features: str = Field("cgcnn", description="atom encoding: cgcnn (92 features) or onehot")
    n_rbf: int = Field(40, ge=2, description="Gaussian RBF functions of the edge length")

    @model_validator(mode="after")
    def _operator(self) -> ZooConfig:
        op = self.operator or (self.name if self.name != "zoo" else None)
        if op is None:
            raise ValueError("model zoo needs an operator (model.operator: " + ", ".join(OPERATORS) + ")")
        if op not in OPERATORS:
            raise ValueError(f"unknown operator {op!r}; available: {', '.join(OPERATORS)}")
        if self.name != "zoo" and self.operator not in (None, self.name):
            raise ValueError(f"model.name {self.name!r} is an operator; model.operator {self.operator!r} contradicts it")
        return self

    def constructor_args(self) -> dict[str, Any]:
        return {**self.model_dump(exclude={"name", "operator"}), "operator": self.operator or self.name}


class ZooModel(MatgnnModel):
    """Embedding of fixed atom features → ``layers`` × (operator, batch norm, SiLU,
    residual) → pooling → heads."""

    config_class = ZooConfig

    def __init__(self, heads: list[dict[str, Any]], operator: str = "cgconv", hidden: int = 64, layers: int = 3,
                 atom_features: str = "cgcnn", cutoff: float = 8.0, n_rbf: int = 40, dropout: float = 0.0,
                 pooling: str = "mean", head_hidden: int = 128) -> None:
        if operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r}; available: {', '.join(OPERATORS)}")
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        make, self.edge_mode = OPERATORS[operator]
        self.operator = operator
        self.cutoff = cutoff
        self.atom_features = AtomFeatures(atom_features)
        self.edge_features = EdgeFeatures(cutoff=cutoff, n_rbf=n_rbf)
        self.envelope = CosineCutoff(cutoff)
        self.embed = nn.Linear(self.atom_features.dim, hidden)
        self.convs = nn.ModuleList(make(hidden, n_rbf, cutoff) for _ in range(layers))
        self.norms = nn.ModuleList(RowBatchNorm(hidden) for _ in range(layers))
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        h = self.embed(self.atom_features(batch[keys.Z]))
        ei = batch[keys.EDGE_INDEX]
        d = edge_lengths(batch)
        mode = self.edge_mode
        rbf = self.edge_features(batch) if mode in ("attr", "schnet") else None
        for conv, norm in zip(self.convs, self.norms):
            if mode == "attr":
                m = conv(h, ei, rbf)
            elif mode == "weight":
                m = conv(h, ei, self.envelope(d))
            elif mode == "pseudo":
                m = conv(h, ei, (d / self.cutoff).clamp(0, 1).unsqueeze(-1))
            elif mode == "schnet":
                m = conv(h, ei, d, rbf)
            else:
                m = conv(h, ei)
            h = h + self.dropout(self.act(norm(m)))
        return h
