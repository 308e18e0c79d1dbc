"""PNA (Corso et al., 2020), HydraGNN's default operator: several aggregators and
degree scalers; edges carry a Gaussian RBF of the distance."""

from __future__ import annotations

import math
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

#: the aggregators and degree scalers of matgnn's PNA (HydraGNN's), in PyG's order
AGGREGATORS, SCALERS = ("mean", "min", "max", "std"), ("identity", "amplification", "attenuation")


class _Extremes(torch.autograd.Function):
    """The min and the max of the messages over each atom's incoming edges (0 where it has none), as PyG's
    ``scatter(reduce="min"/"max")``. The backward splits each output's gradient evenly among the messages equal to
    it, as PyTorch's ``scatter_reduce`` backward does, in four passes over the messages instead of that backward's
    ``index_put`` path (a third of a PNA training step on CPU)."""

    @staticmethod
    def forward(ctx, msg: torch.Tensor, dst: torch.Tensor, n: int):  # noqa: ANN205
        idx = dst.unsqueeze(1).expand_as(msg)
        lo = msg.new_zeros((n, msg.shape[1])).scatter_reduce_(0, idx, msg, "amin", include_self=False)
        hi = msg.new_zeros((n, msg.shape[1])).scatter_reduce_(0, idx, msg, "amax", include_self=False)
        ctx.save_for_backward(msg, dst, lo, hi)
        return lo, hi

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):  # noqa: ANN205
        msg, dst, lo, hi = ctx.saved_tensors
        grad = None
        for out, g in zip((lo, hi), grads):
            if g is None:
                continue
            hit = (msg == out.index_select(0, dst)).to(msg.dtype)  # the messages that are the extreme
            ties = torch.zeros_like(out).index_add_(0, dst, hit).clamp_(min=1)
            part = hit * (g / ties).index_select(0, dst)
            grad = part if grad is None else grad + part
        return grad, None, None


class _PNAConv(PNAConv):
    """PyG's ``PNAConv`` (one tower, one pre-layer, an edge encoder, matgnn's aggregators and scalers) computed in
    training in the order that costs least on a CPU.

    - The pre-layer ``W [x_i ‖ x_j ‖ E r + c] + b`` is split by the columns of ``W`` into two atom-sized products,
      ``W_i x`` and ``W_j x`` (gathered onto the edges), and one edge-sized product ``(W_e E) r`` with the edge
      encoder folded into it, instead of the encoder and the pre-layer both run over every edge on a
      concatenation three times the width.
    - The aggregation sums the messages and their squares in one pass (the mean and the std share them) and
      takes the min and the max with :class:`_Extremes`.

    The parameters are PyG's own (a state dict loads either way) and the function, with its gradients, is the same
    up to rounding. In evaluation mode it is PyG's own path, so a saved model's answers do not move by a rounding
    (``tests/test_model_contract.py`` holds them bit for bit). It takes only what may vary: the training path is
    written for exactly these aggregators, scalers and one tower."""

    def __init__(self, channels: int, deg: torch.Tensor, edge_dim: int) -> None:
        super().__init__(channels, channels, aggregators=list(AGGREGATORS), scalers=list(SCALERS), deg=deg,
                         edge_dim=edge_dim, towers=1, pre_layers=1, post_layers=1, divide_input=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x, edge_index, edge_attr)
        f, n = self.F_in, x.shape[0]
        pre = self.pre_nns[0][0]
        w_i, w_j, w_e = pre.weight.split(f, dim=1)
        src, dst = edge_index[0], edge_index[1]
        edge_w = w_e @ self.edge_encoder.weight  # (F, edge_dim): the edge encoder and W_e as one product
        bias = pre.bias + w_e @ self.edge_encoder.bias
        # index_select, not x[dst]: its backward is an index_add, not indexing's slow index_put on CPU
        msg = (torch.addmm(bias, edge_attr, edge_w.t()) + (x @ w_i.t()).index_select(0, dst)
               + (x @ w_j.t()).index_select(0, src))
        # PyG's aggregators: mean, min, max, std = sqrt(mean(m²) - mean(m)²), 0 where that is below 1e-5
        deg = torch.bincount(dst, minlength=n).to(x.dtype)
        sums = x.new_zeros((n, 2 * f)).index_add_(0, dst, torch.cat([msg, msg * msg], dim=1))
        mean, mean2 = (sums / deg.clamp(min=1).unsqueeze(1)).split(f, dim=1)
        std = (mean2 - mean * mean).clamp(min=1e-5).sqrt()
        std = std.masked_fill(std <= math.sqrt(1e-5), 0.0)
        lo, hi = _Extremes.apply(msg, dst, n)
        out = torch.cat([mean, lo, hi, std], dim=1)
        # PyG's degree scalers: identity, amplification log(d + 1) / δ, attenuation δ / log(max(d, 1) + 1)
        avg = self.aggr_module.avg_deg_log
        amp = ((deg + 1).log() / avg).unsqueeze(1)
        att = (avg / (deg.clamp(min=1) + 1).log()).unsqueeze(1)
        out = torch.cat([x, out, out * amp, out * att], dim=1)
        return self.lin(self.post_nns[0](out))


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
            _PNAConv(hidden, deg_t, n_rbf) for _ in range(layers))
        self.norms = nn.ModuleList(BatchNorm(hidden, allow_single_element=True) for _ in range(layers))
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def node_features(self, batch: Any) -> torch.Tensor:
        h = self.embed(self.atom_features(batch[keys.Z]))
        e = self.edge_features(batch)
        for conv, norm in zip(self.convs, self.norms):
            h = h + self.dropout(self.act(norm(conv(h, batch[keys.EDGE_INDEX], e))))
        return h
