"""Attribution speed and memory against the peers.

  - integrated gradients on SmolLM2, same steps (64, Gauss–Legendre) and internal batch (16),
    mechscope `token_ig` vs Captum's LayerIntegratedGradients on the embedding layer: goal ≤ 1.0
  - KernelSHAP vs shap's KernelExplainer (l1_reg=False) at the same number of model evaluations on
    a tabular function with 12 features: time ratio (goal ≤ 0.5) and the error against exact values
  - peak memory of IG at 64 steps with internal batching (8) vs without (64), each in a fresh process
Run alone: `python benchmarks/bench_attribution.py [--threads 1]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, reset_peak_rss, status_kb, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.attribution import kernel_shap_values, shapley_values, tabular_value_fn, token_ig  # noqa: E402

PROMPT, TARGET = "The capital of France is", " Paris"


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def ig_vs_captum(model, steps: int, batch: int, repeats: int) -> tuple[float, float, float]:
    from captum.attr import LayerIntegratedGradients

    ids, mask = model.tokenize(PROMPT)
    kw = model.hf_inputs(ids, mask)
    tid = model.tokenizer(TARGET, add_special_tokens=False)["input_ids"][0]

    def forward(input_ids):
        n = input_ids.shape[0]
        return model.hf(input_ids=input_ids, attention_mask=kw["attention_mask"].expand(n, -1),
                        position_ids=kw["position_ids"].expand(n, -1), use_cache=False).logits[:, -1, tid]

    lig = LayerIntegratedGradients(forward, model.hf.get_input_embeddings())
    base = torch.full_like(ids, model.pad_id)
    ours = lambda: token_ig(model, PROMPT, TARGET, steps=steps, batch_size=batch)  # noqa: E731
    theirs = lambda: lig.attribute(ids, baselines=base, n_steps=steps, internal_batch_size=batch,  # noqa: E731
                                   return_convergence_delta=True)
    ours(), theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):  # interleaved
        t_ours.append(timed(ours, 1))
        t_theirs.append(timed(theirs, 1))
    a = ours().scores
    b = theirs()[0][0].sum(-1).float()
    return statistics.median(t_ours), statistics.median(t_theirs), float((a - b).abs().max())


def shap_vs_kernelexplainer(budget: int, repeats: int) -> list[str]:
    import shap

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(12, 8)), rng.normal(size=8)
    f = lambda r: np.tanh(r @ w1) @ w2  # noqa: E731
    x, bg = rng.normal(size=12), rng.normal(size=(1, 12))
    v = tabular_value_fn(f, x, bg)
    exact, *_ = shapley_values(v, 12)
    scale = np.abs(exact).max()
    explainer = shap.KernelExplainer(f, bg)
    ours_t = timed(lambda: kernel_shap_values(v, 12, budget=budget), repeats)
    theirs_t = timed(lambda: explainer.shap_values(x, nsamples=budget, l1_reg=False, silent=True), repeats)
    errs_ours = [np.abs(kernel_shap_values(v, 12, budget=budget, seed=s)[0] - exact).max() / scale for s in range(5)]
    errs_theirs = []
    for s in range(5):
        np.random.seed(s)
        errs_theirs.append(np.abs(explainer.shap_values(x, nsamples=budget, l1_reg=False, silent=True) - exact).max() / scale)
    return [f"| KernelSHAP, 12 features, {budget} evaluations | {ours_t * 1e3:.1f} | {theirs_t * 1e3:.1f} | "
            f"{ours_t / theirs_t:.2f} (goal ≤ 0.5) | {100 * np.mean(errs_ours):.2f} % vs {100 * np.mean(errs_theirs):.2f} % |"]


def memory_child(batch: int, steps: int) -> None:
    torch.set_num_threads(1)
    model = ms.load("smollm2-135m")
    token_ig(model, PROMPT, TARGET, steps=4, batch_size=4)  # warm up
    before = reset_peak_rss()
    token_ig(model, PROMPT, TARGET, steps=steps, batch_size=batch)
    print(json.dumps({"peak_mb": (status_kb("VmHWM") - before) / 1024}))



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", type=int)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, 64)
    torch.set_num_threads(args.threads)
    model = ms.load("smollm2-135m")
    ours, theirs, diff = ig_vs_captum(model, 64, 16, args.repeats)
    rows = ["| measure | mechscope ms | peer ms | ratio | error |", "|---|---:|---:|---:|---|",
            f"| IG, SmolLM2, 64 Gauss–Legendre steps, batch 16 (peer: Captum LayerIntegratedGradients) | "
            f"{ours * 1e3:.0f} | {theirs * 1e3:.0f} | {ours / theirs:.2f} (goal ≤ 1.0) | max |Δ| vs Captum {diff:.2g} |"]
    rows += shap_vs_kernelexplainer(600, args.repeats)
    mem = []
    for batch in (8, 64):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(batch)], capture_output=True, text=True,
                             check=True)
        mem.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])
    md = "\n".join([
        "## Attribution (cpu)", "",
        f"`python benchmarks/bench_attribution.py --threads {args.threads}`: medians of {args.repeats}, interleaved. "
        f"{machine(args.threads, 'cpu')}. KernelSHAP error: max |φ − φ_exact| / max |φ_exact|, mean of 5 seeds.", "",
        *rows, "",
        "Peak memory growth of IG on SmolLM2 ('The capital of France is', 64 steps), fresh process each:", "",
        "| internal batch | peak growth MB |", "|---:|---:|",
        f"| 8 | {mem[0]:.0f} |", f"| 64 (no batching) | {mem[1]:.0f} |",
    ])
    write_section("bench_attribution", md)
    print(md)


if __name__ == "__main__":
    main()
