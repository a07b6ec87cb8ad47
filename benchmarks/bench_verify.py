"""Output bounds of trained ReLU networks of growing width: IBP vs CROWN vs exact MILP — time and
looseness (bound width over the exact range's width, averaged over outputs and boxes).

Networks: 2 hidden layers of width w, trained to classify 2-D points of 3 interleaved spirals
(so the ReLUs are really used); boxes: L∞ balls of radius 0.05 around 5 test points.
Run alone: `python benchmarks/bench_verify.py`."""

from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

from mechscope.verify import as_network, crown_intervals, exact_intervals, ibp_intervals  # noqa: E402

THREADS = 1
WIDTHS = (8, 16, 32, 64)
EPS = 0.05


def spirals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    r = torch.rand(n, generator=g)
    angle = 4 * r + label * 2.094 + 0.2 * torch.randn(n, generator=g)
    return torch.stack([r * angle.cos(), r * angle.sin()], 1), label


def trained(width: int) -> nn.Sequential:
    torch.manual_seed(width)
    net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
    x, y = spirals(4000, 0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(800):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def main() -> None:
    torch.set_num_threads(THREADS)
    points, _ = spirals(5, 1)
    rows = []
    for width in WIDTHS:
        net = trained(width)
        xt, yt = spirals(1000, 2)
        acc = float((net(xt).argmax(1) == yt).float().mean())
        layers = as_network(net, 2)
        times = {"IBP": 0.0, "CROWN": 0.0, "MILP": 0.0}
        loose = {"IBP": 0.0, "CROWN": 0.0}
        for p in points:
            widths = {}
            for name, fn in (("IBP", ibp_intervals), ("CROWN", crown_intervals), ("MILP", exact_intervals)):
                t = time.perf_counter()
                b_lo, b_hi, _ = fn(layers, p - EPS, p + EPS)
                times[name] += time.perf_counter() - t
                widths[name] = b_hi - b_lo
            for name in loose:
                loose[name] += float((widths[name] / widths["MILP"].clamp(min=1e-9)).mean()) / len(points)
        rows.append((width, acc, times, loose))
        print(rows[-1], flush=True)
    lines = [
        "## Verification: IBP vs CROWN vs exact MILP on trained ReLU networks",
        "",
        f"`benchmarks/bench_verify.py` · {machine(THREADS, 'cpu')} · 2 hidden layers of width w trained on 3 spirals; "
        f"L∞ boxes of radius {EPS} around 5 points; times summed over the 5 boxes (all outputs), looseness = bound "
        "width / exact width (1 = exact), mean over outputs and boxes.",
        "",
        "| width | test acc | IBP time | CROWN time | MILP time | IBP looseness | CROWN looseness |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {w} | {a:.2f} | {t['IBP'] * 1e3:.2f} ms | {t['CROWN'] * 1e3:.2f} ms | {t['MILP']:.2f} s | "
          f"{lz['IBP']:.2f}× | {lz['CROWN']:.2f}× |" for w, a, t, lz in rows],
    ]
    write_section("verify", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
