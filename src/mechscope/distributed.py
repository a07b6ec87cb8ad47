"""Work split across processes: under ``torchrun`` (an initialised ``torch.distributed`` group) a
sweep's items are divided among ranks and the per-item results gathered back in order, so every
rank returns the same result one process would. One helper for every analysis: ``share`` gives this
rank its contiguous part of n items, ``gather`` concatenates the parts in rank order, ``total`` sums
per-rank partial sums. Without a process group all three are identities (one process does everything).

``group(device)`` joins and leaves the process group around a command (NCCL on GPUs, gloo on CPU),
choosing this rank's GPU from LOCAL_RANK.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(n: int) -> range:
    """This rank's items of ``n``: contiguous, in rank order, sizes differing by at most one."""
    return _range(*rank_world(), n)


def gather(part: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's ``part`` [its share of n, ...] concatenated in rank order: [n, ...] on every rank."""
    import torch.distributed as dist

    rank, world = rank_world()
    if world == 1:
        return part
    sizes = [len(_range(r, world, n)) for r in range(world)]
    padded = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=part.device)
    padded[:len(part)] = part
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def total(t: torch.Tensor) -> torch.Tensor:
    """The sum of every rank's ``t`` (same shape on all), on every rank."""
    import torch.distributed as dist

    if rank_world()[1] > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def _range(rank: int, world: int, n: int) -> range:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


@contextmanager
def group(device: str | None = None) -> Iterator[str | None]:
    """Under torchrun (WORLD_SIZE > 1): join the process group for the block, yield this rank's
    device, and leave the group after it (a rank exiting with its group open can abort in gloo)."""
    import torch.distributed as dist

    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if joined:
        if device and device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group("nccl" if device and device.startswith("cuda") else "gloo")
    try:
        yield device
    finally:
        if joined:
            dist.destroy_process_group()
