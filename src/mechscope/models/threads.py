"""How many threads torch uses for a command. torch's default (one per core) is fast on an idle machine
and 5-18x slower than one thread when any other process keeps a core busy (OpenMP threads wait on each
other: benchmarks/bench_threads.py measures it). The command line's default is the cores that are free
now — the core count less the 1-minute load average, at least 1 — unless ``--threads`` or
``$MECHSCOPE_THREADS`` says otherwise. ``import mechscope`` alone changes nothing."""

from __future__ import annotations

import os

import torch

ENV = "MECHSCOPE_THREADS"


def free_cores() -> tuple[int, float | None]:
    """(cores not busy now, the 1-minute load average; None where the platform has none)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores, None
    return max(1, min(cores, cores - int(load + 0.5))), load


def choose_threads(requested: int | str | None = None) -> tuple[int, str]:
    """(threads, why): ``requested`` (``--threads``), else ``$MECHSCOPE_THREADS``, else the free cores."""
    for value, source in ((requested, "--threads"), (os.environ.get(ENV), f"${ENV}")):
        if value is None or value == "":
            continue
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = 0
        if isinstance(value, bool) or n < 1:
            raise ValueError(f"{source}={value!r}: threads must be an integer ≥ 1")
        return n, f"set by {source}"
    n, load = free_cores()
    cores = os.cpu_count() or 1
    why = f"{cores} cores, load {load:.1f}" if load is not None else f"{cores} cores"
    return n, f"free cores ({why}); --threads or ${ENV} sets it"


def use_threads(requested: int | str | None = None) -> str:
    """Set torch's intra-op threads by ``choose_threads``; returns the line that says so."""
    n, why = choose_threads(requested)
    torch.set_num_threads(n)
    return f"threads: {n} ({why})"
