"""Data-parallel helpers for runs under ``torchrun`` (DDP: gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node=N script.py`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and a
rendezvous address; :func:`init_distributed` reads them and starts the process group.  Without
them everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(backend: Optional[str] = None) -> DistContext:
    """Start the process group when launched by torchrun with more than one process; return the context.

    ``backend`` defaults to nccl when CUDA is available, gloo otherwise.  On CUDA each process is
    pinned to ``cuda:LOCAL_RANK``.  Calling it again (or with the group already started) is harmless.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("launched by torchrun but this torch build has no torch.distributed support")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("the nccl backend needs CUDA; use backend='gloo' on CPU")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return context()


def context() -> DistContext:
    """The current rank / world size (rank 0 of 1 when no process group is running)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistContext()


def default_device(ctx: Optional[DistContext] = None) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    ctx = ctx or context()
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def barrier() -> None:
    if context().enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (in place, also returned); a no-op for a single process."""
    if context().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each forward, so after the last training step each rank
    still holds the statistics of its own last batch; this makes them equal to what rank 0 saves.
    """
    if context().enabled:
        for b in module.buffers():
            dist.broadcast(b, src=src)


def all_gather_object(obj: Any) -> List[Any]:
    """Gather a picklable object from every rank (``[obj]`` for a single process)."""
    ctx = context()
    if not ctx.enabled:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
