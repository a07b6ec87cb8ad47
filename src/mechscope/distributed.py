"""Work split across processes: under ``torchrun`` (an initialised ``torch.distributed`` group) a
sweep's items are divided among ranks and the per-item results gathered back in order, so every
rank returns the same result one process would. One helper for every analysis: ``sweep`` cuts n
items into chunks, deals them round the ranks and gathers the results in order (a chunk is the same
whatever the number of ranks, so the result is bit for bit one process's). Underneath, ``gather``
concatenates per-rank parts, ``share`` gives this rank a contiguous part of n items (the harvest's
blocks) and ``total`` sums per-rank partial sums. Without a process group they are identities (one
process does everything).

Long runs resume: inside ``records(directory)`` every chunk a sweep finishes is written at once
(a temporary name, then a rename: a file is whole or absent), and a rerun of the same sweep — a
restart under ``torchrun --max-restarts`` after a rank died, or the script run again — loads the
finished chunks instead of computing them.

``group(device)`` joins and leaves the process group around a command (NCCL on GPUs, gloo on CPU),
choosing this rank's GPU from LOCAL_RANK.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from .files import write_atomic

_RECORDS: ContextVar[Path | None] = ContextVar("mechscope_records", default=None)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(n: int) -> range:
    """This rank's items of ``n``: contiguous, in rank order, sizes differing by at most one."""
    return _range(*rank_world(), n)


def gather(part: torch.Tensor | None, n: int, sizes: list[int] | None = None) -> torch.Tensor:
    """Every rank's ``part`` [its share of n, ...] concatenated in rank order: [n, ...] on every rank
    (a rank with no items may pass None). ``sizes``: each rank's part length, where the shares are
    not ``share(n)``'s."""
    import torch.distributed as dist

    rank, world = rank_world()
    if world == 1:
        return part if part is not None else torch.zeros(0)
    like = [None] * world  # every rank learns the parts' trailing shape and dtype (a rank may have none)
    dist.all_gather_object(like, None if part is None else (tuple(part.shape[1:]), part.dtype))
    shape, dtype = next(x for x in like if x is not None)
    sizes = sizes or [len(_range(r, world, n)) for r in range(world)]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((max(sizes), *shape), dtype=dtype, device=device)  # on the backend's device (NCCL: this GPU)
    if part is not None:
        padded[:len(part)] = part.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.cat([p[:s] for p, s in zip(parts, sizes)])
    return out.to(part.device) if part is not None else out.cpu()


def gather_objects(part: list) -> list:
    """Every rank's ``part`` (a list of picklable objects: its ``share(n)``) concatenated in rank order, on
    every rank — for sweeps whose items are not tensors (explanations, chat answers)."""
    import torch.distributed as dist

    rank, world = rank_world()
    if world == 1:
        return list(part)
    parts: list = [None] * world
    dist.all_gather_object(parts, list(part))
    return [x for p in parts for x in p]


def total(t: torch.Tensor) -> torch.Tensor:
    """The sum of every rank's ``t`` (same shape on all), on every rank."""
    import torch.distributed as dist

    if rank_world()[1] > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        out = t.to(device, copy=True)
        dist.all_reduce(out)
        return out.to(t.device)
    return t


