"""Verified fraction vs time: CROWN alone, branch and bound (CROWN + input splitting) and exact
MILP on robustness instances of trained ReLU networks, and the collision-avoidance VNNLIB instance.

Robustness: networks with 2 hidden ReLU layers of width w trained on 3 spirals (as in
bench_verify.py), L∞ balls of radius ε around test points; each instance is verified (class
cannot change), falsified (a confirmed counterexample) or unknown (CROWN: not decided; BaB, MILP:
time limit). "solved ≤ t": fraction of instances decided within t seconds (a VNN-COMP cactus plot
as a table). Run alone: `python benchmarks/bench_bab.py`."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_verify import spirals, trained  # noqa: E402
from common import machine, write_section  # noqa: E402

from mechscope.verify import as_network, check, robustness  # noqa: E402
from mechscope.verify.instances import write_instance  # noqa: E402
from mechscope.verify.onnx_io import load_onnx  # noqa: E402
from mechscope.verify.vnnlib import read_vnnlib  # noqa: E402

THREADS = 1
WIDTHS = (16, 32, 64)
EPSILONS = (0.05, 0.1)
POINTS = 15
BLOB_EPSILONS = (0.3, 0.6, 0.9)
BLOB_POINTS = 10
TIMEOUT = 5.0
CUTOFFS = (0.01, 0.1, 1.0, 5.0)
METHODS = ("crown", "bab", "milp")
HEADER = ["| method | verified | falsified | unknown | " + " | ".join(f"solved ≤ {c:g} s" for c in CUTOFFS) + " | total time |",
          "|---|---:|---:|---:|" + "---:|" * len(CUTOFFS) + "---:|"]


def blobs(n: int, seed: int, dim: int = 10, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian clusters in ``dim`` dimensions (fixed centres)."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, classes, (n,), generator=g)
    return centres[label] + 0.8 * torch.randn(n, dim, generator=g), label


def trained_blobs(width: int = 64) -> torch.nn.Sequential:
    torch.manual_seed(width)
    nn = torch.nn
    net = nn.Sequential(nn.Linear(10, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                        nn.ReLU(), nn.Linear(width, 5))
    x, y = blobs(5000, 0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(600):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def _rows(runs: dict) -> list[str]:
    n = len(runs["crown"])
    rows = []
    for m in METHODS:
        st = [s for s, _ in runs[m]]
        solved = [sum(1 for s, t in runs[m] if s != "unknown" and t <= c) / n for c in CUTOFFS]
        rows.append(f"| {m} | {st.count('verified') / n:.2f} | {st.count('falsified') / n:.2f} | "
                    f"{st.count('unknown') / n:.2f} | " + " | ".join(f"{v:.2f}" for v in solved)
                    + f" | {sum(t for _, t in runs[m]):.1f} s |")
    return rows


def _solve(runs: dict, net, points, epsilons) -> None:
    for eps in epsilons:
        for p in points:
            for m in METHODS:
                v = robustness(net, p, eps, method=m, timeout=TIMEOUT)
                runs[m].append((v.status, v.seconds))


def main() -> None:
    torch.set_num_threads(THREADS)
    points, _ = spirals(POINTS, 5)
    runs = {m: [] for m in METHODS}  # (status, seconds)
    for width in WIDTHS:
        _solve(runs, as_network(trained(width), 2, f"spirals-{width}"), points, EPSILONS)
        print(width, {m: [s for s, _ in r].count("verified") for m, r in runs.items()}, flush=True)
    n = len(runs["crown"])
    rows = _rows(runs)
    blob_runs = {m: [] for m in METHODS}
    blob_net = trained_blobs()
    bx, by = blobs(2000, 1)
    blob_acc = float((blob_net(bx).argmax(1) == by).float().mean())
    _solve(blob_runs, as_network(blob_net, 10, "blobs-10d"), bx[:BLOB_POINTS], BLOB_EPSILONS)
    print({m: [s for s, _ in r].count("verified") for m, r in blob_runs.items()}, flush=True)
    n_blob = len(blob_runs["crown"])
    blob_rows = _rows(blob_runs)
    with tempfile.TemporaryDirectory() as d:
        pairs, acc = write_instance(d)
        net = load_onnx(pairs[0][0])
        inst = []
        for _, prop_path in pairs:
            prop = read_vnnlib(prop_path)
            cells = []
            for m in METHODS:
                t = time.perf_counter()
                v = check(net, prop, m, timeout=30.0)
                cells.append(f"{v.status} {time.perf_counter() - t:.2f} s"
                             + (f" ({v.detail['boxes']} boxes)" if "boxes" in v.detail else ""))
            inst.append(f"| {prop.name} | " + " | ".join(cells) + " |")
            print(inst[-1], flush=True)
    lines = [
        "## Verification: verified fraction vs time (CROWN, branch and bound, MILP)",
        "",
        f"`benchmarks/bench_bab.py` · {machine(THREADS, 'cpu')} · {n} robustness instances: spiral networks of width "
        f"{', '.join(map(str, WIDTHS))} (2 hidden ReLU layers) × ε ∈ {{{', '.join(map(str, EPSILONS))}}} × {POINTS} "
        f"points; time limit {TIMEOUT:g} s per instance.",
        "",
        *HEADER,
        *rows,
        "",
        f"Harder: {n_blob} instances on a 10-input network (3 hidden ReLU layers of 64, 5 overlapping Gaussian "
        f"classes, test accuracy {blob_acc:.2f}), ε ∈ {{{', '.join(map(str, BLOB_EPSILONS))}}} × {BLOB_POINTS} points "
        "(input splitting has 10 dimensions to cut):",
        "",
        *HEADER,
        *blob_rows,
        "",
        f"Collision-avoidance instance (`mechscope verify --example`: 5 inputs, 6×50 ReLU, 5 scores; accuracy "
        f"{acc:.3f} on its policy; time limit 30 s):",
        "",
        "| property | CROWN | BaB | MILP |",
        "|---|---|---|---|",
        *inst,
    ]
    write_section("bab", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
