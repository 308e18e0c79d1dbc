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


def area_per_atom(cell: torch.Tensor, pbc: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """``[n_graphs]`` in-plane area per atom (Å²) of slabs and monolayers: the area spanned by the cell's two
    periodic axes (the first non-periodic axis is the normal; a cell periodic along all three: the a–b plane)
    over the number of atoms. ``cell`` ``[n_graphs, 3, 3]``, ``pbc`` ``[n_graphs, 3]``."""
    cell = cell.reshape(-1, 3, 3).to(torch.float64)
    pbc = pbc.reshape(-1, 3).bool()
    a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
    planes = torch.stack([torch.linalg.cross(b, c).norm(dim=-1), torch.linalg.cross(c, a).norm(dim=-1),
                          torch.linalg.cross(a, b).norm(dim=-1)], dim=1)  # the plane normal to axis 0, 1, 2
    normal = torch.where(pbc.all(dim=1), torch.full_like(pbc[:, 0], 2, dtype=torch.long),
                         (~pbc).long().argmax(dim=1))
    return planes.gather(1, normal[:, None])[:, 0] / n_atoms.reshape(-1).to(torch.float64)
