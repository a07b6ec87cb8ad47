"""The specimen archive, report and web server on the demo specimen.

Measures: the size of the demo specimen (database, files, export file); report generation time
against the floor of just reading every finding back (database + hash-checked files); page
latency p50/p99 of `mechscope serve` under a bounded concurrent load on loopback, against the
server's own floor (/api/health). Run alone: `python benchmarks/bench_specimens.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

import mechscope.archive  # noqa: E402
from mechscope.specimens.demo import run_demo  # noqa: E402
from mechscope.report.page import _BODIES, specimen_report  # noqa: E402
from mechscope.web.server import free_port  # noqa: E402


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load(base: str, paths: list[str], clients: int, requests: int) -> list[float]:
    def worker(i: int) -> list[float]:
        out = []
        with httpx.Client(base_url=base, timeout=120) as client:
            for j in range(requests):
                t = time.perf_counter()
                r = client.get(paths[(i + j) % len(paths)])
                r.raise_for_status()
                out.append(time.perf_counter() - t)
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [x for lat in pool.map(worker, range(clients)) for x in lat]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    run_demo("smollm2-135m", root / "demo", progress=False, archive=str(root / "arch"))
    arch = mechscope.archive.open(root / "arch")
    spec = arch.search(tag="demo")[0]
    # a finding stored without its figure (as an import or `figure=False` leaves it): a page must not draw it
    spec.add(spec.findings()[-1].result(), notes="stored without a figure", figure=False)
    db = sum(p.stat().st_size for p in (root / "arch").glob("archive.db*"))  # with the WAL
    files = dir_size(root / "arch" / "files")
    export = arch.export(spec.uid, root / "demo.mscope").stat().st_size

    def read_all():
        for f in spec.findings():
            f.result(), f.file("figure.png")

    rounds = 7
    floor = statistics.median([_timed(read_all) for _ in range(rounds)])
    def fresh_report():  # as `mechscope specimens report` runs: nothing rendered before
        _BODIES.clear()
        specimen_report(spec)

    report = statistics.median([_timed(fresh_report) for _ in range(rounds)])

    png = next(f.files["figure.png"][0] for f in spec.findings() if "figure.png" in f.files)
    pages = ["/", f"/specimens/{spec.uid}", f"/api/specimens/{spec.uid}", "/api/specimens", f"/?q={spec.name[:4]}",
             f"/compare?a={spec.uid}&b={spec.uid}", f"/files/{png}", f"/specimens/{spec.uid}?version=2"]
    with serving(root / "arch") as base:  # the server in its own process, as `mechscope serve` runs
        load(base, pages, 2, 3)  # warm up
        lat = load(base, pages, args.clients, args.requests)
        health = load(base, ["/api/health"], args.clients, args.requests)
    p50, p99, h50, h99 = pct(lat, 0.5), pct(lat, 0.99), pct(health, 0.5), pct(health, 0.99)
    md = "\n".join([
        "## Specimens: archive size, report, serve (cpu)", "",
        f"`python benchmarks/bench_specimens.py`: the `make demo` specimen ({len(spec.findings())} findings). "
        f"{machine(1, 'cpu')}.", "",
        "| measure | value | ratio |", "|---|---:|---:|",
        f"| archive database | {db / 1024:.0f} KiB | |",
        f"| archive files (safetensors + PNG, content-addressed) | {files / 1024:.0f} KiB | |",
        f"| export file (.mscope) | {export / 1024:.0f} KiB | |",
        f"| read every finding back (floor) | {floor * 1e3:.1f} ms | 1.00 |",
        f"| write the HTML report | {report * 1e3:.1f} ms | {report / floor:.2f} |",
        f"| serve (own process): mixed pages p50 / p99, {args.clients} clients × {args.requests} requests | "
        f"{p50 * 1e3:.1f} / {p99 * 1e3:.1f} ms | {p50 / h50:.2f} / {p99 / h99:.2f} |",
        f"| serve: /api/health p50 / p99 (floor) | {h50 * 1e3:.1f} / {h99 * 1e3:.1f} ms | 1.00 |",
    ])
    write_section("bench_specimens", md)
    print(md)


@contextmanager
def serving(location: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mechscope.cli", "serve", "--archive", str(location),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