@contextmanager
def records(directory: str | os.PathLike) -> Iterator[Path]:
    """Within the block every ``sweep`` keeps its finished chunks under ``directory`` (one folder per
    sweep, named by what it computes and a hash of its inputs) and reuses them when run again. Give
    every rank the same directory (on several nodes: a shared one, or each node its own — a rank's
    chunks depend only on its rank and the world size). Delete a sweep's folder to compute it afresh."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    token = _RECORDS.set(path)
    try:
        yield path
    finally:
        _RECORDS.reset(token)


def sweep(n: int, compute: Callable[[range], torch.Tensor], *, key: str, per: int = 1, desc: str = "sweep",
          progress: bool = False) -> torch.Tensor:
    """``compute`` over items 0 … n−1, as [n, ...] on every rank. The items are cut into chunks of
    ``per`` (``compute(range)`` -> [len(range), ...], on any device); rank r computes chunks r,
    r + world, … (early and late chunks of a layered sweep cost differently: dealt round the ranks,
    they balance) and the parts are gathered back in order. A chunk is the same whatever the number
    of ranks, so the result is too. ``key`` names everything the results depend on (model, task,
    parameters): inside ``records(...)`` a chunk finished under the same key is loaded, not computed."""
    chunks = [range(i, min(i + per, n)) for i in range(0, n, per)]
    rank, world = rank_world()
    if n == 0:
        return torch.zeros(0)
    folder = _record_folder(desc, key)
    parts: list[torch.Tensor] = []
    for chunk in tqdm(chunks[rank::world], desc=desc, disable=not progress or rank != 0):
        path = folder / f"{chunk.start:09d}-{chunk.stop:09d}.pt" if folder is not None else None
        done = _load_record(path, len(chunk), parts[0] if parts else None) if path is not None and path.exists() \
            else None
        if done is None:
            done = compute(chunk).detach().cpu()
            if path is not None:
                _save_record(path, done)
        parts.append(done)
    if world == 1:
        return torch.cat(parts) if parts else torch.zeros(0)
    sizes = [sum(len(c) for c in chunks[r::world]) for r in range(world)]
    every = gather(torch.cat(parts) if parts else None, n, sizes)  # rank-major (None: more ranks than chunks)
    pieces = every.split([len(c) for r in range(world) for c in chunks[r::world]])
    order = [i for r in range(world) for i in range(r, len(chunks), world)]  # the chunk each piece is
    return torch.cat([piece for _, piece in sorted(zip(order, pieces), key=lambda p: p[0])])


def recording() -> bool:
    """True inside ``records(...)``: sweeps keep progress records (callers may skip building a costly key otherwise)."""
    return _RECORDS.get() is not None


def _record_folder(desc: str, key: str) -> Path | None:
    root = _RECORDS.get()
    if root is None:
        return None
    if not key:
        raise ValueError(f"sweep {desc!r} has no key: inside records(...) a sweep must name what its results depend on")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", desc).strip("-") or "sweep"
    folder = root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _digest(value: torch.Tensor) -> str:
    raw = value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(str((value.dtype, tuple(value.shape))).encode() + raw).hexdigest()


def _save_record(path: Path, value: torch.Tensor) -> None:
    write_atomic(path, lambda tmp: torch.save({"value": value, "sha256": _digest(value)}, tmp))


def _load_record(path: Path, rows: int, like: torch.Tensor | None) -> torch.Tensor | None:
    """A finished chunk, verified: tensors only (loading never runs code), ``rows`` rows, the digest it
    was written with (so altered values, NaN included, are caught), and the trailing shape and dtype of
    the sweep's other parts (``like``). Anything else is None — with a warning — and computed again."""
    def refuse(why: str) -> None:
        warnings.warn(f"progress record {path} {why}; computing that chunk again", stacklevel=4)

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable record is recomputed
        return refuse(f"is unreadable ({type(e).__name__})")
    value = saved.get("value") if isinstance(saved, dict) else None
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return refuse("holds no chunk (a record is {value: tensor, sha256})")
    if value.shape[0] != rows:
        return refuse(f"has {value.shape[0]} rows; its chunk has {rows}")
    if like is not None and (value.dtype != like.dtype or value.shape[1:] != like.shape[1:]):
        return refuse(f"is {value.dtype} {tuple(value.shape[1:])} per row; the sweep's other chunks are "
                      f"{like.dtype} {tuple(like.shape[1:])}")
    if saved.get("sha256") != _digest(value):
        return refuse("does not match the digest it was written with (altered or damaged)")
    return value


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
        backend = "nccl" if device and device.startswith("cuda") else "gloo"
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        if attempt == "0":
            dist.init_process_group(backend)
        else:  # a restart (torchrun --max-restarts): a fresh key space, or ranks may read the dead attempt's addresses
            store, rank, world = next(dist.rendezvous("env://"))
            dist.init_process_group(backend, store=dist.PrefixStore(f"mechscope/attempt-{attempt}", store),
                                    rank=rank, world_size=world)
    try:
        yield device
    finally:
        if joined:
            dist.destroy_process_group()
