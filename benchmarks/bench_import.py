"""Importing a large specimen export: time and peak memory of `Archive.import_file` on a ~100 MB file.

The import streams every file to a staging file while hashing it (never the whole export in
memory); the floor copies the same file into the archive's folder in 1 MiB chunks and fsyncs it.
`--before SRC` also runs an older mechscope (its `src` folder, e.g. a `git worktree` of an
earlier commit) on the same file for a side-by-side row. Run alone:
`python benchmarks/bench_import.py [--mb 100] [--before /tmp/before/src]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

CHILD = r"""
import json, os, sys, threading, time
import torch
torch.set_num_threads(1)
import mechscope.archive
arch = mechscope.archive.open(sys.argv[1])
mode, path = sys.argv[2], sys.argv[3]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, done = [rss()], threading.Event()
def sample():  # the resident set every 2 ms: ru_maxrss would report the start-up peak instead
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
base = rss()
watcher = threading.Thread(target=sample)
watcher.start()
t = time.perf_counter()
if mode == "import":
    arch.import_file(path)
else:  # the floor: copy the file into the archive's folder and fsync it, as any import must
    with open(path, "rb") as f, open(os.path.join(sys.argv[1], "copy"), "wb") as out:
        while chunk := f.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
seconds = time.perf_counter() - t
done.set()
watcher.join()
print(json.dumps({"seconds": seconds, "peak_mb": max(peak[0], rss()) / 2**20, "before_mb": base / 2**20}))
"""


def child(src: str | None, archive: Path, mode: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=src) if src else dict(os.environ)
    out = subprocess.run([sys.executable, "-c", CHILD, str(archive), mode, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--before", help="the src folder of an earlier mechscope to compare with")
    args = parser.parse_args()
    import mechscope.archive
    from mechscope.results import Provenance
    from mechscope.sae.trainer import TrainingLog

    root = Path(tempfile.mkdtemp())
    rows = args.mb * (1 << 20) // (7 * 4)
    log = TrainingLog(Provenance("bench", "f0"), "topk", 32, ["step", "tokens", "loss", "fvu", "l0", "dead", "lr"],
                      torch.rand(rows, 7, generator=torch.Generator().manual_seed(0)))
    src = mechscope.archive.open(root / "source")
    spec = src.create("large")
    spec.add(log, figure=False)
    export = src.export(spec.uid, root / "large.mscope")
    size = export.stat().st_size
    runs = [("copy the file and fsync (floor)", None, "copy"), ("import (streaming)", None, "import")]
    if args.before:
        runs.append(("import (before: whole file in memory)", args.before, "import"))
    results = []
    for i, (name, code, mode) in enumerate(runs):
        r = child(code, root / f"target{i}", mode, export)
        results.append((name, r))
        print(name, r, flush=True)
    floor = results[0][1]
    md = ["## Specimens: importing a large export (cpu)", "",
          f"`python benchmarks/bench_import.py`: one finding with a {size / 2**20:.0f} MiB tensors file "
          f"(export {size / 2**20:.0f} MiB). Each row in a fresh process; memory is the peak resident set during the call "
          f"(sampled every 2 ms) above the resident set before it. {machine(1, 'cpu')}.", "",
          "| run | seconds | ratio | peak memory added |", "|---|---:|---:|---:|"]
    for name, r in results:
        md.append(f"| {name} | {r['seconds']:.2f} | {r['seconds'] / floor['seconds']:.2f} | "
                  f"{max(0.0, r['peak_mb'] - r['before_mb']):.0f} MiB |")
    text = "\n".join(md)
    write_section("bench_import", text)
    print(text)


if __name__ == "__main__":
    main()
