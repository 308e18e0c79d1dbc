"""Distributed data-parallel training on PyTorch's own engine (``torch.distributed`` + DDP).

A run is distributed when it is started by ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment): ``torchrun --nproc_per_node N -m matgnn train CONFIG`` on one machine, or
with ``--nnodes``/``--rdzv-endpoint`` across machines. The backend is NCCL when the run
trains on CUDA (each process on GPU ``LOCAL_RANK``) and gloo on CPU.

What each rank does: rank 0 builds the graph cache while the others wait, then all open
it; rank 0 makes the run folder and the split and sends them to the others; each rank
trains on its shard of every global batch (:class:`matgnn.graphs.batching.BatchPlan`)
with gradients averaged by DDP; losses and validation errors are summed over ranks; only
rank 0 writes (config, history, TensorBoard, checkpoints, model, predictions, metrics).
A checkpoint resumes under DDP with ``--resume RUN`` given to every rank.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    """Rank, world size and local rank as torchrun sets them (single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, use_cuda: bool) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    if info.enabled and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(device)
        # a generous timeout: the other ranks wait at a barrier while rank 0 builds the graph cache
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=6))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of parameters that live outside the DDP module."""
    if not active():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


class NormalizedForward(torch.nn.Module):
    """``model.forward_normalized`` as a module's ``forward``, so DDP can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.model.forward_normalized(batch)
