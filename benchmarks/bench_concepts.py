"""Concepts on SmolLM2: (1) a probe sweep over all 30 layers with activations cached once (one pass
over the prompts, all sites kept at the probed position) vs recomputed per layer (one pass per
layer); (2) steered generation tokens/s vs plain generation (goal ≥ 0.9), and vs HF's own
`generate` on the same weights (the floor). Run alone: `python benchmarks/bench_concepts.py`."""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

from mechscope.models.load import load  # noqa: E402
from mechscope.concepts.datasets import sentiment_dataset  # noqa: E402
from mechscope.concepts.probes import activations, probe_sweep  # noqa: E402
from mechscope.concepts.steering import control_vector, sentiment_pairs  # noqa: E402

THREADS = 1
NEW_TOKENS = 32
PROMPTS = ["I went to the market this morning and", "The weather today is", "My opinion of the book is that it",
           "When I got home from work,"]


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    torch.set_num_threads(THREADS)
    model = load("smollm2-135m")
    data = sentiment_dataset()
    sites = [f"blocks.{i}.resid_post" for i in range(model.cfg.n_layers)]
    t = time.perf_counter()
    sweep = probe_sweep(model, data, "blocks.*.resid_post", progress=False)
    cached = time.perf_counter() - t
    t = time.perf_counter()
    for site in sites:  # what a per-layer loop does: one pass over the prompts per layer
        activations(model, data, site, progress=False)
    recompute_acts = time.perf_counter() - t
    t = time.perf_counter()
    acts, _ = activations(model, data, "blocks.*.resid_post", progress=False)
    once_acts = time.perf_counter() - t
    fit = cached - once_acts
    recomputed = recompute_acts + fit
    print(sweep.summary(), flush=True)

    cv = control_vector(model, sentiment_pairs(), "blocks.10.resid_post")
    ids, mask = model.tokenize(PROMPTS)
    tokens = NEW_TOKENS * len(PROMPTS)

    def hf_floor():
        inputs = model.hf_inputs(ids, mask)
        inputs.pop("position_ids")
        with torch.no_grad():
            model.hf.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                              pad_token_id=model.pad_id)

    gen = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    rows = {
        "HF generate (floor)": timed(hf_floor),
        "mechscope plain": timed(lambda: model.generate(PROMPTS, **gen)),
        "steered, all positions (Add)": timed(lambda: model.generate(PROMPTS, interventions=cv.interventions(1.0), **gen)),
        "steered, after the prompt": timed(lambda: model.generate(PROMPTS, interventions=cv.interventions(
            1.0, after_prompt=True), **gen)),
    }
    plain = rows["mechscope plain"]
    lines = [
        "## Concepts: probe sweeps and steered generation (SmolLM2-135M)",
        "",
        f"`benchmarks/bench_concepts.py` · {machine(THREADS, 'cpu')}",
        "",
        f"Probe sweep, {len(data.prompts)} sentiment prompts × {len(sites)} layers (logistic probes + control task):",
        "",
        "| | activations | probes | total | speed-up |",
        "|---|---:|---:|---:|---:|",
        f"| cached once (`probe_sweep`) | {once_acts:.1f} s | {fit:.1f} s | {cached:.1f} s | "
        f"{recomputed / cached:.1f}× |",
        f"| recomputed per layer | {recompute_acts:.1f} s | {fit:.1f} s | {recomputed:.1f} s | 1.0× |",
        "",
        f"Generation, {len(PROMPTS)} prompts × {NEW_TOKENS} new tokens, greedy, KV cache (best of 3):",
        "",
        "| | seconds | tokens/s | vs mechscope plain |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {sec:.2f} | {tokens / sec:.1f} | {plain / sec:.2f} |" for name, sec in rows.items()],
    ]
    write_section("concepts", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
