"""Activation patching of every head on SmolLM2 (one IOI pair, denoising, all positions): mechscope's
batched sweep against TransformerLens' `patching.get_act_patch_attn_head_out_all_pos` (one forward per
head) on the same model, booted by TransformerLens' `TransformerBridge` from mechscope's cached
weights. Also checks that the two agree. Run alone: `python benchmarks/bench_patching_tl.py`."""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import version as pkg_version

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.models.load import embedded_dir  # noqa: E402
from mechscope.components.patching import activation_patching  # noqa: E402
from mechscope.tasks import make_task  # noqa: E402

THREADS = 2


def main() -> None:
    torch.set_num_threads(THREADS)
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    model = ms.load("smollm2-135m")
    task = make_task("ioi", model, n=4, seed=0).solved_by(model).subset([0])
    bridge = TransformerBridge.boot_transformers(str(embedded_dir("smollm2-135m")), dtype=torch.float32)
    bridge.enable_compatibility_mode()
    clean, corrupted = torch.tensor(task.clean), torch.tensor(task.corrupted)
    good, bad = task.good[0][0], task.bad[0][0]
    _, cache = bridge.run_with_cache(clean)

    def metric(logits):
        return logits[0, -1, good] - logits[0, -1, bad]

    activation_patching(model, task, "heads", progress=False)  # warm-up
    t = time.perf_counter()
    ours = activation_patching(model, task, "heads", progress=False)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    theirs = patching.get_act_patch_attn_head_out_all_pos(bridge, corrupted, cache, metric)
    theirs_s = time.perf_counter() - t
    theirs_norm = (theirs - ours.corrupted_metric) / (ours.clean_metric - ours.corrupted_metric)
    diff = float((theirs_norm - ours.effect).abs().max())
    r = float(torch.corrcoef(torch.stack([theirs_norm.flatten(), ours.effect.flatten()]))[0, 1])
    lines = [
        "## Head activation patching: mechscope vs TransformerLens (SmolLM2-135M, one IOI pair)",
        "",
        f"`benchmarks/bench_patching_tl.py` · {machine(THREADS, 'cpu')} · 270 heads, all positions, denoising, "
        f"{len(task.clean[0])} tokens.",
        "",
        "| implementation | forwards | wall time | ratio |",
        "|---|---:|---:|---:|",
        f"| TransformerLens {pkg_version('transformer-lens')} `get_act_patch_attn_head_out_all_pos` (bridge) | 270 | "
        f"{theirs_s:.1f} s | 1.00× |",
        f"| mechscope `activation_patching(sweep='heads')`, batched | {-(-270 // 256)} | {ours_s:.1f} s | "
        f"{theirs_s / ours_s:.1f}× faster |",
        "",
        f"Agreement: largest difference of the normalised effects {diff:.2e}, Pearson r = {r:.6f}.",
    ]
    write_section("patching-tl", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
