"""Feature visualization on EfficientNet-Lite0: steps/s of `mechscope.vision.visualize` vs a
minimal plain-PyTorch loop doing the same work (Fourier image, the same transforms, a forward hook
on the module, Adam) — the floor; goal ≥ 0.9 (visualize stops the forward at the objective's module; the plain loop runs the whole
network, as a hand-written loop with a hook does). Run alone: `python benchmarks/bench_vision.py`."""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

from mechscope.vision import efficientnet_lite0, visualize  # noqa: E402
from mechscope.vision.featurevis import FourierImage, transform  # noqa: E402

THREADS = 1
STEPS = 48
TARGET, CHANNEL = "_blocks.10", 17


def plain(model, steps: int) -> None:
    g = torch.Generator().manual_seed(0)
    param = FourierImage(224, generator=g)
    opt = torch.optim.Adam(param.parameters(), lr=0.05)
    got = {}
    handle = model.modules[TARGET].register_forward_hook(lambda m, i, o: got.__setitem__("a", o))
    try:
        for _ in range(steps):
            x = (transform(param(), 224, g) - model.mean) / model.std
            model.module(x)
            loss = -got["a"][:, CHANNEL].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        handle.remove()


def main() -> None:
    torch.set_num_threads(THREADS)
    model = efficientnet_lite0()
    natural = torch.rand(1, 3, 224, 224)  # the comparison with photos is not what is timed
    fns = {"mechscope visualize": lambda: visualize(model, f"{TARGET}:{CHANNEL}", steps=STEPS, progress=False,
                                                     natural=natural),
           "plain PyTorch loop": lambda: plain(model, STEPS)}
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(3):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    rate = {k: STEPS / v for k, v in best.items()}
    ratio = rate["mechscope visualize"] / rate["plain PyTorch loop"]
    lines = ["## Feature visualization (`bench_vision.py`)", "",
             f"{machine(THREADS, 'cpu')}. EfficientNet-Lite0, channel {CHANNEL} of {TARGET}, 224 px, Fourier "
             f"parameterisation + Lucid's transforms, Adam; {STEPS} steps, best of 3 interleaved rounds. mechscope "
             "stops each forward at the objective's module; the plain loop (a forward hook) runs the whole network.",
             "",
             "| loop | steps/s |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in rate.items()]
    lines += ["", f"mechscope ÷ plain loop: **{ratio:.2f}×** (goal ≥ 0.9)."]
    write_section("vision", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
