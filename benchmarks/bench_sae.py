"""SAEs on SmolLM2 activations: (1) training throughput (tokens/s) of a TopK and a ReLU SAE of the
same size (d 576 → 4608, k 32, batch 4096, float32) — mechscope's `train` vs SAELens's training
step and sparsify's (TopK only), each on our tensors, and vs a minimal plain-PyTorch loop (the
floor), with the peak memory each one adds while training; (2) harvest throughput vs a plain HF
forward over the same corpus blocks. Each trainer runs in its own process (a clean peak-memory
mark). Needs `.venv-bench-sae` (SAELens needs transformer-lens < 4, the other benchmarks 4.3):
`make bench-sae`. Run alone, 1 torch thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, reset_peak_rss, status_kb, write_section  # noqa: E402

THREADS = 1
D, WIDTH, K, BATCH, STEPS, WARMUP = 576, 4608, 32, 4096, 12, 3
SITE = "blocks.12.resid_post"
ACTS = os.path.join(tempfile.gettempdir(), "mechscope-bench-sae-acts.pt")


def activations() -> torch.Tensor:
    """16k rows of SmolLM2's block-12 residual (harvested once, then reused)."""
    if not os.path.exists(ACTS):
        from mechscope.models.load import load
        from mechscope.sae import harvest

        with tempfile.TemporaryDirectory() as d:
            torch.save(harvest(load("smollm2-135m"), SITE, d, n_blocks=130, context=128, progress=False).tensor(), ACTS)
    return torch.load(ACTS)


def batches(x: torch.Tensor, scale: float):
    i = 0
    while True:
        yield x[(torch.arange(BATCH) + i) % len(x)] * scale
        i += BATCH


def plain_loop(arch: str):
    """What one writes by hand: dense encode, (top-k), decode, MSE (+ L1), Adam, decoder renorm."""
    W_enc = torch.nn.Parameter(torch.randn(WIDTH, D) / D ** 0.5)
    W_dec = torch.nn.Parameter(W_enc.detach().clone())
    b_enc, b_dec = torch.nn.Parameter(torch.zeros(WIDTH)), torch.nn.Parameter(torch.zeros(D))
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=1e-4)

    def step(x):
        pre = torch.relu((x - b_dec) @ W_enc.T + b_enc)
        if arch == "topk":
            v, i = pre.topk(K, dim=-1)
            f = torch.zeros_like(pre).scatter(-1, i, v)
        else:
            f = pre
        loss = (f @ W_dec + b_dec - x).pow(2).sum(-1).mean()
        if arch == "relu":
            loss = loss + 2.0 * (f * W_dec.norm(dim=1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if arch == "topk":
            with torch.no_grad():
                W_dec.div_(W_dec.norm(dim=1, keepdim=True))
    return step


def sae_lens_loop(arch: str):
    """SAELens's `SAETrainer._train_step`, as it runs it: training_forward_pass, firing statistics,
    backward, clip 1.0, Adam."""
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=WIDTH, k=K, device="cpu"))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D, d_sae=WIDTH, l1_coefficient=2.0, device="cpu"))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    since = torch.zeros(WIDTH)
    coefs = {k: getattr(v, "value", v) for k, v in sae.get_coefficients().items()}
    n = [0]

    def step(x):
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients=coefs, dead_neuron_mask=since > 1000,
                                                       n_training_steps=n[0], is_logging_step=False))
        with torch.no_grad():
            fired = out.feature_acts.bool().float().sum(-2).bool()
            since.add_(1)
            since[fired] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        n[0] += 1
    return step


