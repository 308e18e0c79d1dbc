"""Edge geometry of a batch, inside the model: ``D = r_j + S·cell − r_i`` and ``|D|``.

When the positions or the cells of a batch require gradients (forces ``−∂E/∂r``, or stress through
a strained cell), the vectors are computed here from positions, cells and the integer cell offsets,
so autograd reaches them. Otherwise the vectors the packer cut from the graph cache are used: they
were computed once in float64 from the same three fields, so every model sees exactly the same
numbers in training, evaluation and prediction.
"""

from __future__ import annotations

from typing import Any

import torch

from matgnn import keys


def _needs_grad(batch: Any) -> bool:
    return bool(batch[keys.POS].requires_grad or batch[keys.CELL].requires_grad)


def edge_vectors(batch: Any, from_positions: bool = False) -> torch.Tensor:
    """``[n_edges, 3]`` displacement from each edge's centre atom ``i`` to its neighbour ``j``
    (``from_positions``: computed from positions even without gradients)."""
    if not (from_positions or _needs_grad(batch)):
        return batch[keys.EDGE_VEC]
    src, dst = batch[keys.EDGE_INDEX]
    pos, cell = batch[keys.POS], batch[keys.CELL]
    graph = batch[keys.BATCH][dst]
    shift = torch.einsum("ek,ekl->el", batch[keys.CELL_OFFSETS].to(cell.dtype), cell[graph])
    return pos[src] + shift - pos[dst]


def edge_lengths(batch: Any) -> torch.Tensor:
    """``[n_edges]`` edge lengths ``|D|`` in Å."""
    if not _needs_grad(batch):
        return batch[keys.EDGE_DIST]
    return edge_vectors(batch).norm(dim=-1)
