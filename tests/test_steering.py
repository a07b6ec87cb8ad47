"""Control vectors: planted directions recovered by every method (and the centred-PCA pitfall
shown), exact agreement with cached activations, steering and projecting out, directional
ablation, steering only after the prompt, behaviour-vs-cost sweeps."""

import pytest
import torch

from mechscope.models.interventions import Add, ProjectOut
from mechscope.models.tiny import tiny
from mechscope.results import load_result
from mechscope.concepts.steering import (ControlVector, control_vector, direction_from_differences, directional_ablation,
                                perplexity, steering_sweep, word_score)


def _planted_diffs(n=64, d=48, seed=0):
    """Differences = 3·v + small noise: the concept is the mean, its magnitude barely varies."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g)
    v /= v.norm()
    diffs = (3.0 + 0.1 * torch.randn(n, 1, generator=g)) * v + 0.3 * torch.randn(n, d, generator=g)
    return diffs, v


@pytest.mark.parametrize("method", ["mean-diff", "pca"])
def test_every_method_recovers_a_planted_direction(method):
    diffs, v = _planted_diffs()
    w = direction_from_differences(diffs, method)
    assert float(torch.nn.functional.cosine_similarity(w, v, dim=0)) > 0.98
    assert float(w.norm()) == pytest.approx(3.0, abs=0.2)  # scaled like one typical difference
    flipped = direction_from_differences(-diffs, method)  # the sign follows the differences
    assert float(torch.nn.functional.cosine_similarity(flipped, -v, dim=0)) > 0.98


def test_centred_pca_loses_the_concept():
    """The pitfall the issue warns about: centring subtracts the mean difference, so the top
    component of the centred differences is noise, unrelated to the planted direction."""
    diffs, v = _planted_diffs()
    centred = diffs - diffs.mean(0)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    assert abs(float(top @ v)) < 0.5
    assert float(torch.nn.functional.cosine_similarity(direction_from_differences(diffs, "pca"), v, dim=0)) > 0.98


def test_control_vector_equals_the_cached_mean_difference():
    model = tiny("llama")
    pairs = [("I love this", "I hate this"), ("a great day", "a bad day"), ("so happy now", "so sad now")]
    cv = control_vector(model, pairs, "blocks.1.resid_post")
    run = model.run([p for p, _ in pairs] + [n for _, n in pairs], cache="blocks.1.resid_post")
    acts = run.cache["blocks.1.resid_post"][:, -1]
    torch.testing.assert_close(cv.vectors[0], (acts[:3] - acts[3:]).mean(0), atol=1e-5, rtol=0)
    assert cv.sites == ["blocks.1.resid_post"]
    with pytest.raises(ValueError, match="method='ica'; valid: mean-diff, pca"):
        control_vector(model, pairs, "blocks.1.resid_post", method="ica")
    with pytest.raises(ValueError, match="pairs must be"):
        control_vector(model, [("only one",)], "blocks.1.resid_post")


def test_steering_then_projecting_out_is_projecting_out():
    """Adding c·v and then removing the v direction leaves exactly what removing it alone leaves:
    the steering is undone, whatever c."""
    model = tiny("llama")
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    prompts = ["The cat sat on the mat", "Paris is"]
    base = model.run(prompts, interventions=[ProjectOut("blocks.1.resid_pre", v)]).logits[:, -1]  # real tokens
    for coef in (0.5, 8.0):
        both = model.run(prompts, interventions=[Add("blocks.1.resid_pre", v, coef=coef),
                                                 ProjectOut("blocks.1.resid_pre", v)]).logits[:, -1]
        torch.testing.assert_close(both, base, atol=1e-4, rtol=0)  # float32: |8·v| ≈ 64 cancels to ~1e-5, grown by 2 layers
    steered = model.run(prompts, interventions=[Add("blocks.1.resid_pre", v, coef=8.0)]).logits[:, -1]
    assert (steered - base).abs().max() > 1e-2


def test_directional_ablation_removes_the_direction_from_the_residual_stream():
    model = tiny("llama")
    d = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    u = d / d.norm()
    run = model.run(["The cat sat on the mat"], cache="blocks.*.resid_post", interventions=directional_ablation(d))
    for name, t in run.cache.items():  # every write projected out: the stream has no component along d
        assert float((t.float() @ u).abs().max()) < 1e-4, name
    plain = model.run(["The cat sat on the mat"], cache="blocks.*.resid_post")
    assert float((plain.cache["blocks.1.resid_post"].float() @ u).abs().max()) > 1e-3


def test_steering_after_the_prompt_and_sweeps(tmp_path):
    model = tiny("llama")
    cv = control_vector(model, [("I love this", "I hate this"), ("a great day", "a bad day")], "blocks.0.resid_post")
    prompt = "The cat sat"
    plain = model.generate(prompt, max_new_tokens=6)
    everywhere = model.generate(prompt, max_new_tokens=6, interventions=cv.interventions(50.0))
    after = model.generate(prompt, max_new_tokens=6, interventions=cv.interventions(50.0, after_prompt=True))
    first = lambda t: model.tokenize([prompt + t])[0][0, len(model.tokenize([prompt])[0][0])]  # noqa: E731
    assert first(after) == first(plain)  # the first new token comes from the unsteered prompt
    assert everywhere != plain and after != plain
    sweep = steering_sweep(model, cv, [prompt, "Paris is"], [0.0, 20.0], score=lambda ts: len(" ".join(ts)),
                           score_name="length", neutral=["The cat sat on the mat."], max_new_tokens=4, progress=False)
    assert sweep.perplexity[0] == pytest.approx(perplexity(model, ["The cat sat on the mat."]), rel=1e-5)
    assert sweep.perplexity[1] != sweep.perplexity[0] and "coef +20" in sweep.summary()
    assert sweep.png_bytes()[:4] == b"\x89PNG"
    back = load_result(cv.save(tmp_path / "cv"))  # a control vector saves and loads like any result
    assert isinstance(back, ControlVector) and torch.equal(back.vectors, cv.vectors) and back.sites == cv.sites


def test_word_score():
    assert word_score(["What a wonderful, lovely day"], ["wonderful", "lovely"], ["bad"]) == pytest.approx(2 / 5)
    assert word_score(["bad bad"], ["good"], ["bad"]) == -1.0
