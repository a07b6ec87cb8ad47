"""Torch threads on a shared machine: the same SmolLM2 work (a batch of forwards, 4 × 64 tokens, as an
ablation scan runs them) timed with 1 thread and with one per core, on an idle machine and while one
other process keeps a core busy; and what the command line's default (``models.threads``: the free
cores) chooses in each case. Run alone: `python benchmarks/bench_threads.py`."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.models.threads import choose_threads  # noqa: E402


def _busy(stop) -> None:  # another user's process: one core, all the time
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _seconds(model, inputs, threads: int, rounds: int = 3) -> float:
    torch.set_num_threads(threads)
    with torch.no_grad():
        model.hf(**inputs, use_cache=False)  # warm-up
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(4):
                model.hf(**inputs, use_cache=False)
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    model = ms.load("smollm2-135m")
    tokens = torch.randint(100, 20_000, (4, 64), generator=torch.Generator().manual_seed(0))
    inputs = model.hf_inputs(tokens, torch.ones_like(tokens))
    cores = os.cpu_count() or 1
    rows = []
    for condition in ("idle", "one other busy process"):
        stop = multiprocessing.Event()
        others = [] if condition == "idle" else [multiprocessing.Process(target=_busy, args=(stop,))]
        for p in others:
            p.start()
        if others:
            time.sleep(65)  # let the 1-minute load average see it, as the default reads it
        else:  # idle: wait (up to 8 min) for the load of whatever ran before to decay
            deadline = time.time() + 480
            while os.getloadavg()[0] > 0.4 and time.time() < deadline:
                time.sleep(10)
        default, why = choose_threads()
        one, every = _seconds(model, inputs, 1), _seconds(model, inputs, cores)
        stop.set()
        for p in others:
            p.join()
        chosen = one if default == 1 else every if default == cores else _seconds(model, inputs, default)
        rows.append((condition, one, every, default, why.split(";")[0], chosen))
    lines = ["## Torch threads on a shared machine (`bench_threads.py`)", "",
             f"{machine(cores, 'cpu')}; SmolLM2-135M, 4 forwards of 4 × 64 tokens (median of 3).", "",
             f"| machine | 1 thread | {cores} threads (torch's default) | {cores} ÷ 1 | the command line's default | its time |",
             "|---|---:|---:|---:|---|---:|"]
    for condition, one, every, default, why, chosen in rows:
        lines.append(f"| {condition} | {one:.2f} s | {every:.2f} s | {every / one:.2f}× | {default} ({why}) | "
                     f"{chosen:.2f} s |")
    lines += ["", "The default is the cores the 1-minute load average leaves free (at least one); "
              "`--threads N` or `$MECHSCOPE_THREADS` overrides it."]
    write_section("threads", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
