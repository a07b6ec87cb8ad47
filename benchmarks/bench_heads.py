"""Head detectors on SmolLM2: the time to score all 270 heads (one forward caching every pattern,
8 × 100 repeated random tokens) against the plain HF forward on the same tokens, and the whole
`detect_heads` with its ablation evidence. Run alone: `python benchmarks/bench_heads.py`."""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, machine, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.components.heads import detect_heads, head_circuits, pattern_scores, repeated_random_tokens  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    model = ms.load("smollm2-135m")
    tokens = repeated_random_tokens(model, 8, 50)
    inputs = model.hf_inputs(tokens, torch.ones_like(tokens))

    def plain():
        with torch.no_grad():
            model.hf(**inputs, use_cache=False)

    def scores():
        run = model.run(tokens, cache="blocks.*.attn.pattern")
        pattern_scores({l: run.cache[f"blocks.{l}.attn.pattern"] for l in range(model.cfg.n_layers)}, 50)

    t = interleaved({"plain": plain, "scores": scores}, rounds=5, device="cpu")
    start = time.perf_counter()
    detect_heads(model)
    full = time.perf_counter() - start
    start = time.perf_counter()
    head_circuits(model)
    weights = time.perf_counter() - start
    md = "\n".join([
        "## Head detectors (cpu)", "",
        f"`python benchmarks/bench_heads.py`: SmolLM2, all 270 heads, 8 × 100 repeated random tokens. {machine(1, 'cpu')}.",
        "", "| measure | seconds | / plain HF forward |", "|---|---:|---:|",
        f"| plain HF forward (sdpa) | {t['plain']:.2f} | 1.00 |",
        f"| previous/duplicate/induction scores of all heads | {t['scores']:.2f} | {t['scores'] / t['plain']:.2f} |",
        f"| detect_heads with evidence (top-5 zero/mean, 5 random draws each: 13 forwards) | {full:.2f} | "
        f"{full / t['plain']:.1f} |",
        f"| head_circuits: copying of 270 heads + Q/K/V composition of all earlier→later pairs (weights only) | "
        f"{weights:.2f} | {weights / t['plain']:.1f} |",
    ])
    write_section("bench_heads", md)
    print(md)


if __name__ == "__main__":
    main()
