"""Triplets of a batch: pairs of edges ``(k→j, j→i)`` that share atom ``j`` — the angles of
DimeNet++ and the edges of the line graph of ALIGNN-style models — built once per batch by the
packer when a model declares ``batch_fields = ("triplets",)`` (vectorised: no Python loop over
structures), or by the model itself from a batch packed without them.
"""

from __future__ import annotations

from typing import Any

import torch

from matgnn import keys


def chained_edges(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of edges ``(k→j, j→i)`` of a directed graph where the first ends where the second starts
    (vectorised). Returns ``idx_kj, idx_ji`` (edge indices); row 0 of ``edge_index`` is the source."""
    src, dst = edge_index
    order = torch.argsort(dst, stable=True)  # edges grouped by their target
    counts = torch.bincount(dst, minlength=num_nodes)
    ptr = torch.cumsum(counts, 0) - counts
    n_in = counts[src]  # for each edge e1 = (j -> i): all edges e2 = (k -> j), i.e. with dst == j == src[e1]
    idx_ji = torch.repeat_interleave(torch.arange(len(src), device=src.device), n_in)
    start = torch.repeat_interleave(ptr[src], n_in)
    local = torch.arange(len(idx_ji), device=src.device) - torch.repeat_interleave(torch.cumsum(n_in, 0) - n_in, n_in)
    return order[start + local], idx_ji


def periodic_triplets(edge_index: torch.Tensor, offsets: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of edges ``(k→j, j→i)`` sharing atom ``j``, without the reverse edge of ``j→i``.

    Returns ``idx_kj, idx_ji`` (edge indices). ``edge_index[0]`` is the source (neighbour),
    ``edge_index[1]`` the target (centre)."""
    src, dst = edge_index
    idx_kj, idx_ji = chained_edges(edge_index, num_nodes)
    reverse = (src[idx_kj] == dst[idx_ji]) & (offsets[idx_kj] == -offsets[idx_ji]).all(dim=-1)
    keep = ~reverse
    return idx_kj[keep], idx_ji[keep]


def add_triplets(batch: Any) -> Any:
    """Store the batch's triplets as ``keys.TRIPLET_KJ`` / ``keys.TRIPLET_JI``."""
    idx_kj, idx_ji = periodic_triplets(batch[keys.EDGE_INDEX], batch[keys.CELL_OFFSETS], batch[keys.Z].size(0))
    batch[keys.TRIPLET_KJ], batch[keys.TRIPLET_JI] = idx_kj, idx_ji
    return batch


def triplets(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's triplets (``idx_kj, idx_ji``): as packed, else computed now."""
    if keys.TRIPLET_KJ in batch:
        return batch[keys.TRIPLET_KJ], batch[keys.TRIPLET_JI]
    return periodic_triplets(batch[keys.EDGE_INDEX], batch[keys.CELL_OFFSETS], batch[keys.Z].size(0))

