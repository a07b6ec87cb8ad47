"""The cost of offloading: a SmolLM2 forward with every other block on disk (accelerate's
``device_map`` + ``offload_folder``) against the whole model in memory, and an edge-engine run
(sender outputs) likewise. `.venv/bin/python benchmarks/offload.py` (alone; 1 thread)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, machine, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.circuits.edges import sender_outputs  # noqa: E402
from mechscope.circuits.graph import Graph  # noqa: E402

PROMPTS = ["The Eiffel Tower is a famous landmark in the city of"] * 8


def main() -> None:
    torch.set_num_threads(1)
    whole = ms.load("smollm2-135m")
    folder = Path(tempfile.mkdtemp())
    whole.hf.save_pretrained(folder / "model")
    whole.tokenizer.save_pretrained(folder / "model")
    n = whole.cfg.n_layers
    device_map = {f"model.layers.{l}": "disk" if l % 2 else "cpu" for l in range(n)}
    device_map |= {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    split = ms.load(str(folder / "model"), device_map=device_map, offload_folder=str(folder / "offload"))
    assert torch.equal(whole.run(PROMPTS).logits, split.run(PROMPTS).logits)
    g = Graph.of(whole)
    ids = [whole.tokenize(p)[0][0].tolist() for p in PROMPTS]

    def forward(model):
        with torch.no_grad():
            model.run(PROMPTS)

    times = interleaved({"whole forward": lambda: forward(whole), "offloaded forward": lambda: forward(split),
                         "whole senders": lambda: sender_outputs(whole, g, ids),
                         "offloaded senders": lambda: sender_outputs(split, g, ids)}, rounds=5, device="cpu")
    md = [f"SmolLM2-135M, {len(PROMPTS)} prompts of {len(ids[0])} tokens; {n // 2} of {n} blocks offloaded to disk "
          f"(safetensors under offload_folder, loaded for each use); {machine(1, 'cpu')}.", "",
          "| run | in memory | half on disk | ratio |", "|---|---:|---:|---:|"]
    for what in ("forward", "senders"):
        a, b = times[f"whole {what}"], times[f"offloaded {what}"]
        label = "forward" if what == "forward" else "edge engine: every sender's output"
        md.append(f"| {label} | {a * 1e3:.0f} ms | {b * 1e3:.0f} ms | {b / a:.2f}× |")
    write_section("offload", "## Offloading: half the blocks on disk\n\n" + "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
