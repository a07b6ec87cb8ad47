"""Logit lens and direct logit attribution on every tiny architecture."""

import math

import pytest
import torch

from mechscope.lenses.logit import direct_logit_attribution, frozen_norm, logit_lens, neuron_attribution

PROMPT = "When Mary and John went to the store"


def test_logit_lens_last_row_is_the_models_own_output(model):
    lens = logit_lens(model, PROMPT)
    run = model.run(PROMPT)
    tid = model.token_id(lens.target) if len(model.tokenizer(lens.target, add_special_tokens=False)["input_ids"]) == 1 \
        else int(run.logits[0, -1].argmax())
    probs = run.logits[0].float().softmax(-1)[:, tid]
    torch.testing.assert_close(lens.target_prob[-1], probs, atol=1e-6, rtol=1e-5)
    assert lens.target_prob.shape == (model.cfg.n_layers + 1, run.tokens.shape[1])
    assert lens.rows[0] == "embed" and lens.rows[-1] == f"L{model.cfg.n_layers - 1}"
    assert (lens.target_rank[-1, -1] == 0) and lens.first_layer() is not None


def test_logit_lens_normalises_each_layer_with_its_own_statistics(llama):
    lens = logit_lens(llama, PROMPT, target=7)
    run = llama.run(PROMPT, cache="blocks.0.resid_post")
    x = run.cache["blocks.0.resid_post"][0]
    norm = llama.hf.get_submodule("model.norm")
    by_hand = llama.hf.get_output_embeddings()(norm(x)).softmax(-1)[:, 7]
    torch.testing.assert_close(lens.target_prob[1], by_hand, atol=1e-6, rtol=1e-5)
    assert '<table class="lens-grid"' in lens.html()


def test_dla_sums_to_the_logit_and_the_logit_difference(model):
    run = model.run(PROMPT)
    t, f = int(run.logits[0, -1].argmax()), int(run.logits[0, -1].argsort()[-2])
    for foil in (None, f):
        dla = direct_logit_attribution(model, PROMPT, t, foil=foil)
        assert dla.total == pytest.approx(dla.actual, abs=1e-4, rel=1e-4)
        n_bias = sum(c.endswith("attn bias") for c in dla.components)
        per_mlp = 1 + model.n_experts  # a mixture of experts: each expert and the block's rest
        assert len(dla.components) == 1 + model.cfg.n_layers * (model.cfg.n_heads + per_mlp) + n_bias
        assert dla.heads_grid.shape == (model.cfg.n_layers, model.cfg.n_heads)
    dla = direct_logit_attribution(model, PROMPT, t, position=2)
    assert dla.position == 2 and dla.total == pytest.approx(dla.actual, abs=1e-4, rel=1e-4)


def test_neuron_dla_adds_up_to_the_mlp_contribution(model):
    t = int(model.run(PROMPT).logits[0, -1].argmax())
    if model.adapter.mlp_down is None:  # a mixture of experts has no single layer of neurons
        with pytest.raises(ValueError, match="is a mixture of experts: its MLP has no single down projection"):
            neuron_attribution(model, PROMPT, 1, t)
        return
    dla = direct_logit_attribution(model, PROMPT, t)
    neurons = neuron_attribution(model, PROMPT, 1, t)
    assert neurons.values.shape == (model.cfg.d_mlp,)
    mlp = float(dla.values[dla.components.index("MLP1")])
    down = model.hf.get_submodule(f"{model.adapter.blocks}.1.{model.adapter.mlp_down}")
    if down.bias is None:
        assert float(neurons.values.sum()) == pytest.approx(mlp, abs=1e-4, rel=1e-4)
    assert neurons.total == pytest.approx(neurons.actual, abs=1e-5)


def test_frozen_norm_reproduces_the_norm():
    x = torch.randn(5, 16)
    ln = torch.nn.LayerNorm(16)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    apply, bias = frozen_norm(ln, x)
    torch.testing.assert_close(apply(x) + bias, ln(x), atol=1e-5, rtol=1e-5)
    parts = torch.randn(3, 5, 16)
    apply, bias = frozen_norm(ln, parts.sum(0))
    torch.testing.assert_close(apply(parts).sum(0) + bias, ln(parts.sum(0)), atol=1e-5, rtol=1e-5)


def test_single_token_targets(llama):
    with pytest.raises(ValueError, match="single-token target"):
        direct_logit_attribution(llama, PROMPT, " Mary and John")


def test_gemma2_dla_is_on_the_logits_before_the_soft_cap():
    """Gemma 2 returns c·tanh(l / c) of the unembedding's output l: the logit lens decodes as the model
    returns (its last row is the model's own output), DLA adds up to l and says so."""
    from mechscope.models.tiny import tiny

    model = tiny("gemma2")
    assert model.logit_softcap == 3.0
    t = int(model.run(PROMPT).logits[0, -1].argmax())
    dla = direct_logit_attribution(model, PROMPT, t)
    pre_cap = float(model.run(PROMPT, cache="logits").cache["logits"][0, -1, t])
    assert dla.actual == pytest.approx(pre_cap, abs=1e-5) and dla.total == pytest.approx(pre_cap, abs=1e-4)
    returned = float(model.run(PROMPT).logits[0, -1, t])
    assert returned == pytest.approx(3.0 * math.tanh(pre_cap / 3.0), abs=1e-5) and returned != pytest.approx(pre_cap)
    assert "logits before the model's soft-cap at ±3" in dla.summary()


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_dla_per_expert_in_a_mixture_of_experts(family):
    """Each expert is a component; with the block's rest (Qwen2-MoE's shared expert) they add up."""
    from mechscope.models.tiny import tiny

    model = tiny(family)
    t = int(model.run(PROMPT).logits[0, -1].argmax())
    dla = direct_logit_attribution(model, PROMPT, t)
    assert "MLP1E3" in dla.components and "MLP1 rest" in dla.components and "MLP1" not in dla.components
    assert dla.total == pytest.approx(dla.actual, abs=1e-4, rel=1e-4)
    rest = float(dla.values[dla.components.index("MLP1 rest")])
    experts = [float(dla.values[dla.components.index(f"MLP1E{e}")]) for e in range(4)]
    if family == "mixtral":  # no shared expert: the rest is float rounding
        assert abs(rest) < 1e-5 and max(abs(v) for v in experts) > 1e-4
    else:
        assert abs(rest) > 1e-5  # the shared expert


def test_a_target_without_its_leading_space_is_named(llama):
    """A target given without the leading space of the word it usually is was used silently."""
    def one(text):
        return len(llama.tokenizer(text, add_special_tokens=False)["input_ids"]) == 1

    word = next(w.removeprefix("Ġ") for w in sorted(llama.tokenizer.get_vocab()) if w.startswith("Ġ") and w[1:].isalpha()
                and one(w[1:]) and one(" " + w[1:]))
    with pytest.warns(UserWarning, match=f"token '{word}' .* has no leading space; .* usually ' {word}'"):
        plain = llama.token_id(word)
    assert plain == llama.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llama.token_id(" " + word)
