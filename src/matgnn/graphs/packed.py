"""Graphs held in RAM as a few concatenated tensors, batched by index arithmetic.

PyG's ``DataLoader`` collates a batch by walking a list of ``Data`` objects (tens of
microseconds per graph), which on a CPU costs as much as the model step for small
crystals. :class:`PackedGraphs` stores a split once as flat arrays (atoms, edges and
per-graph offsets) and :func:`matgnn.graphs.batching.make_loader` cuts a batch out of them with a handful
of vectorised gathers; the batch it yields is an ordinary PyG ``Batch`` with the
fields of :mod:`matgnn.keys`, so models see no difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch

from matgnn import keys
from matgnn.graphs.cache import GraphCache
from matgnn.graphs.dataset import edge_geometry
from matgnn.graphs.extras import BUILDERS

#: a graph target to pack: its name, or (head name, component names) for a vector head
TargetSpec = str | tuple[str, Sequence[str]]


def _target_columns(t: TargetSpec) -> tuple[str, tuple[str, ...], bool]:
    """(batch field name, source columns, whether a vector head) of a graph target to pack."""
    return (t, (t,), False) if isinstance(t, str) else (t[0], tuple(t[1]), True)


def _label_table(rows: list[list[float]], vector: bool, width: int) -> torch.Tensor:
    """Graph labels as ``[n_graphs]`` (a scalar target) or ``[n_graphs, width]`` (a vector head)."""
    table = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), width)
    return table if vector else table[:, 0]


def check_extras(extras: Sequence[str]) -> list[str]:
    """Extra batch fields, each once; an unknown one is a ValueError naming the known."""
    unknown = [e for e in extras if e not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown extra batch fields {unknown}; known: {sorted(BUILDERS)}")
    return list(dict.fromkeys(extras))


class _Extras:
    """The extra batch fields of a packer: their names (``extras``) and their builders, resolved when they are
    set (so a packer sent to a loader's worker process carries them)."""

    _builders: dict[str, Any]

    @property
    def extras(self) -> list[str]:
        return list(self._builders)

    @extras.setter
    def extras(self, names: Sequence[str]) -> None:
        self._builders = {name: BUILDERS[name] for name in check_extras(names)}


def _cumsum0(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(x) + 1, dtype=torch.long)
    torch.cumsum(x, 0, out=out[1:])
    return out


class PackedGraphs(_Extras):
    """The graphs ``indices`` of ``cache`` (a split), concatenated.

    Graph labels missing for a graph are NaN; node labels missing for a graph are NaN
    for each of its atoms (so every batch carries the same fields). A ``graph_targets``
    entry is a target's name, or ``(name, components)`` for a vector head: the batch field
    ``y_<name>`` then has shape ``[n_graphs, len(components)]``, one column per component.
    ``extras``: fields a model declares (``batch_fields``, e.g. ``"triplets"``), added to every
    batch by :data:`matgnn.graphs.extras.BUILDERS`.
    """

    def __init__(self, cache: GraphCache, indices: Sequence[int] | None = None,
                 graph_targets: Sequence[TargetSpec] = (), node_targets: Sequence[str] = (),
                 extras: Sequence[str] = ()) -> None:
        self.indices = list(range(len(cache))) if indices is None else list(indices)
        self.extras = check_extras(extras)
        self._pack((cache.record(i) for i in self.indices), graph_targets, node_targets)

    @classmethod
    def from_records(cls, records: Iterable[dict], graph_targets: Sequence[TargetSpec] = (),
                     node_targets: Sequence[str] = (), extras: Sequence[str] = ()) -> PackedGraphs:
        """Pack graph records already read (the streaming loader packs one batch at a time)."""
        self = cls.__new__(cls)
        self.extras = check_extras(extras)
        self._pack(records, graph_targets, node_targets)
        self.indices = list(range(len(self.ids)))
        return self

    def _pack(self, records: Iterable[dict], graph_targets: Sequence[TargetSpec], node_targets: Sequence[str]) -> None:
        self.graph_targets, self.node_targets = list(graph_targets), list(node_targets)
        columns = [_target_columns(t) for t in self.graph_targets]
        z, pos, cells, pbc, src, dst, off, vec, dist = [], [], [], [], [], [], [], [], []
        gt: dict[str, list[list[float]]] = {name: [] for name, _, _ in columns}
        nt = {t: [] for t in self.node_targets}
        n_atoms, n_edges, self.ids = [], [], []
        for rec in records:
            n = len(rec["z"])
            v, d = edge_geometry(rec)
            z.append(rec["z"]), pos.append(rec["pos"]), cells.append(rec["cell"]), pbc.append(rec["pbc"])
            src.append(rec["src"]), dst.append(rec["dst"]), off.append(rec["offsets"]), vec.append(v), dist.append(d)
            n_atoms.append(n), n_edges.append(len(d)), self.ids.append(rec["id"])
            for name, comps, _ in columns:
                gt[name].append([rec["graph_targets"].get(c, np.nan) for c in comps])
            for t in self.node_targets:
                nt[t].append(rec["node_targets"].get(t, np.full(n, np.nan, np.float32)))

        def cat(arrs, dtype, shape=(0,)):
            return torch.from_numpy(np.concatenate(arrs).astype(dtype)) if arrs else torch.zeros(shape, dtype=torch.float32)

        self.z = cat(z, np.int64)
        self.pos = cat(pos, np.float32, (0, 3))
        self.cell = torch.from_numpy(np.stack(cells).astype(np.float32)) if cells else torch.zeros(0, 3, 3)
        self.pbc = torch.from_numpy(np.stack(pbc).astype(bool)) if pbc else torch.zeros(0, 3, dtype=torch.bool)
        self.src, self.dst = cat(src, np.int64), cat(dst, np.int64)
        self.offsets = cat(off, np.float32, (0, 3))
        self.edge_vec = cat(vec, np.float32, (0, 3))
        self.edge_dist = cat(dist, np.float32)
        self.n_atoms = torch.tensor(n_atoms, dtype=torch.long)
        self.n_edges = torch.tensor(n_edges, dtype=torch.long)
        self.atom_start = _cumsum0(self.n_atoms)
        self.edge_start = _cumsum0(self.n_edges)
        self.graph_labels = {name: _label_table(gt[name], vector, len(comps)) for name, comps, vector in columns}
        self.node_labels = {t: cat(v, np.float32) for t, v in nt.items()}

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, idx: torch.Tensor) -> Batch:
        """The graphs at positions ``idx`` (in that order) as one PyG ``Batch``."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        na, ne = self.n_atoms[idx], self.n_edges[idx]
        aptr, eptr = _cumsum0(na), _cumsum0(ne)
        n_tot, e_tot = int(aptr[-1]), int(eptr[-1])
        atom = torch.repeat_interleave(self.atom_start[idx] - aptr[:-1], na, output_size=n_tot) + torch.arange(n_tot)
        edge = torch.repeat_interleave(self.edge_start[idx] - eptr[:-1], ne, output_size=e_tot) + torch.arange(e_tot)
        shift = torch.repeat_interleave(aptr[:-1], ne, output_size=e_tot)
        fields = {
            keys.Z: self.z[atom], keys.POS: self.pos[atom], keys.CELL: self.cell[idx], keys.PBC: self.pbc[idx],
            keys.EDGE_INDEX: torch.stack([self.src[edge] + shift, self.dst[edge] + shift]),
            keys.CELL_OFFSETS: self.offsets[edge], keys.EDGE_VEC: self.edge_vec[edge],
            keys.EDGE_DIST: self.edge_dist[edge], keys.N_ATOMS: na,
            keys.STRUCTURE_ID: [self.ids[i] for i in idx.tolist()],
            keys.BATCH: torch.repeat_interleave(torch.arange(len(idx)), na, output_size=n_tot), "ptr": aptr,
        }
        for t, v in self.graph_labels.items():
            fields[keys.target(t)] = v[idx]
        for t, v in self.node_labels.items():
            fields[keys.target(t)] = v[atom]
        b = Batch(**fields)
        b.num_nodes = n_tot
        b._num_graphs = len(idx)
        for build in self._builders.values():  # fields the model declared (triplets), built once per batch here
            build(b)
        return b


class StreamedGraphs(_Extras):
    """The graphs ``indices`` of ``cache``, read from LMDB one batch at a time (nothing held
    in RAM but the batch): the same ``batch(idx)`` as :class:`PackedGraphs`, so loaders and
    models see no difference. Memory is bounded by the batch size, not the data set."""

    def __init__(self, cache: GraphCache, indices: Sequence[int] | None = None,
                 graph_targets: Sequence[TargetSpec] = (), node_targets: Sequence[str] = (),
                 extras: Sequence[str] = ()) -> None:
        self.cache = cache
        self.extras = check_extras(extras)
        self.indices = list(range(len(cache))) if indices is None else list(indices)
        self.graph_targets, self.node_targets = list(graph_targets), list(node_targets)
        self.n_atoms = torch.tensor([cache.meta["n_atoms"][i] for i in self.indices], dtype=torch.long)
        self.n_edges = torch.tensor([cache.meta["n_edges"][i] for i in self.indices], dtype=torch.long)

    @property
    def ids(self) -> list[str]:
        return [self.cache.ids[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, idx: torch.Tensor) -> Batch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        packed = PackedGraphs.from_records((self.cache.record(self.indices[i]) for i in idx.tolist()),
                                           self.graph_targets, self.node_targets, self.extras)
        return packed.batch(torch.arange(len(idx)))
