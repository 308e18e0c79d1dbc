"""Graph records (cache format) as PyTorch Geometric ``Data`` objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from matgnn import keys
from matgnn.graphs.cache import GraphCache


def edge_geometry(rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``D = r_j + S·cell − r_i`` and ``|D|`` of a record's edges, in float64."""
    pos = rec["pos"]
    vec = pos[rec["src"].astype(np.int64)] + rec["offsets"].astype(np.float64) @ rec["cell"] - pos[rec["dst"].astype(np.int64)]
    return vec, np.sqrt((vec * vec).sum(axis=1))


def record_to_data(rec: dict[str, Any]) -> Data:
    """One graph as a ``Data`` with the fields named in :mod:`matgnn.keys`.

    ``edge_vec`` (``D = r_j + S·cell − r_i``) and ``edge_dist`` are computed here in
    float64 from the stored positions, cell and integer offsets, then cast to float32.
    Missing graph labels are NaN.
    """
    pos = rec["pos"]
    cell = rec["cell"]
    src = rec["src"].astype(np.int64)
    dst = rec["dst"].astype(np.int64)
    vec, dist = edge_geometry(rec)
    n = len(rec["z"])
    data = Data(
        **{
            keys.Z: torch.from_numpy(rec["z"].astype(np.int64)),
            keys.POS: torch.from_numpy(pos.astype(np.float32)),
            keys.CELL: torch.from_numpy(cell.astype(np.float32)).unsqueeze(0),
            keys.PBC: torch.from_numpy(rec["pbc"].astype(bool)).unsqueeze(0),
            keys.EDGE_INDEX: torch.from_numpy(np.stack([src, dst])),
            keys.CELL_OFFSETS: torch.from_numpy(rec["offsets"].astype(np.float32)),
            keys.EDGE_VEC: torch.from_numpy(vec.astype(np.float32)),
            keys.EDGE_DIST: torch.from_numpy(dist.astype(np.float32)),
            keys.N_ATOMS: torch.tensor([n]),
            keys.STRUCTURE_ID: rec["id"],
        }
    )
    data.num_nodes = n
    for name, value in rec["graph_targets"].items():
        data[keys.target(name)] = torch.tensor([value], dtype=torch.float32)
    for name, arr in rec["node_targets"].items():
        data[keys.target(name)] = torch.from_numpy(np.array(arr, np.float32))
    return data


class GraphDataset(torch.utils.data.Dataset):
    """Graphs of a :class:`GraphCache` as PyG ``Data`` objects, read from LMDB on demand: the
    reference the packed batches are tested against, and an interface for code that wants PyG's
    own ``DataLoader``. Training, evaluation and prediction batch through
    :mod:`matgnn.graphs.packed` (one batch path).

    Args:
        cache: a complete graph cache.
        indices: positions in the cache to expose (a split); default all.
        graph_targets / node_targets: the target fields each graph must carry; a graph
            without one gets NaN (missing label), so every graph of a batch has the same
            fields.
    """

    def __init__(self, cache: GraphCache, indices: Sequence[int] | None = None,
                 graph_targets: Sequence[str] | None = None,
                 node_targets: Sequence[str] | None = None) -> None:
        self.cache = cache
        self.indices = list(range(len(cache))) if indices is None else list(indices)
        self.graph_targets = list(cache.meta["graph_targets"] if graph_targets is None else graph_targets)
        self.node_targets = list(cache.meta["node_targets"] if node_targets is None else node_targets)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Data:
        return self._load(k)

    def _load(self, k: int) -> Data:
        rec = self.cache.record(self.indices[k])
        n = len(rec["z"])
        rec["graph_targets"] = {t: rec["graph_targets"].get(t, float("nan")) for t in self.graph_targets}
        rec["node_targets"] = {t: rec["node_targets"].get(t, np.full(n, np.nan, np.float32))
                               for t in self.node_targets}
        return record_to_data(rec)

    def ids(self) -> list[str]:
        return [self.cache.ids[i] for i in self.indices]
