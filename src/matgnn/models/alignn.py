"""ALIGNN-style angle-aware message passing (Choudhary & DeCost, npj Comput. Mater. 7, 185, 2021),
written for our periodic graphs in plain PyTorch.

Two graphs are updated in turn. The *bond graph* is the crystal graph: atoms are nodes, bonds
``j→i`` (with their cell offsets) are edges. Its *line graph* has a node per bond and an edge per
bond pair ``(k→j, j→i)`` sharing atom ``j`` — the packer's triplets (``batch_fields =
("triplets",)``), built once per batch with periodic images kept and the reverse bond dropped.
Bond lengths enter as a Gaussian expansion on the bond graph's edges; bond angles θ at ``j``
between ``j→i`` and ``j→k`` as a Gaussian expansion of cos θ on the line graph's edges.

Each ALIGNN layer is an edge-gated graph convolution on the bond graph (updating atoms and
bonds), then one on the line graph (updating bonds and angles: the bond features are the line
graph's node features); then plain edge-gated convolutions on the bond graph; then pooling and
the heads. The edge-gated convolution (Bresson & Laurent, 2017, in ALIGNN's residual form) is
computed factorised like :class:`~matgnn.models.layers.GatedConv`: the four atom-side linear maps
are one matrix product per node, gathered onto edges afterwards.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from matgnn import keys
from matgnn.graphs.features import AtomFeatures, GaussianRBF
from matgnn.graphs.geometry import edge_lengths, edge_vectors
from matgnn.graphs.triplets import chained_edges, triplets
from matgnn.models import kernels
from matgnn.models.base import MatgnnModel, ModelSettings
from matgnn.models.layers import LayerNormSiLU, RowBatchNormSiLU


class ALIGNNConfig(ModelSettings):
    """``model: {name: alignn, ...}``: ``layers`` ALIGNN layers (bond graph + line graph), then
    ``gcn_layers`` bond-graph layers. The published model is 4 + 4 at width 256; ours defaults to 4 + 4 at
    width 64 with bond pairs of bonds shorter than 3.5 Å, and, as ALIGNN's current release, layer
    normalisation and its wide Gaussian expansions (the task suite's ``task_suite_alignn.json`` chose them over
    4 + 2 layers and over batch normalisation with narrow Gaussians)."""

    name: Literal["alignn"] = "alignn"
    hidden: int = Field(64, ge=1, description="width of atom, bond and angle features")
    layers: int = Field(4, ge=1, description="ALIGNN layers (bond graph, then line graph)")
    gcn_layers: int = Field(4, ge=0, description="edge-gated layers on the bond graph alone, after them")
    atom_features: str = Field("cgcnn", description="atom encoding: cgcnn (92 features) or onehot")
    n_rbf: int = Field(80, ge=2, description="Gaussian functions of the bond length (0 to the cutoff)")
    n_angle: int = Field(40, ge=2, description="Gaussian functions of the bond angle's cosine (-1 to 1)")
    embedding: int = Field(64, ge=1, description="width of the bond and angle expansions' first layer")
    norm: Literal["batch", "layer"] = Field("layer", description=(
        "normalisation inside the convolutions and embeddings (layer: ALIGNN's release; batch: the original paper's)"))
    gaussians: Literal["wide", "narrow"] = Field("wide", description=(
        "width of the bond-length and angle-cosine Gaussians: wide, exp(-(x - μ)² / Δ) with Δ the centres' spacing "
        "(ALIGNN's RBFExpansion: σ 0.22 Å for bonds, 0.16 for cosines at the defaults); narrow, σ = Δ"))
    angle_cutoff: float | None = Field(3.5, gt=0, description=(
        "only bonds shorter than this (Å) form bond pairs of the line graph (ALIGNN's three_body_cutoff, 3.5 "
        "in its release); null: every bond of the graph"))
    dihedrals: bool = Field(False, description=(
        "nested line graph (angles of angles, as coNGN): each layer also runs an edge-gated convolution whose "
        "nodes are the bond pairs and whose edges are pairs of bond pairs sharing a bond (l→k→j→i), with a "
        "Gaussian expansion of the dihedral angle's cosine about the shared bond"))


def _norm_silu(channels: int, norm: str) -> nn.Module:
    """norm → SiLU as one module (the norm's parameter names; one tensor less held for backward in training)."""
    return RowBatchNormSiLU(channels) if norm == "batch" else LayerNormSiLU(channels)


def _mlp(inp: int, out: int, norm: str) -> nn.Sequential:
    """Linear → norm → SiLU (ALIGNN's MLP layer)."""
    return nn.Sequential(nn.Linear(inp, out), _norm_silu(out, norm))


def _gaussians(start: float, stop: float, n: int, kind: str) -> GaussianRBF:
    """``n`` Gaussians on ``[start, stop]``: narrow (σ = the centres' spacing Δ) or wide (exp(-(x - μ)² / Δ),
    ALIGNN's RBFExpansion, σ = √(Δ / 2))."""
    return GaussianRBF.wide(start, stop, n) if kind == "wide" else GaussianRBF(start, stop, n)


def line_graph(dist: torch.Tensor, idx_kj: torch.Tensor, idx_ji: torch.Tensor, angle_cutoff: float | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The line graph of the bonds: with ``angle_cutoff``, only the bond pairs of bonds shorter than it, and
    those bonds as its nodes. Returns the kept bond pairs ``idx_kj, idx_ji`` (bond indices), the bonds that
    are line-graph nodes (None: every bond) and the line graph's edge index over those nodes."""
    if angle_cutoff is None:
        return idx_kj, idx_ji, None, torch.stack([idx_kj, idx_ji])
    short = dist < angle_cutoff
    keep = short[idx_kj] & short[idx_ji]
    idx_kj, idx_ji = idx_kj[keep], idx_ji[keep]
    line_nodes = torch.nonzero(short).squeeze(1)
    number = torch.full_like(short, -1, dtype=torch.long)
    number[line_nodes] = torch.arange(len(line_nodes), device=short.device)
    return idx_kj, idx_ji, line_nodes, torch.stack([number[idx_kj], number[idx_ji]])


def dihedrals(vec: torch.Tensor, idx_kj: torch.Tensor, idx_ji: torch.Tensor, line_index: torch.Tensor,
              n_line: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The nested line graph: pairs of bond pairs ``(l→k, k→j)`` and ``(k→j, j→i)`` that share bond ``k→j``
    (the line graph's chained edges), and the cosine of the dihedral angle about that bond between the
    planes (l, k, j) and (k, j, i). ``vec`` holds each bond's vector from its centre to its neighbour;
    a collinear triple gives cosine 0. Returns the nested edge index (over bond pairs) and the cosines."""
    t1, t2 = chained_edges(line_index, n_line)
    axis = vec.index_select(0, idx_ji.index_select(0, t1))  # r_k − r_j
    n1 = torch.linalg.cross(vec.index_select(0, idx_kj.index_select(0, t1)), axis)  # (r_l − r_k) × axis
    n2 = torch.linalg.cross(-vec.index_select(0, idx_ji.index_select(0, t2)), axis)  # (r_i − r_j) × axis
    cos = (n1 * n2).sum(-1) / (n1.norm(dim=-1) * n2.norm(dim=-1)).clamp_min(1e-9)
    return torch.stack([t1, t2]), cos.clamp(-1.0, 1.0)


class _GatedSums(torch.autograd.Function):
    """``Σ_j σ_ij ⊙ v_j`` and ``Σ_j σ_ij`` per target ``i`` with ``σ = sigmoid(m)``, keeping only ``σ`` for the
    backward pass: the gathered ``v_j`` (one row per edge, the largest tensor of a line graph) is gathered again
    there instead of being held from the forward pass to the backward pass."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, v: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,  # noqa: ANN001
                n: int) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = torch.sigmoid(m)
        num = v.new_zeros(n, v.size(1)).index_add_(0, dst, sigma * v.index_select(0, src))
        den = v.new_zeros(n, v.size(1)).index_add_(0, dst, sigma)
        ctx.save_for_backward(sigma, v, src, dst)
        return num, den

    @staticmethod
    def backward(ctx, g_num: torch.Tensor, g_den: torch.Tensor):  # noqa: ANN001, ANN205
        sigma, v, src, dst = ctx.saved_tensors
        g_msg = g_num.index_select(0, dst)
        g_v = torch.zeros_like(v).index_add_(0, src, g_msg * sigma) if ctx.needs_input_grad[1] else None
        g_sigma = torch.addcmul(g_den.index_select(0, dst), g_msg, v.index_select(0, src))
        g_m = torch.ops.aten.sigmoid_backward(g_sigma, sigma) if ctx.needs_input_grad[0] else None
        return g_m, g_v, None, None, None


#: added to the gates' sum before dividing by it
EPS = 1e-6


class EdgeGatedConv(nn.Module):
    """Residual edge-gated graph convolution on a graph with node features ``x`` and edge
    features ``y``; messages flow along ``edge_index`` (row 0 source ``j``, row 1 target ``i``):

    ``m_ij = A x_i + B x_j + C y_ij``,  ``σ_ij = sigmoid(m_ij)``,
    ``x_i' = x_i + SiLU(norm(U x_i + Σ_j σ_ij ⊙ V x_j / (Σ_j σ_ij + ε)))``,
    ``y_ij' = y_ij + SiLU(norm(m_ij))``.

    On CPU, with edges sorted by target (matgnn's bond graphs and line graphs are), the gated sums run in one
    fused pass (:func:`matgnn.models.kernels.edge_gated`); elsewhere as PyTorch ops, the same function.
    """

    def __init__(self, channels: int, norm: str = "batch", update_edges: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.node = nn.Linear(channels, 4 * channels)  # [A | B | U | V], one product per node
        self.edge = nn.Linear(channels, channels, bias=False)  # C (A's bias covers it)
        self.norm_nodes = _norm_silu(channels, norm)
        #: False where the edge features are not read afterwards (the last layer of each graph)
        self.norm_edges = _norm_silu(channels, norm) if update_edges else None

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, y: torch.Tensor,
                ptr: torch.Tensor | bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ptr``: the edges' target offsets (:func:`matgnn.models.kernels.centre_ptr`) found once for several
        layers; ``False``: the fused kernel does not apply (unsorted edges); ``None``: look here."""
        src, dst = edge_index
        xw = self.node(x)
        if ptr is None:
            ptr = kernels.offsets(dst, x.shape[0], x)
        if ptr is not False:  # edges sorted by target, on the CPU: the fused kernel, one pass over them
            m, h = kernels.edge_gated(xw, F.linear(y, self.edge.weight), src, ptr, EPS)
        else:
            a, b, u, v = xw.chunk(4, dim=1)
            m = torch.addmm(a.index_select(0, dst) + b.index_select(0, src), y, self.edge.weight.t())
            num, den = _GatedSums.apply(m, v, src, dst, x.size(0))
            h = u + num / (den + EPS)
        x = x + self.norm_nodes(h)
        return x, (y + self.norm_edges(m) if self.norm_edges is not None else y)


class ALIGNNLayer(nn.Module):
    """One ALIGNN layer: the bond graph's convolution (atoms, bonds), then the line graph's
    (bonds as nodes, angles as edges)."""

    def __init__(self, channels: int, norm: str = "batch", last: bool = False, nested: bool = False) -> None:
        super().__init__()
        self.bond_graph = EdgeGatedConv(channels, norm)
        #: the nested line graph (bond pairs as nodes, dihedrals as edges), before the line graph's convolution
        self.nested_graph = EdgeGatedConv(channels, norm, update_edges=not last) if nested else None
        self.line_graph = EdgeGatedConv(channels, norm, update_edges=not last)  # the last angles are not read

    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, edge_index: torch.Tensor,
                line_index: torch.Tensor, line_nodes: torch.Tensor | None = None,
                nested: tuple[torch.Tensor, torch.Tensor] | None = None,
                ptrs: tuple = (None, None, None)
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``line_nodes``: the bonds that are line-graph nodes (``line_index`` numbers them in that
        order); None: every bond. ``nested``: the nested line graph's edge index and dihedral features.
        ``ptrs``: the three graphs' target offsets for the fused kernel (see :meth:`EdgeGatedConv.forward`)."""
        x, y = self.bond_graph(x, edge_index, y, ptrs[0])
        w = None
        if self.nested_graph is not None and nested is not None:
            z, w = self.nested_graph(z, nested[0], nested[1], ptrs[2])
        if line_nodes is None:
            y, z = self.line_graph(y, line_index, z, ptrs[1])
        else:  # only the bonds in some bond pair: the line graph's work scales with them, not all bonds
            part, z = self.line_graph(y.index_select(0, line_nodes), line_index, z, ptrs[1])
            y = y.index_copy(0, line_nodes, part)
        return x, y, z, w


class ALIGNN(MatgnnModel):
    """Atom features → MLP; bond lengths and bond-angle cosines → Gaussian expansions → MLPs;
    ``layers`` :class:`ALIGNNLayer` then ``gcn_layers`` :class:`EdgeGatedConv` on the bond graph;
    pooling; one MLP per head."""

    config_class = ALIGNNConfig
    batch_fields = ("triplets",)
    #: models saved before ``gaussians`` existed used narrow Gaussians
    ARGUMENTS_BEFORE = {"gaussians": "narrow"}
    block_modules = ("alignn_layers",)
    embedding_modules = ("atom_features", "atom_embedding", "bond_rbf", "bond_embedding", "angle_rbf",
                         "angle_embedding", "dihedral_rbf", "dihedral_embedding")

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 64, layers: int = 4, gcn_layers: int = 4,
                 atom_features: str = "cgcnn", cutoff: float = 8.0, n_rbf: int = 80, n_angle: int = 40,
                 embedding: int = 64, norm: str = "layer", gaussians: str = "wide", angle_cutoff: float | None = 3.5,
                 dihedrals: bool = False, dropout: float = 0.0, pooling: str = "mean", head_hidden: int = 128) -> None:
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', not {norm!r}")
        if gaussians not in ("wide", "narrow"):
            raise ValueError(f"gaussians must be 'wide' or 'narrow', not {gaussians!r}")
        self.angle_cutoff = angle_cutoff
        self.atom_features = AtomFeatures(atom_features)
        self.atom_embedding = _mlp(self.atom_features.dim, hidden, norm)
        self.bond_rbf = _gaussians(0.0, cutoff, n_rbf, gaussians)
        self.bond_embedding = nn.Sequential(_mlp(n_rbf, embedding, norm), _mlp(embedding, hidden, norm))
        self.angle_rbf = _gaussians(-1.0, 1.0, n_angle, gaussians)
        self.angle_embedding = nn.Sequential(_mlp(n_angle, embedding, norm), _mlp(embedding, hidden, norm))
        self.dihedrals = dihedrals
        if dihedrals:
            self.dihedral_rbf = _gaussians(-1.0, 1.0, n_angle, gaussians)
            self.dihedral_embedding = nn.Sequential(_mlp(n_angle, embedding, norm), _mlp(embedding, hidden, norm))
        self.alignn_layers = nn.ModuleList(ALIGNNLayer(hidden, norm, last=k == layers - 1, nested=dihedrals)
                                           for k in range(layers))
        self.gcn_layers = nn.ModuleList(EdgeGatedConv(hidden, norm, update_edges=k < gcn_layers - 1)
                                        for k in range(gcn_layers))

    def parameter_group(self, name: str) -> str:
        """ALIGNN layers are ``conv_0`` …, the bond-graph layers after them continue the count."""
        first, _, rest = name.partition(".")
        layer = rest.split(".", 1)[0]
        if first == "gcn_layers" and layer.isdigit():
            return f"conv_{len(self.alignn_layers) + int(layer)}"
        return super().parameter_group(name)

    def node_features(self, batch: Any) -> torch.Tensor:
        edge_index = batch[keys.EDGE_INDEX]
        vec = edge_vectors(batch)  # from the centre i to the neighbour j of every bond j→i
        dist = edge_lengths(batch)
        idx_kj, idx_ji, line_nodes, line_index = line_graph(dist, *triplets(batch), self.angle_cutoff)
        # the angle at j between j→i (−vec_ji) and j→k (vec_kj)
        v1, v2 = -vec.index_select(0, idx_ji), vec.index_select(0, idx_kj)
        cos = (v1 * v2).sum(-1) / (v1.norm(dim=-1) * v2.norm(dim=-1)).clamp_min(1e-9)
        x = self.atom_embedding(self.atom_features(batch[keys.Z]))
        y = self.bond_embedding(self.bond_rbf(dist))
        z = self.angle_embedding(self.angle_rbf(cos.clamp(-1.0, 1.0)))
        nested = None
        if self.dihedrals:
            n_line = dist.size(0) if line_nodes is None else line_nodes.size(0)
            nested_index, cos_phi = dihedrals(vec, idx_kj, idx_ji, line_index, n_line)
            nested = (nested_index, self.dihedral_embedding(self.dihedral_rbf(cos_phi)))
        ptrs = (kernels.offsets(edge_index[1], x.shape[0], x),
                kernels.offsets(line_index[1], y.shape[0] if line_nodes is None else line_nodes.shape[0], y),
                kernels.offsets(nested[0][1], z.shape[0], z) if nested is not None else False)
        for layer in self.alignn_layers:
            x, y, z, w = layer(x, y, z, edge_index, line_index, line_nodes, nested, ptrs)
            if nested is not None:
                nested = (nested[0], w)
        for conv in self.gcn_layers:
            x, y = conv(x, edge_index, y, ptrs[0])
        return x
