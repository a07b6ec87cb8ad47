"""Forward overhead of mechscope runs on the families whose sites need more than module paths, against
the plain HF forward: Gemma 2 (sandwich norms: attn.out / mlp.out on the post-norms; soft-capped
scores, so HF runs eager attention) and Mixtral (a mixture of experts: the MoE block is the MLP).

Random mid-size configs (8 layers, d_model 512, 8 heads, d_mlp 1536; Mixtral 8 experts, 2 per token),
batch 4 × 128 tokens, one torch thread, round-robin medians of the same calls: the HF forward, a run
with nothing cached, and a run caching every residual site (embed, resid_pre/mid/post, final_norm).
Run alone: `python benchmarks/bench_families.py`. Writes its table to RESULTS.md.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, machine, write_section  # noqa: E402

from mechscope.models.tiny import tiny  # noqa: E402

RESID = ["embed", "blocks.*.resid_pre", "blocks.*.resid_mid", "blocks.*.resid_post", "final_norm"]
SIZE = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
            head_dim=64)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    local_global = {"layer_types": ["sliding_attention", "full_attention"] * 4, "sliding_window": 64}
    for family, extra in (("gemma2", local_global), ("mixtral", {"num_local_experts": 8})):
        model = tiny(family, **SIZE, **extra)
        ids = torch.randint(3, 300, (4, 128), generator=torch.Generator().manual_seed(0))
        inputs = model.hf_inputs(ids, torch.ones_like(ids))

        def hf():
            with torch.no_grad():
                return model.hf(**inputs, use_cache=False)

        t = interleaved({"hf": hf, "run": lambda: model.run(ids), "resid": lambda: model.run(ids, cache=RESID)},
                        rounds=7, device="cpu")
        n_sites = len(model._sites(RESID))
        rows.append(f"| {family} ({model.hf.config._attn_implementation} attention) | {t['hf'] * 1e3:.0f} ms | "
                    f"{t['run'] / t['hf']:.3f}× | {t['resid'] / t['hf']:.3f}× ({n_sites} sites) |")
    md = "\n".join([
        "## Forward overhead on Gemma 2 and a mixture of experts (cpu)", "",
        "`python benchmarks/bench_families.py`: random configs of 8 layers, d_model 512, d_mlp 1536 (Mixtral: "
        f"8 experts, 2 per token), batch 4 × 128 tokens, median of 7 interleaved rounds. {machine(1, 'cpu')}.", "",
        "| family | HF forward | run, nothing cached | run, every residual site |", "|---|---:|---:|---:|", *rows])
    write_section("families", md)
    print(md)


if __name__ == "__main__":
    main()