def sparsify_loop(arch: str):
    """sparsify's trainer step (eager decoder on CPU): fvu + auxk/32, backward, remove the gradient
    parallel to decoder rows, Adam, renormalise."""
    os.environ["SPARSIFY_DISABLE_TRITON"] = "1"
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(D, SparseCoderConfig(num_latents=WIDTH, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    since = torch.zeros(WIDTH, dtype=torch.long)

    def step(x):
        out = sae(x, dead_mask=since > 10_000_000)
        loss = out.fvu + out.auxk_loss / 32
        loss.backward()
        with torch.no_grad():
            since.add_(len(x))
            since[out.latent_indices.flatten()] = 0
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()
    return step


def child(impl: str, arch: str) -> dict:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = activations()
    if impl == "mechscope":
        from mechscope.sae import SAEConfig, SparseCoder, train

        def fit(steps):
            sae = SparseCoder(SAEConfig(arch, D, WIDTH, k=K if arch == "topk" else None))
            t = time.perf_counter()
            train(sae, x, batch_size=BATCH, steps=steps, progress=False, b_dec="mean", init_rows=4096,
                  dead_tokens=10_000_000)  # as sparsify's default: no latent counts as dead in a short run
            return time.perf_counter() - t

        fit(2)
        base = reset_peak_rss()
        short = fit(WARMUP)
        long = fit(WARMUP + STEPS)
        per_step = (long - short) / STEPS  # initialisation cancels out
    else:
        step = {"plain": plain_loop, "sae_lens": sae_lens_loop, "sparsify": sparsify_loop}[impl](arch)
        data = batches(x, (D / x.pow(2).sum(1).mean()) ** 0.5)
        for _ in range(WARMUP):
            step(next(data))
        base = reset_peak_rss()
        t = time.perf_counter()
        for _ in range(STEPS):
            step(next(data))
        per_step = (time.perf_counter() - t) / STEPS
    return {"tokens_per_s": BATCH / per_step, "peak_mb": (status_kb("VmHWM") - base) / 1024}


def harvest_rates() -> list[tuple[str, float, float]]:
    from mechscope.models.load import load
    from mechscope.data import token_blocks
    from mechscope.sae import harvest

    torch.set_num_threads(THREADS)
    model = load("smollm2-135m")
    blocks = token_blocks(model.tokenizer, 32, 128)
    rows = []
    for site, layer in ((SITE, 12), (f"blocks.{model.cfg.n_layers - 1}.resid_post", model.cfg.n_layers - 1)):
        def ours():
            with tempfile.TemporaryDirectory() as d:
                harvest(model, site, d, tokens=blocks, progress=False)

        def hf():
            with torch.no_grad():
                for b in range(0, len(blocks), 8):
                    out = model.hf.base_model(input_ids=blocks[b:b + 8], output_hidden_states=True)
                    out.hidden_states[layer + 1][:, 1:].reshape(-1, model.cfg.d_model).clone()

        times = {}
        for name, fn in (("hf", hf), ("ours", ours), ("hf", hf), ("ours", ours)):
            t = time.perf_counter()
            fn()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - t)
        n = blocks.numel()
        rows.append((site, n / times["ours"], n / times["hf"]))
    return rows


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    activations()
    results = {}
    for arch, impls in (("topk", ("mechscope", "sae_lens", "sparsify", "plain")),
                        ("relu", ("mechscope", "sae_lens", "plain"))):
        for impl in impls:
            out = subprocess.run([sys.executable, __file__, "--child", impl, arch], capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:])
                results[(arch, impl)] = None
                continue
            results[(arch, impl)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(arch, impl, results[(arch, impl)], flush=True)
    lines = ["## SAE training and harvesting (`bench_sae.py`)", "",
             f"{machine(THREADS, 'cpu')}. SmolLM2 {SITE} activations; SAE d {D} → {WIDTH} latents, TopK k {K}, "
             f"batch {BATCH} rows, float32, Adam; {STEPS} timed steps after {WARMUP}. Peak memory: growth of the "
             "process's peak RSS during those steps (each trainer in its own process). mechscope's time is `train()` "
             "itself (schedules, dead-latent tracking, AuxK, logging), by difference of two runs so initialisation "
             "cancels.", "",
             "| SAE | trainer | tokens/s | mechscope ÷ it | peak MB added |", "|---|---|---:|---:|---:|"]
    for arch in ("topk", "relu"):
        ours = results.get((arch, "mechscope"))
        for impl in ("mechscope", "sae_lens", "sparsify", "plain"):
            r = results.get((arch, impl))
            if (arch, impl) not in results:
                continue
            if r is None:
                lines.append(f"| {arch} | {impl} | failed | | |")
                continue
            ratio = f"{ours['tokens_per_s'] / r['tokens_per_s']:.2f}×" if ours and impl != "mechscope" else ""
            lines.append(f"| {arch} | {impl} | {r['tokens_per_s']:,.0f} | {ratio} | {r['peak_mb']:,.0f} |")
    lines += ["", "Harvest (32 corpus blocks × 128 tokens, batch 8) vs a plain HF forward of the base model (no LM "
              "head) with `output_hidden_states` over the same blocks (HF runs every layer; mechscope's harvest "
              "stops after the stored site, drops the first position and writes the shards to disk):", "",
              "| site | mechscope harvest tokens/s | HF forward tokens/s | ratio |", "|---|---:|---:|---:|"]
    for site, ours, hf in harvest_rates():
        lines.append(f"| {site} | {ours:,.0f} | {hf:,.0f} | {ours / hf:.2f}× |")
        print(site, ours, hf)
    write_section("sae", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
