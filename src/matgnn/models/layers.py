"""Message-passing layers of our own, written for speed on CPU and GPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from matgnn import keys
from matgnn.models import kernels


class RowBatchNorm(nn.BatchNorm1d):
    """Batch norm over rows that tolerates a batch of one row or none (a one-atom structure alone in
    the last batch, a batch without any bond pair): such a batch is normalised with the running
    statistics instead of failing, and does not update them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.size(0) <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class _BatchNormSiLU(torch.autograd.Function):
    """``SiLU(batch_norm(x))`` in training mode, keeping only ``x`` and the batch statistics for the backward
    pass (the normalised tensor is recomputed there, one fused multiply-add) instead of ``x`` and the
    normalised tensor: one tensor of ``x``'s size less held per layer. The running statistics are updated
    in place as by ``F.batch_norm``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,  # noqa: ANN001
                running_var: torch.Tensor, momentum: float, eps: float) -> torch.Tensor:
        out, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, running_mean, running_var, True,
                                                             momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        return F.silu(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        x, weight, bias, mean, invstd = ctx.saved_tensors
        scale = invstd * weight
        out = torch.addcmul(bias - mean * scale, x, scale)  # the forward's batch_norm(x), recomputed
        g_out = torch.ops.aten.silu_backward(grad, out)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(g_out, x, weight, None, None, mean, invstd, True,
                                                                ctx.eps, list(ctx.needs_input_grad[:3]))
        return gx, gw, gb, None, None, None, None


class RowBatchNormSiLU(RowBatchNorm):
    """``SiLU(RowBatchNorm(x))`` (the same parameters and statistics as :class:`RowBatchNorm`), holding one
    tensor less for the backward pass when it trains (see :class:`_BatchNormSiLU`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or x.size(0) <= 1 or not self.track_running_stats or self.weight is None
                or x.dtype != self.weight.dtype):
            return F.silu(super().forward(x))
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return _BatchNormSiLU.apply(x, self.weight, self.bias, self.running_mean, self.running_var, momentum, self.eps)


class LayerNormSiLU(nn.LayerNorm):
    """``SiLU(LayerNorm(x))`` with :class:`nn.LayerNorm`'s parameters (the counterpart of :class:`RowBatchNormSiLU`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(super().forward(x))


class _GatedMessage(torch.autograd.Function):
    """``σ(f) ⊙ softplus(c)`` of ``gate = [f | c]`` with a hand-written backward: one
    gradient tensor for ``gate`` (no split/cat) and ``softplus' = σ`` instead of
    PyTorch's CPU ``softplus_backward``, which is several times slower than a sigmoid."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        filt, core = gate.chunk(2, dim=1)
        sig = torch.sigmoid(filt)
        soft = F.softplus(core)
        ctx.save_for_backward(core, sig, soft)
        return sig * soft

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        core, sig, soft = ctx.saved_tensors
        c = sig.shape[1]
        out = grad.new_empty(grad.shape[0], 2 * c)
        gs = torch.mul(grad, sig)
        torch.mul(gs, torch.sigmoid(core), out=out[:, c:])   # ∂/∂c = g σ(f) σ(c)
        gs.mul_(soft).mul_(1.0 - sig)                           # ∂/∂f = g softplus(c) σ(f)(1 − σ(f))
        out[:, :c] = gs
        return out


def gated_message(gate: torch.Tensor) -> torch.Tensor:
    """``σ(f) ⊙ softplus(c)`` for ``gate = [f | c]`` (each half ``channels`` wide)."""
    return _GatedMessage.apply(gate)


