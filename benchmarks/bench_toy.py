"""Toy training throughput: the 2-layer attention-only model as mechscope trains it (a Hugging Face
GPT-2 with its MLPs replaced by NoMLP, wrapped as a mechscope Model; `train_induction`'s own step timer, the
history checkpoints excluded) against the same network written as plain PyTorch (nanoGPT-style:
embeddings, LayerNorm → fused QKV → SDPA causal attention → projection, final LayerNorm, unembedding;
no MLP at all), on the same data, optimiser and batch. Run alone: `python benchmarks/bench_toy.py`."""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

from mechscope.toy import repeated_segments, train_induction  # noqa: E402

LAYERS, HEADS, D, VOCAB, CONTEXT, BATCH, STEPS = 2, 4, 64, 512, 64, 32, 300


class PlainAttnOnly(nn.Module):
    """The attention-only transformer in plain PyTorch (same shapes as mechscope's)."""

    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, D), nn.Embedding(CONTEXT, D)
        self.ln = nn.ModuleList(nn.LayerNorm(D) for _ in range(LAYERS))
        self.qkv = nn.ModuleList(nn.Linear(D, 3 * D) for _ in range(LAYERS))
        self.proj = nn.ModuleList(nn.Linear(D, D) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(D)
        self.unembed = nn.Linear(D, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        x = self.tok(ids) + self.pos(torch.arange(t))
        for ln, qkv, proj in zip(self.ln, self.qkv, self.proj):
            q, k, v = qkv(ln(x)).view(b, t, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
            z = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + proj(z.transpose(1, 2).reshape(b, t, D))
        return self.unembed(self.ln_f(x))


def plain_tokens_per_s(seed: int) -> float:
    torch.manual_seed(seed)
    net = PlainAttnOnly()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(seed)
    spent = 0.0
    for _ in range(STEPS):
        t0 = time.perf_counter()
        ids = repeated_segments(BATCH, CONTEXT, VOCAB, gen)
        logits = net(ids)
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        spent += time.perf_counter() - t0
    return STEPS * BATCH * CONTEXT / spent


def mechscope_tokens_per_s(seed: int) -> float:
    result = train_induction(LAYERS, steps=STEPS, batch_size=BATCH, context=CONTEXT, vocab=VOCAB, d_model=D,
                                n_heads=HEADS, eval_every=STEPS, seed=seed, progress=False)
    return result.tokens_per_s


def main() -> None:
    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"plain": [], "mechscope": []}
    for seed in range(5):  # interleaved rounds
        rates["plain"].append(plain_tokens_per_s(seed))
        rates["mechscope"].append(mechscope_tokens_per_s(seed))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["mechscope"] / med["plain"]
    start = time.perf_counter()
    full = train_induction(2, progress=False)
    whole = time.perf_counter() - start
    md = "\n".join([
        "## Toy training throughput (cpu)", "",
        f"`python benchmarks/bench_toy.py`: 2-layer attention-only transformer (d_model {D}, {HEADS} heads, vocab "
        f"{VOCAB}, context {CONTEXT}, batch {BATCH}), {STEPS} AdamW steps per round, 5 interleaved rounds, median. "
        f"{machine(1, 'cpu')}.", "",
        "| training loop | tokens/s | / plain PyTorch |", "|---|---:|---:|",
        f"| plain PyTorch attention-only model (no MLP, no hooks) | {med['plain']:,.0f} | 1.00 |",
        f"| mechscope `train_induction` (HF GPT-2 blocks, MLPs removed; checkpoints excluded) | {med['mechscope']:,.0f} | "
        f"{ratio:.2f} |", "",
        f"The whole default `train_induction(2)` ({full.steps[-1]} steps with 33 checkpoints of loss, ICL score and "
        f"head scores): {whole:.0f} s, {full.tokens_per_s:,.0f} tokens/s in its steps. Goal ≥ 0.95 of plain PyTorch.",
    ])
    write_section("toy", md)
    print(md)


if __name__ == "__main__":
    main()
