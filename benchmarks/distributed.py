"""Sweeps split across processes: an activation-patching sweep (every head) and EAP-IG on SmolLM2's
IOI task with 1 and 2 gloo processes of 1 torch thread each (`mechscope.distributed`), on this
machine alone. The ratio shows the speed-up net of dividing and gathering (each rank also loads the
model and runs the task's shared forwards). `.venv/bin/python benchmarks/distributed.py`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        import mechscope as ms
        from mechscope.circuits import eap_ig
        from mechscope.components.patching import activation_patching
        from mechscope.tasks import make_task

        model = ms.load("smollm2-135m")
        task = make_task("ioi", model, n=8, seed=0).solved_by(model)
        times = {}
        for name, fn in (("patching every head", lambda: activation_patching(model, task, "heads", progress=False)),
                         ("EAP-IG, 5 steps", lambda: eap_ig(model, task, steps=5, batch_size=5, progress=False))):
            dist.barrier()
            t = time.perf_counter()
            fn()
            dist.barrier()
            times[name] = time.perf_counter() - t
        if rank == 0:
            Path(out, f"world{world}.json").write_text(json.dumps({"times": times, "pairs": len(task)}))
    finally:
        dist.destroy_process_group()


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    results = {}
    for world in (1, 2):
        mp.spawn(_worker, args=(world, str(folder / f"init{world}"), str(folder)), nprocs=world, join=True)
        results[world] = json.loads((folder / f"world{world}.json").read_text())
        print(world, results[world], flush=True)
    md = [f"SmolLM2-135M, IOI ({results[1]['pairs']} pairs the model solves); gloo processes of 1 torch thread each; "
          f"{machine(1, 'cpu')}.", "", "| sweep | 1 process | 2 processes | speed-up |", "|---|---:|---:|---:|"]
    for name, one in results[1]["times"].items():
        two = results[2]["times"][name]
        md.append(f"| {name} | {one:.1f} s | {two:.1f} s | {one / two:.2f}× |")
    write_section("distributed", "## Sweeps across processes (torch.distributed, gloo)\n\n" + "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