class GatedConv(nn.Module):
    """CGCNN's gated convolution, ``x_i' = x_i + BN(Σ_j σ(z_ij W_f + b_f) ⊙ softplus(z_ij W_s + b_s))``
    with ``z_ij = [x_i, x_j, e_ij]`` — the same function as PyG's ``CGConv(batch_norm=True)``.

    It is computed factorised: ``z_ij W = x_i W_i + x_j W_j + e_ij W_e``, so the atom parts are
    one matrix product per *atom* (gathered onto edges afterwards) and only the small
    edge-feature part is a product per *edge*. For CGCNN's sizes (64 atom features, 40
    distance features, ~12 neighbours) that is ~4× fewer multiply-adds per layer than
    forming ``z_ij`` on every edge. On CPU, with edges sorted by centre atom (as matgnn's graphs are), the
    gated sum runs in one fused pass (:func:`matgnn.models.kernels.gated_sum`); elsewhere as PyTorch ops.
    ``load_pyg_cgconv`` copies a PyG ``CGConv``'s weights.

    Args:
        channels: atom feature size. edge_dim: edge feature size.
        aggr: ``"add"`` (CGCNN) or ``"mean"`` over each atom's incoming edges.
        batch_norm: batch norm on the aggregated messages (CGCNN) or none.
        residual: add ``x_i`` back (CGCNN) or return the aggregated messages alone.
    """

    def __init__(self, channels: int, edge_dim: int, aggr: str = "add", batch_norm: bool = True,
                 residual: bool = True) -> None:
        super().__init__()
        if aggr not in ("add", "mean"):
            raise ValueError(f"aggr must be 'add' or 'mean', not {aggr!r}")
        self.channels, self.aggr, self.residual = channels, aggr, residual
        self.lin_centre = nn.Linear(channels, 2 * channels)            # rows: [filter | core]
        self.lin_neighbour = nn.Linear(channels, 2 * channels, bias=False)
        self.lin_edge = nn.Linear(edge_dim, 2 * channels, bias=False)
        self.bn = RowBatchNorm(channels) if batch_norm else None

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                ptr: torch.Tensor | bool | None = None) -> torch.Tensor:
        """``ptr``: the edges' centre-atom offsets (:func:`matgnn.models.kernels.centre_ptr`) when the caller
        found them once for several layers (:func:`gated_conv_edges`); ``False``: the caller looked and the
        fused kernel does not apply (unsorted edges), so no layer looks again; ``None``: look here."""
        src, dst = edge_index[0], edge_index[1]  # message j → i: src = neighbour j, dst = centre i
        centre, neighbour = self.lin_centre(x), self.lin_neighbour(x)  # one product per atom
        out = None
        if ptr is None:
            ptr = kernels.offsets(dst, x.shape[0], x)
        if ptr is not False and kernels.usable(x):  # edges sorted by centre: the fused kernel, one pass over them
            out = kernels.gated_sum(centre, neighbour, F.linear(edge_attr, self.lin_edge.weight), src, ptr)
        if out is None:
            gate = centre.index_select(0, dst) + neighbour.index_select(0, src)
            gate = torch.addmm(gate, edge_attr, self.lin_edge.weight.t())
            msg = gated_message(gate)
            out = msg.new_zeros((x.shape[0], msg.shape[1])).index_add_(0, dst, msg)
        if self.aggr == "mean":
            deg = torch.bincount(dst, minlength=x.shape[0]).clamp_(min=1).to(x.dtype)
            out = out / deg.unsqueeze(1)
        if self.bn is not None:
            out = self.bn(out)
        return out + x if self.residual else out

    @torch.no_grad()
    def load_pyg_cgconv(self, conv: nn.Module) -> GatedConv:
        """Copy the weights of a PyG ``CGConv`` (same channels and edge dim) into this layer."""
        c = self.channels
        w = torch.cat([conv.lin_f.weight, conv.lin_s.weight])  # [2c, 2c + edge_dim]
        self.lin_centre.weight.copy_(w[:, :c])
        self.lin_neighbour.weight.copy_(w[:, c:2 * c])
        self.lin_edge.weight.copy_(w[:, 2 * c:])
        self.lin_centre.bias.copy_(torch.cat([conv.lin_f.bias, conv.lin_s.bias]))
        if self.bn is not None and getattr(conv, "bn", None) is not None:
            self.bn.load_state_dict(conv.bn.state_dict())
        return self


def gated_conv_edges(edge_features: nn.Module, batch, x: torch.Tensor) -> dict:  # noqa: ANN001
    """The edge inputs of :class:`GatedConv` layers over one batch, found once for all of them: the edge
    features and, where the fused kernel runs, the edges' centre-atom offsets."""
    return {"edge_attr": edge_features(batch), "ptr": kernels.offsets(batch[keys.EDGE_INDEX][1], x.shape[0], x)}
