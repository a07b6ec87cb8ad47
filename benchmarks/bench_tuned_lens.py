"""Tuned lens on SmolLM2: train on Shakespeare (training works), compare with the logit lens on
held-out works (KL per layer), report time; writes the figure beside RESULTS.md.
Run alone: `python benchmarks/bench_tuned_lens.py [--steps 80] [--every 2]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.data import token_blocks  # noqa: E402
from mechscope.lenses.tuned import compare_lenses, train_tuned_lens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--every", type=int, default=2, help="train a translator for every k-th layer")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ms.load("smollm2-135m")
    layers = list(range(0, model.cfg.n_layers - 1, args.every))
    train = token_blocks(model.tokenizer, 2000, 64, "train")
    test = token_blocks(model.tokenizer, 32, 64, "test")
    t = time.perf_counter()
    fit = train_tuned_lens(model, train, layers=layers, steps=args.steps, batch_size=2)
    lens, losses = fit.lens, fit.losses
    seconds = time.perf_counter() - t
    result = compare_lenses(model, lens, test, losses)
    fig = Path(__file__).with_name("tuned_lens.png")
    fig.write_bytes(result.png_bytes())
    rows = ["| layer | logit lens KL | tuned lens KL |", "|---:|---:|---:|"] + [
        f"| {l} | {float(a):.2f} | {float(b):.2f} |" for l, a, b in zip(result.layers, result.logit_kl, result.tuned_kl)]
    md = "\n".join([
        "## Tuned lens vs logit lens, SmolLM2 (cpu)", "",
        f"`python benchmarks/bench_tuned_lens.py --steps {args.steps} --every {args.every}`: {len(layers)} translators, "
        f"{args.steps} steps of 2 × 64 tokens (SGD-Nesterov, lr 1 → 0), trained in {seconds:.0f} s; held-out KL over "
        f"{result.tokens} tokens of works never trained on. {machine(args.threads, 'cpu')}. Figure: `tuned_lens.png`.",
        "", result.summary(), "", *rows,
    ])
    write_section("bench_tuned_lens", md)
    print(md)


if __name__ == "__main__":
    main()
