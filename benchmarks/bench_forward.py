"""Forward-pass overhead of mechscope runs against the plain HF forward (and peers, if installed).

Measures, on SmolLM2-135M, one batch of token ids, round-robin medians:
  - model.run with nothing cached vs the plain HF forward (sdpa)             goal <= 1.02
  - model.run caching every residual site vs HF (sdpa)                      goal <= 1.15
  - model.run caching every attention pattern vs HF eager and HF sdpa (and HF eager with
    output_attentions, which computes the same patterns)
  - caching every resid_post through mechscope, nnsight and TransformerLens (when importable)
  - peak memory of a run caching N sites vs the plain forward (separate processes on CPU)
Writes its table to RESULTS.md. Run alone: `python benchmarks/bench_forward.py [--threads 1]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version as pkg_version

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, machine, reset_peak_rss, status_kb, write_section  # noqa: E402

import mechscope as ms  # noqa: E402

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair.")
RESID = ["embed", "blocks.*.resid_pre", "blocks.*.resid_mid", "blocks.*.resid_post", "final_norm"]
MEMORY_CONFIGS = {
    "hf forward (sdpa)": None,
    "run, nothing cached": [],
    "run, every resid_post (30)": ["blocks.*.resid_post"],
    "run, every residual site (92)": RESID,
    "run, every attn pattern (30)": ["blocks.*.attn.pattern"],
}


def batch(model: ms.Model, size: int, length: int) -> torch.Tensor:
    ids = model.tokenizer(TEXT)["input_ids"]
    rows = [(ids * 4)[i * 3: i * 3 + length] for i in range(size)]
    return torch.tensor(rows)


def hf_call(model: ms.Model, ids: torch.Tensor, impl: str, **kw):
    inputs = model.hf_inputs(ids, torch.ones_like(ids))

    def call():
        saved = model.hf.config._attn_implementation
        model.hf.config._attn_implementation = impl
        try:
            with torch.no_grad():
                return model.hf(**inputs, use_cache=False, **kw)
        finally:
            model.hf.config._attn_implementation = saved

    return call


def peers(model: ms.Model, ids: torch.Tensor) -> dict:
    """Caching every resid_post through nnsight and TransformerLens, if they import."""
    fns = {}
    try:
        import nnsight
        from nnsight import LanguageModel

        lm = LanguageModel(model.hf, tokenizer=model.tokenizer)

        def nn_call():
            with torch.no_grad(), lm.trace(ids):
                acts = nnsight.save([])
                for layer in lm.model.layers:
                    acts.append(layer.output)
            return acts

        fns[f"nnsight {nnsight.__version__}, every resid_post"] = nn_call
    except ImportError:
        pass
    try:
        from transformer_lens.model_bridge import TransformerBridge

        from mechscope.models.load import embedded_dir

        bridge = TransformerBridge.boot_transformers(str(embedded_dir("smollm2-135m")), dtype=torch.float32)

        def tl_call():
            with torch.no_grad():
                return bridge.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))

        fns[f"TransformerLens {pkg_version('transformer-lens')} bridge (eager attn), every resid_post"] = tl_call
    except ImportError:
        pass
    return fns


def memory_child(config: str, size: int, length: int) -> None:
    """Peak RSS growth of one forward (in a fresh process), printed as JSON."""
    torch.set_num_threads(1)
    model = ms.load("smollm2-135m")
    ids = batch(model, size, length)
    sites = MEMORY_CONFIGS[config]
    with torch.no_grad():
        model.hf(**model.hf_inputs(ids[:1, :4], torch.ones_like(ids[:1, :4])), use_cache=False)  # warm allocator
    before = reset_peak_rss()  # peak-RSS mark reset after loading
    if sites is None:
        hf_call(model, ids, "sdpa")()
        cache_bytes = 0
    else:
        run = model.run(ids, cache=sites or None)
        cache_bytes = run.cache.nbytes()
    print(json.dumps({"peak_mb": (status_kb("VmHWM") - before) / 1024, "cache_mb": cache_bytes / 2**20}))



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-child")
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.batch, args.length)

    torch.set_num_threads(args.threads)
    model = ms.load("smollm2-135m", device=args.device)
    ids = batch(model, args.batch, args.length)
    fns = {
        "hf forward (sdpa)": hf_call(model, ids, "sdpa"),
        "hf forward (eager)": hf_call(model, ids, "eager"),
        "hf eager + output_attentions": hf_call(model, ids, "eager", output_attentions=True),
        "run, nothing cached": lambda: model.run(ids),
        "run, every resid_post (30)": lambda: model.run(ids, cache="blocks.*.resid_post"),
        "run, every residual site (92)": lambda: model.run(ids, cache=RESID),
        "run, every attn pattern (30)": lambda: model.run(ids, cache="blocks.*.attn.pattern"),
        **peers(model, ids),
    }
    t = interleaved(fns, args.rounds, args.device)
    sdpa, eager = t["hf forward (sdpa)"], t["hf forward (eager)"]
    goals = {"run, nothing cached": "≤ 1.02", "run, every residual site (92)": "≤ 1.15"}
    rows = ["| configuration | median ms | / HF sdpa | / HF eager | goal |", "|---|---:|---:|---:|---|"]
    for name, sec in t.items():
        rows.append(f"| {name} | {sec * 1e3:.1f} | {sec / sdpa:.3f} | {sec / eager:.3f} | {goals.get(name, '')} |")

    mem_rows = []
    if args.device == "cpu":
        mem_rows = ["", "Peak memory growth of one forward above the loaded model, each in a fresh process (VmHWM after a reset; CPU):", "",
                    "| configuration | peak growth MB | cache MB |", "|---|---:|---:|"]
        for config in MEMORY_CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--memory-child", config, "--batch", str(args.batch),
                                  "--length", str(args.length)], capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            mem_rows.append(f"| {config} | {m['peak_mb']:.0f} | {m['cache_mb']:.1f} |")
    else:
        mem_rows = ["", "Peak GPU memory of one forward (torch.cuda.max_memory_allocated above the weights):", "",
                    "| configuration | peak MB |", "|---|---:|"]
        base = torch.cuda.memory_allocated()
        for name in ["hf forward (sdpa)", "run, nothing cached", "run, every resid_post (30)",
                     "run, every residual site (92)", "run, every attn pattern (30)"]:
            torch.cuda.reset_peak_memory_stats()
            fns[name]()
            mem_rows.append(f"| {name} | {(torch.cuda.max_memory_allocated() - base) / 2**20:.0f} |")

    device_kind = "cuda" if args.device.startswith("cuda") else "cpu"
    md = "\n".join([
        f"## Forward overhead ({device_kind})", "",
        f"`python benchmarks/bench_forward.py --threads {args.threads}`: SmolLM2-135M, batch {args.batch} × "
        f"{args.length} tokens, median of {args.rounds} interleaved rounds. {machine(args.threads, args.device)}.", "",
        *rows, *mem_rows,
    ])
    write_section(f"bench_forward-{device_kind}", md)
    print(md)


if __name__ == "__main__":
    main()
