"""DimeNet++ (Gasteiger et al., 2020) made periodic.

PyG's ``DimeNetPlusPlus`` rebuilds neighbours from raw positions with no cell, which
silently drops the periodic images. Here distances and triplet angles come from the
precomputed periodic displacement vectors ``D = r_j + S·cell − r_i`` of our graphs, and
the excluded "back-tracking" triplet is the reverse edge (same atom and opposite cell
offset), not every edge to the same atom index: in a small cell an atom's neighbour can
be its own or another image of the centre atom, which is a genuine triplet.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch_geometric.nn.models.dimenet import (
    BesselBasisLayer,
    EmbeddingBlock,
    Envelope,
    InteractionPPBlock,
    OutputPPBlock,
    SphericalBasisLayer,
)
from torch_geometric.nn.resolver import activation_resolver

from matgnn import keys
from matgnn.data.structure import MAX_Z
from matgnn.graphs.geometry import edge_lengths, edge_vectors
from matgnn.graphs.triplets import periodic_triplets, triplets  # noqa: F401 - periodic_triplets re-exported
from matgnn.models.base import MatgnnModel, ModelSettings

#: PyG's spherical basis derives its functions symbolically (sympy), about 13 s per model built. The functions
#: depend on the basis sizes only and the layer holds no tensors, so one derivation per size serves every later
#: model of the process as a copy, given its own cutoff and envelope
_SPHERICAL_BASES: dict[tuple[int, int], SphericalBasisLayer] = {}


def _spherical_basis(num_spherical: int, num_radial: int, cutoff: float, envelope_exponent: int) -> SphericalBasisLayer:
    key = (num_spherical, num_radial)
    if key not in _SPHERICAL_BASES:
        _SPHERICAL_BASES[key] = SphericalBasisLayer(num_spherical, num_radial, cutoff, envelope_exponent)
    layer = copy.deepcopy(_SPHERICAL_BASES[key])
    layer.cutoff = cutoff
    layer.envelope = Envelope(envelope_exponent)
    return layer


class DimeNetConfig(ModelSettings):
    """``model: {name: dimenet++, ...}``: periodic DimeNet++ (embeds Z itself; its radial basis is
    ``num_radial`` Bessel functions, not a Gaussian ``n_rbf``)."""

    name: Literal["dimenet++"] = "dimenet++"
    int_emb_size: int = Field(64, ge=1)
    basis_emb_size: int = Field(8, ge=1)
    out_emb_channels: int = Field(128, ge=1)
    num_spherical: int = Field(7, ge=1)
    num_radial: int = Field(6, ge=1)
    envelope_exponent: int = Field(5, ge=1)


class DimeNetPP(MatgnnModel):
    config_class = DimeNetConfig
    block_modules = ("interactions",)
    embedding_modules = ("emb", "rbf", "sbf")
    readout_modules = ("outputs", "attention_pool")
    batch_fields = ("triplets",)

    def __init__(self, heads: list[dict[str, Any]], hidden: int = 64, layers: int = 3, cutoff: float = 8.0,
                 int_emb_size: int = 64, basis_emb_size: int = 8, out_emb_channels: int = 128,
                 num_spherical: int = 7, num_radial: int = 6, envelope_exponent: int = 5,
                 dropout: float = 0.0, pooling: str = "mean", head_hidden: int = 128,
                 atom_features: str = "embedding") -> None:
        super().__init__(heads=heads, trunk_dim=hidden, head_hidden=head_hidden, pooling=pooling, dropout=dropout)
        act = activation_resolver("swish")
        self.rbf = BesselBasisLayer(num_radial, cutoff, envelope_exponent)
        self.sbf = _spherical_basis(num_spherical, num_radial, cutoff, envelope_exponent)
        self.emb = EmbeddingBlock(num_radial, hidden, act)
        self.emb.emb = nn.Embedding(MAX_Z + 1, hidden)  # PyG's table stops at Z = 94
        self.emb.reset_parameters()
        self.interactions = nn.ModuleList(
            InteractionPPBlock(hidden, int_emb_size, basis_emb_size, num_spherical, num_radial, 1, 2, act)
            for _ in range(layers))
        self.outputs = nn.ModuleList(
            OutputPPBlock(num_radial, hidden, out_emb_channels, hidden, 3, act, "glorot_orthogonal")
            for _ in range(layers + 1))

    def node_features(self, batch: Any) -> torch.Tensor:
        edge_index = batch[keys.EDGE_INDEX]
        vec = edge_vectors(batch)  # r_j + S·cell − r_i: from the centre i to neighbour j
        dist = edge_lengths(batch)
        n = batch[keys.Z].size(0)
        idx_kj, idx_ji = triplets(batch)
        # angle at j between j→i and j→k: vectors -vec_ji and vec_kj
        v1, v2 = -vec[idx_ji], vec[idx_kj]
        a = (v1 * v2).sum(-1)
        b = torch.linalg.cross(v1, v2).norm(dim=-1)
        angle = torch.atan2(b, a)
        rbf = self.rbf(dist)
        sbf = self.sbf(dist, angle, idx_kj)
        # PyG's blocks name the centre i and the neighbour j of an edge (i, j) as rows 0/1 of
        # its own radius graph, whose messages flow j -> i with edge_index = (j, i).
        j, i = edge_index
        x = self.emb(batch[keys.Z], rbf, i, j)
        h = self.outputs[0](x, rbf, i, num_nodes=n)
        for block, out in zip(self.interactions, self.outputs[1:]):
            x = block(x, rbf, sbf, idx_kj, idx_ji)
            h = h + out(x, rbf, i, num_nodes=n)
        return h
