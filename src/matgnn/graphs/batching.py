"""Which graphs go into each batch, for one process or one rank of a distributed run.

:class:`BatchPlan` draws an epoch's batches: a permutation (shared by every rank, drawn
from one seeded generator, so a resumed run and every rank draw the same), split into
per-rank shards like PyTorch's ``DistributedSampler`` (padded by repeating graphs so every
rank gets as many), then cut into batches either of ``batch_size`` graphs or, size-aware,
of about ``budget`` atoms or edges each (a batch is closed as soon as it reaches the
budget, so batches of large and small crystals cost about the same). Rank ``r``'s batch
``k`` and the other ranks' batch ``k`` together are the global batch ``k`` of one process
with ``world × batch_size``: a run on N processes takes the same steps as one process
with N times the batch.

:class:`GraphLoader` turns a plan into PyG batches from a :class:`PackedGraphs` (in RAM)
or a :class:`StreamedGraphs` (read from LMDB per batch), inline or in worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch_geometric.data import Batch

from matgnn.graphs.packed import PackedGraphs, StreamedGraphs


class BatchPlan:
    """Batches of positions ``0..n-1`` for rank ``rank`` of ``world``.

    Args:
        n: number of graphs.
        batch_size: graphs per batch (when ``sizes`` is None).
        sizes: per-graph cost (atoms or edges) for size-aware batches, with ``budget``.
        budget: atoms or edges per batch: a batch is closed when its total reaches it.
        shuffle: new permutation each epoch from ``generator``.
        rank, world: this process's rank and the number of processes.
        pad: give every rank the same number of graphs and batches by repeating some
            (training under DDP needs equal step counts); evaluation passes use
            ``pad=False`` and see every graph exactly once over all ranks.
        drop_last: drop a last batch smaller than ``batch_size`` (graph-count batches).
    """

    def __init__(self, n: int, batch_size: int = 64, sizes: torch.Tensor | None = None, budget: int | None = None,
                 shuffle: bool = False, generator: torch.Generator | None = None, rank: int = 0, world: int = 1,
                 pad: bool = True, drop_last: bool = False) -> None:
        if sizes is not None and (budget is None or budget < 1):
            raise ValueError("size-aware batches need a positive budget")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.n, self.batch_size, self.sizes, self.budget = n, batch_size, sizes, budget
        self.shuffle, self.generator, self.rank, self.world = shuffle, generator, rank, world
        self.pad, self.drop_last = pad and world > 1, drop_last

    def _shards(self) -> list[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        if self.pad and self.n:
            total = math.ceil(self.n / self.world) * self.world
            order = order.repeat(math.ceil(total / self.n))[:total]
        return [order[r::self.world] for r in range(self.world)]

    def _cut(self, shard: torch.Tensor) -> list[torch.Tensor]:
        if self.sizes is None:
            out = list(shard.split(self.batch_size))
            if out and self.drop_last and len(out[-1]) < self.batch_size:
                out.pop()
            return out
        out, start, acc = [], 0, 0
        for k, s in enumerate(self.sizes[shard].tolist()):
            acc += s
            if acc >= self.budget:
                out.append(shard[start:k + 1])
                start, acc = k + 1, 0
        if start < len(shard):
            out.append(shard[start:])
        return out

    def batches(self) -> list[torch.Tensor]:
        """This rank's batches for one epoch (draws a permutation when shuffling)."""
        shards = self._shards()
        if self.sizes is None or not self.pad:
            return self._cut(shards[self.rank])
        cut = [self._cut(s) for s in shards]  # every rank cuts every shard: same counts, no communication
        want = max(len(c) for c in cut)
        mine = cut[self.rank]
        return mine + [mine[k % len(mine)] for k in range(want - len(mine))] if mine else mine

    def __len__(self) -> int:
        """Batches per epoch (graph-count batches: exact; size-aware: an upper bound)."""
        per_rank = (math.ceil(self.n / self.world) if self.pad else len(range(self.rank, self.n, self.world)))
        if self.sizes is None:
            return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)
        largest = torch.sort(self.sizes, descending=True).values[:per_rank].sum().item() if self.n else 0
        return min(per_rank, int(largest // self.budget) + 1)


def _identity(x):
    return x


class _Batches(torch.utils.data.Dataset):
    def __init__(self, graphs, batches: list[torch.Tensor]) -> None:
        self.graphs, self.batches = graphs, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> Batch:
        return self.graphs.batch(self.batches[k])


class GraphLoader:
    """PyG batches of ``graphs`` (a :class:`PackedGraphs` or :class:`StreamedGraphs`) as
    ``plan`` cuts them; with ``workers`` > 0 batches are assembled in worker processes
    (useful when streaming from LMDB)."""

    def __init__(self, graphs: PackedGraphs | StreamedGraphs, plan: BatchPlan, workers: int = 0) -> None:
        self.graphs, self.plan, self.workers = graphs, plan, workers

    @property
    def dataset(self) -> PackedGraphs | StreamedGraphs:
        return self.graphs

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[Batch]:
        batches = self.plan.batches()
        if self.workers == 0:
            for idx in batches:
                yield self.graphs.batch(idx)
            return
        yield from torch.utils.data.DataLoader(_Batches(self.graphs, batches), batch_size=None,
                                               num_workers=self.workers, collate_fn=_identity)


def make_loader(graphs: PackedGraphs | StreamedGraphs, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, batch_by: Literal["graphs", "atoms", "edges"] = "graphs",
                budget: int | None = None, rank: int = 0, world: int = 1, pad: bool = True,
                workers: int = 0) -> GraphLoader:
    """A loader with batches of ``batch_size`` graphs, or (``batch_by`` atoms/edges) of about
    ``budget`` atoms/edges — by default ``batch_size`` times the mean graph size."""
    sizes = None
    if batch_by != "graphs":
        sizes = graphs.n_atoms if batch_by == "atoms" else graphs.n_edges
        if budget is None:
            budget = max(1, round(batch_size * float(sizes.float().mean()))) if len(sizes) else 1
    plan = BatchPlan(len(graphs), batch_size, sizes=sizes, budget=budget, shuffle=shuffle, generator=generator,
                     rank=rank, world=world, pad=pad)
    return GraphLoader(graphs, plan, workers)
