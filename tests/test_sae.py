"""Sparse dictionaries: every architecture recovers a planted dictionary; the metric formulas on
hand-computed values; the straight-through gradients; save/load, checkpoints and resuming;
splicing, clamping, ablating and steering with features; evaluation and dashboards on a tiny model."""

import json

import pytest
import torch

from mechscope.models.tiny import tiny
from mechscope.sae import SAEConfig, SAEError, SparseCoder, harvest, load_sae, planted
import mechscope.sae.trainer as train_module
from mechscope.sae.dashboard import FeatureCards, feature_cards, parse_features
from mechscope.sae.kernels import JumpReLU, Step
from mechscope.sae.evaluate import ce_recovered, evaluate, reconstruction
from mechscope.sae.metrics import fvu, l0, mmcs, mse
from mechscope.sae.features import splice, steer
from mechscope.sae.trainer import geometric_median

# MMCS reached on 512 planted directions in 64 dims (p = 0.01, ~5 active per row), width 1024,
# 100k rows × 4 epochs (390 steps of 1024), seed 0: topk 0.994, batchtopk 0.988, jumprelu 0.98,
# relu 0.97. The bar is the 0.9 for every one.
RECOVERY = {"topk": {"k": 8}, "batchtopk": {"k": 8}, "jumprelu": {}, "relu": {}}


@pytest.fixture(scope="module")
def planted_data():
    return planted(512, 64, 0.01, 100_000, seed=0)


@pytest.mark.parametrize("arch", list(RECOVERY))
def test_every_architecture_recovers_a_planted_dictionary(arch, planted_data):
    x, true = planted_data
    sae = SparseCoder(SAEConfig(arch, 64, 1024, **RECOVERY[arch]), seed=0).fit(x, batch_size=1024, epochs=4, progress=False)
    score = mmcs(sae.W_dec.detach(), true)
    assert score >= 0.9, f"{arch}: MMCS {score:.3f}"
    log = sae.log_
    # sparse and reconstructing; an L1 SAE this short-trained keeps many tiny activations (L0 ~130)
    assert log.column("l0")[-1] < (200 if arch == "relu" else 40) and log.column("fvu")[-1] < 0.5
    if arch in ("topk", "batchtopk", "jumprelu"):
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(1024), atol=1e-5)  # unit-norm decoder rows
    if arch == "batchtopk":  # inference uses the learned threshold: L0 near k on fresh rows
        assert 4 < float(l0(sae.transform(x[:4000]))) < 16
    assert sae.score(x[:4000]) > 0.5


def test_a_transcoder_recovers_a_planted_map_with_its_skip_connection():
    g = torch.Generator().manual_seed(1)
    n_feat, d_in, d_out, n = 256, 48, 32, 60_000
    G = torch.nn.functional.normalize(torch.randn(n_feat, d_in, generator=g), dim=1)
    H = torch.nn.functional.normalize(torch.randn(n_feat, d_out, generator=g), dim=1)
    codes = (torch.rand(n, n_feat, generator=g) < 0.015) * (0.5 + torch.rand(n, n_feat, generator=g))
    x = codes @ G + 0.05 * torch.randn(n, d_in, generator=g)  # plus dense input noise ...
    M = torch.randn(d_in, d_out, generator=g) * 0.05
    y = codes @ H + x @ M  # ... that reaches the target only linearly (the skip path)
    sae = SparseCoder(SAEConfig("topk", d_in, 512, k=8, d_out=d_out, skip=True), seed=0)
    sae.fit(x, y, batch_size=1024, epochs=12, lr=1e-2, progress=False)  # a random encoder: a higher rate
    assert mmcs(sae.W_dec.detach(), H) >= 0.9
    assert sae.score(x[:5000], y[:5000]) > 0.7
    with pytest.raises(SAEError, match="needs target= activations"):
        SparseCoder(SAEConfig("topk", d_in, 64, k=4, d_out=d_out)).fit(x, progress=False)


def test_metric_formulas_on_hand_computed_values():
    y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    y_hat = torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 2.0]])
    # squared errors: 1, 0, 4 → 5; mean ȳ = (4/3, 2); Σ‖y − ȳ‖² = (1/9 + 16/9 + 25/9) + (4 + 0 + 4) = 14/3 + 8
    assert float(fvu(y_hat, y)) == pytest.approx(5 / (14 / 3 + 8))
    assert float(mse(y_hat, y)) == pytest.approx(5 / 6)
    assert float(l0(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.5]]))) == pytest.approx(1.5)
    assert ce_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)  # (4 − 2.5) / (4 − 2)
    with pytest.raises(SAEError, match="CE recovered is undefined"):
        ce_recovered(2.0, 2.5, 2.0)
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    learned = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    assert mmcs(learned, true) == pytest.approx((1.0 + 2 ** -0.5) / 2)
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    med = geometric_median(pts)
    assert med.norm() < 1.0  # the median ignores the outlier the mean follows
    assert (pts - med).norm(dim=1).sum() <= (pts - pts.mean(0)).norm(dim=1).sum()
    # reconstruction() on a dictionary written by hand: features [x₁⁺, x₂⁺] of inputs x ≥ 0
    sae = SparseCoder(SAEConfig("relu", 2, 3))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    s = reconstruction(sae, torch.tensor([[1.0, 0.0], [2.0, 3.0]]))
    assert s["fvu"] == 0.0 and s["l0"] == 1.5 and s["dead"] == pytest.approx(1 / 3)
    assert s["density"].tolist() == [1.0, 0.5, 0.0]


def test_jumprelu_straight_through_gradients():
    eps = 0.1
    pre = torch.tensor([[0.52, 0.3, 0.9]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    out = JumpReLU.apply(pre, theta, eps)
    assert out.tolist() == [[pytest.approx(0.52), 0.0, pytest.approx(0.9)]]
    out.sum().backward()
    assert pre.grad.tolist() == [[1.0, 0.0, 1.0]]  # H(pre − θ)
    assert theta.grad.tolist() == [pytest.approx(-0.5 / eps), 0.0, 0.0]  # −(θ/ε)K((pre − θ)/ε): only within ε/2
    theta.grad = None
    Step.apply(pre, theta, eps).sum().backward()
    assert theta.grad.tolist() == [pytest.approx(-1 / eps), 0.0, 0.0]


def test_decoder_norm_handling_per_architecture():
    sae = SparseCoder(SAEConfig("topk", 8, 16, k=2))
    sae.W_dec.grad = torch.randn(16, 8)
    sae.remove_parallel_grads()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-6  # no component along the rows
    relu = SparseCoder(SAEConfig("relu", 8, 16))
    assert torch.allclose(relu.W_dec.norm(dim=1), torch.full((16,), 0.1))  # free norms, small at the start
    relu.normalise_decoder()
    assert torch.allclose(relu.W_dec.norm(dim=1), torch.full((16,), 0.1))


def test_config_errors():
    with pytest.raises(SAEError, match="arch='matryoshka'; valid: relu, topk, batchtopk, jumprelu, gated"):
        SAEConfig("matryoshka", 8, 16)
    with pytest.raises(SAEError, match="gated dictionaries are read from files, not trained here"):
        SparseCoder(SAEConfig("gated", 8, 16)).fit(torch.zeros(100, 8), batch_size=10, progress=False)
    with pytest.raises(SAEError, match="input_norm='layer_norm' is for dictionaries read from files"):
        SparseCoder(SAEConfig("relu", 8, 16, input_norm="layer_norm")).fit(torch.zeros(100, 8), batch_size=10, progress=False)
    with pytest.raises(SAEError, match="input_norm='rms'; valid: none, center, rescale, layer_norm"):
        SAEConfig("relu", 8, 16, input_norm="rms")
    with pytest.raises(SAEError, match="topk needs k in 1..width=16"):
        SAEConfig("topk", 8, 16)
    with pytest.raises(SAEError, match="k=4 is for topk/batchtopk"):
        SAEConfig("relu", 8, 16, k=4)
    sae = SparseCoder(SAEConfig("topk", 8, 16, k=2))
    with pytest.raises(SAEError, match=r"input must be \[\.\.\., 8\]; got \(3, 5\)"):
        sae.encode(torch.zeros(3, 5))
    with pytest.raises(SAEError, match="data contains NaN"):
        sae.fit(torch.full((100, 8), float("nan")), batch_size=10, progress=False)
    with pytest.raises(SAEError, match="fewer than one batch"):
        sae.fit(torch.zeros(5, 8), batch_size=10, progress=False)


def test_save_load_round_trip_and_corrupt_files(tmp_path, planted_data):
    x, _ = planted_data
    sae = SparseCoder(SAEConfig("jumprelu", 64, 128, site="blocks.0.resid_post")).fit(x[:8192], batch_size=512, progress=False)
    sae.save(tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert back.cfg == sae.cfg
    assert torch.equal(back.encode(x[:100]), sae.encode(x[:100]))
    assert torch.equal(back.scale_in, sae.scale_in) and back.scale_in != 1.0  # normalisation travels with it
    with pytest.raises(SAEError, match="holds no config.json"):
        load_sae(tmp_path / "nothing")
    (tmp_path / "s" / "sae.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SAEError, match="sae.safetensors cannot be read"):
        load_sae(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    (tmp_path / "s" / "config.json").write_text(json.dumps({**cfg, "colour": "red"}))
    with pytest.raises(SAEError, match=r"unknown SAE config field\(s\) \['colour'\]"):
        load_sae(tmp_path / "s")


def test_an_interrupted_training_resumes_to_the_same_dictionary(tmp_path, planted_data, monkeypatch):
    x, _ = planted_data
    x = x[:20_000]
    opts = dict(batch_size=500, steps=24, checkpoint_every=10, progress=False, log_every=4)
    whole = SparseCoder(SAEConfig("topk", 64, 128, k=4), seed=3)
    whole.fit(x, checkpoint=tmp_path / "a", **opts)
    real_loss = train_module._loss

    def crash(sae, xb, yb, batch, st, *a):
        if st.step == 13:
            raise KeyboardInterrupt
        return real_loss(sae, xb, yb, batch, st, *a)

    monkeypatch.setattr(train_module, "_loss", crash)
    part = SparseCoder(SAEConfig("topk", 64, 128, k=4), seed=3)
    with pytest.raises(KeyboardInterrupt):
        part.fit(x, checkpoint=tmp_path / "b", **opts)
    monkeypatch.setattr(train_module, "_loss", real_loss)
    resumed = SparseCoder(SAEConfig("topk", 64, 128, k=4), seed=3)
    resumed.fit(x, checkpoint=tmp_path / "b", **opts)  # picks up at step 10
    for name, p in whole.state_dict().items():
        assert torch.allclose(p, resumed.state_dict()[name], atol=1e-6), name
    assert torch.equal(resumed.log_.values, whole.log_.values)
    assert load_sae(tmp_path / "b").cfg == whole.cfg
    with pytest.raises(SAEError, match="a checkpoint of another run"):
        SparseCoder(SAEConfig("topk", 64, 128, k=8)).fit(x, checkpoint=tmp_path / "b", **opts)


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would hold."""

    def __reduce__(self):
        import os

        return os.system, ("touch ran-code",)


def test_a_checkpoint_that_holds_code_is_refused_and_never_run(tmp_path, monkeypatch):
    from mechscope.sae.trainer import CHECKPOINT

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ck").mkdir()
    torch.save({"config": _RunsCode()}, tmp_path / "ck" / CHECKPOINT)
    x = torch.randn(1000, 16)
    with pytest.raises(SAEError, match="not a checkpoint this trainer wrote"):
        SparseCoder(SAEConfig("topk", 16, 32, k=2)).fit(x, batch_size=100, steps=2, checkpoint=tmp_path / "ck", progress=False)
    assert not (tmp_path / "ran-code").exists()
    (tmp_path / "ck" / CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SAEError, match="not a checkpoint this trainer wrote"):
        SparseCoder(SAEConfig("topk", 16, 32, k=2)).fit(x, batch_size=100, steps=2, checkpoint=tmp_path / "ck", progress=False)


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory):
    model = tiny("llama")
    site = "blocks.1.resid_post"
    tokens = torch.randint(3, model.cfg.vocab, (48, 24), generator=torch.Generator().manual_seed(0))
    store = harvest(model, site, tmp_path_factory.mktemp("store"), tokens=tokens, progress=False)
    sae = SparseCoder(SAEConfig("topk", model.cfg.d_model, 128, k=8, site=site, model=model.name))
    sae.fit(store, batch_size=256, epochs=10, progress=False)
    return model, sae, tokens


def test_splice_clamp_ablate_and_steer(tiny_sae):
    model, sae, tokens = tiny_sae
    clean = model.run(tokens[:4]).logits
    with_error = model.run(tokens[:4], interventions=splice(sae, error=True)).logits
    assert torch.allclose(with_error, clean, atol=1e-4)  # the error term restores the activation exactly
    record: dict = {}
    spliced = model.run(tokens[:4], interventions=splice(sae, record=record)).logits
    assert not torch.allclose(spliced, clean, atol=1e-3)
    assert record["latents"].shape == (4, 24, 128) and float(l0(record["latents"])) <= 8
    f = int(record["latents"][0, 5].argmax())
    ablated = model.run(tokens[:4], interventions=splice(sae, error=True, ablate=[f]), cache=sae.cfg.site)
    x = model.run(tokens[:4], cache=sae.cfg.site).cache[sae.cfg.site]
    removed = x - ablated.cache[sae.cfg.site]  # exactly the feature's decoder contribution
    lat = record["latents"][..., f]
    assert torch.allclose(removed, lat[..., None] * sae.W_dec[f].detach() / sae.scale_out, atol=1e-4)
    clamped = model.run(tokens[:4], interventions=splice(sae, error=True, clamp={f: 3.0}), cache=sae.cfg.site)
    added = clamped.cache[sae.cfg.site] - x
    assert torch.allclose(added, (3.0 - lat)[..., None] * sae.W_dec[f].detach() / sae.scale_out, atol=1e-4)
    steered = model.run(tokens[:4], interventions=[steer(sae, f, 2.0)], cache=sae.cfg.site).cache[sae.cfg.site]
    assert torch.allclose(steered - x, 2.0 * sae.W_dec[f].detach() / sae.scale_out, atol=1e-5)
    with pytest.raises(SAEError, match="feature\\(s\\) \\[999\\] out of range"):
        splice(sae, ablate=[999])


def test_evaluate_against_a_lossless_dictionary():
    """A hand-made dictionary with f = [x⁺, (−x)⁺] and W_dec = [I; −I] reconstructs exactly:
    CE recovered 1, KL 0, FVU 0, L0 = d (every coordinate non-zero, once)."""
    model = tiny("llama")
    d = model.cfg.d_model
    site = "blocks.0.resid_post"
    sae = SparseCoder(SAEConfig("relu", d, 2 * d, site=site))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 0))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    tokens = torch.randint(3, model.cfg.vocab, (6, 16), generator=torch.Generator().manual_seed(0))
    ev = evaluate(sae, model, tokens, batch_size=4, progress=False)
    assert ev.ce_recovered == pytest.approx(1.0, abs=1e-5) and ev.kl_sae == pytest.approx(0.0, abs=1e-6)
    assert ev.fvu == pytest.approx(0.0, abs=1e-10) and ev.l0 == pytest.approx(d)
    assert ev.n_tokens == 6 * 15 and ev.kl_zero > 0  # (a random tiny model: zeroing may even help its loss)
    assert ev.dead == 0.0 and "CE loss recovered 1.000" in ev.summary()
    every = evaluate(sae, model, tokens, batch_size=4, drop_first=False, progress=False)  # as SAELens scores
    assert every.n_tokens == 6 * 16 and every.ce_recovered == pytest.approx(1.0, abs=1e-5)
    assert every.ce_orig != pytest.approx(ev.ce_orig)  # the first prediction is scored too


# the fields sae-dashboard 0.8.0's NeuronpediaDashboardFeature / Activation write (to_dict); its classes
# read mechscope's export back to the same JSON in benchmarks/saelens_end_to_end.py
NEURONPEDIA_FEATURE = {"feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
                       "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
                       "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson", "neg_str",
                       "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_values",
                       "freq_hist_data_bar_heights", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
                       "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist", "activations", "vector"}
NEURONPEDIA_ACTIVATION = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"}


def test_feature_cards_export_for_neuronpedia(tiny_sae):
    model, sae, tokens = tiny_sae
    cards = feature_cards(sae, model, [3, 5], blocks=tokens, progress=False)
    batch = cards.to_neuronpedia("tiny-llama", "1-res-test")
    assert set(batch) == {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}
    assert (batch["model_id"], batch["sae_set"], batch["layer"]) == ("tiny-llama", "1-res-test", cards.layer)
    for i, f in enumerate(batch["features"]):
        assert set(f) == NEURONPEDIA_FEATURE and f["feature_index"] == cards.neurons[i]
        assert f["pos_str"] == [t for t, _ in cards.promoted[i]] and f["frac_nonzero"] == cards.density[i]
        assert all(set(a) == NEURONPEDIA_ACTIVATION for a in f["activations"])
        top = f["activations"][0]
        assert top["bin_min"] == -1 and top["bin_max"] == round(cards.max_act[i], 3)
        assert top["tokens"][top["qualifying_token_index"]] == cards.top[i][0]["tokens"][cards.top[i][0]["peak"]]
        assert len(f["activations"]) == len(cards.top[i]) + len(cards.quantile_examples[i])
        assert all(v > 0 for v in f["freq_hist_data_bar_values"])  # the zeros are left out, as sae-dashboard does
    json.dumps(batch)  # plain JSON


def test_evaluate_and_dashboards_of_a_trained_sae(tiny_sae):
    model, sae, tokens = tiny_sae
    ev = evaluate(sae, model, tokens[:8], progress=False)
    assert 0 < ev.l0 <= 8 and 0 < ev.fvu < 1 and ev.ce_recovered is not None
    assert ev.hist.sum() + ev.dead * 128 == pytest.approx(128)
    cards = feature_cards(sae, model, [0, 5, 7], blocks=tokens, progress=False)
    assert isinstance(cards, FeatureCards) and cards.neurons == [0, 5, 7]
    top = cards.top[1][0]
    assert top["acts"][top["peak"]] == pytest.approx(cards.max_act[1])
    html = cards.html(png=b"")
    assert html.count('class="card"') == 3 and "F5" in html and "promotes" in html
    assert parse_features("0-2,7", 128) == [0, 1, 2, 7]
    with pytest.raises(SAEError, match="out of range"):
        parse_features("120-130", 128)


def test_sparse_topk_training_path_equals_dense_autograd():
    """The TopK step's sparse encoder backward and gathered decoder give the gradients of the
    dense computation (scatter into [n, width], matmul), AuxK's gradient through pre included."""
    from torch.nn.functional import embedding_bag

    from mechscope.sae.kernels import TopKEncode

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 16, generator=g)
    W_enc, b, W_dec = (torch.randn(40, 16, generator=g), torch.randn(40, generator=g) - 1.0,
                       torch.randn(40, 16, generator=g))
    target, aux_w = torch.randn(50, 16, generator=g), torch.randn(50, 40, generator=g)

    def grads(sparse: bool):
        leaves = [t.clone().requires_grad_() for t in (x, W_enc, b, W_dec)]
        xs, we, bs, wd = leaves
        if sparse:
            vals, idx, pre = TopKEncode.apply(xs, we, bs, 6)
            y = embedding_bag(idx, wd, per_sample_weights=vals, mode="sum")
        else:
            pre = torch.nn.functional.linear(xs, we, bs)
            vals, idx = torch.relu(pre).topk(6, dim=-1)
            y = torch.zeros_like(pre).scatter(-1, idx, vals) @ wd
        ((y - target).pow(2).sum() + (pre * aux_w).sum()).backward()
        return [t.grad for t in leaves]

    for a, d in zip(grads(True), grads(False)):
        assert torch.allclose(a, d, atol=1e-4)


# ------------------------------------------------------------------------------------ online, every layer
def _texts():
    from mechscope.models.tiny import _TEXT

    return {f"work{i:02d}": (_TEXT + " ") * 6 for i in range(14)}


def test_transcoders_for_every_layer_trained_online_resume_exactly(tmp_path, monkeypatch):
    """One forward per batch feeds every layer; a run interrupted after a checkpoint and resumed ends
    with the same weights as an uninterrupted one; the folder loads back as a transcoder set."""
    import mechscope.sae.online as online
    from mechscope.sae import checkpoint_transcoders
    from mechscope.models.tiny import tiny
    from mechscope.sae.evaluate import evaluate_transcoders
    from mechscope.sae.transcoder_sets import load_transcoders

    model = tiny("llama")
    kw = dict(width=32, k=4, tokens=60 * 60, batch_size=60, context=16, corpora=_texts(), checkpoint_every=4, log_every=2,
              lr=3e-3, progress=False)
    full = online.train_transcoders(model, tmp_path / "full", **kw)
    assert full.values.shape == (3, 30, 7) and full.tokens == 60 * 60
    fvu = full.values[:, :, full.columns.index("fvu")]
    assert (fvu[:, -1] < fvu[:, 0]).all() and fvu[:, -1].mean() < 0.85 * fvu[:, 0].mean()  # every layer learns
    calls = {"n": 0}
    real = online.Trainer.step

    def crash(self, x, y, world=1):
        calls["n"] += 1
        if calls["n"] > 3 * 10:  # after step 10: the checkpoint of step 8 is the last complete one
            raise KeyboardInterrupt
        return real(self, x, y, world)

    monkeypatch.setattr(online.Trainer, "step", crash)
    with pytest.raises(KeyboardInterrupt):
        online.train_transcoders(model, tmp_path / "resumed", **kw)
    assert json.loads((tmp_path / "resumed" / "progress.json").read_text())["step"] == 8
    preview = checkpoint_transcoders(tmp_path / "resumed")  # a run in progress, as of step 8
    assert len(preview) == 3 and preview[2].cfg.target_site == "blocks.2.mlp.out"
    with pytest.warns(UserWarning, match="still in progress"):
        assert len(load_transcoders(tmp_path / "resumed", model)) == 3
    monkeypatch.setattr(online.Trainer, "step", real)
    again = online.train_transcoders(model, tmp_path / "resumed", **kw)
    assert again.tokens == 52 * 60
    a, b = load_transcoders(tmp_path / "full", model), load_transcoders(tmp_path / "resumed", model)
    for ca, cb in zip(a.coders, b.coders):
        assert torch.equal(ca.W_enc, cb.W_enc) and torch.equal(ca.W_dec, cb.W_dec)
    assert not list((tmp_path / "full" / "layer_0").glob("checkpoint-*.pt"))[1:]  # only the last is kept
    with pytest.raises(SAEError, match="holds another run"):
        online.train_transcoders(model, tmp_path / "full", **{**kw, "width": 16})
    tokens = online.training_blocks(model.tokenizer, 16, _texts(), seed=1, split="test")[:4]
    fid = evaluate_transcoders(model, a, tokens, progress=False)
    assert len(fid.fvu) == 3 and 0 <= fid.top1_agreement <= 1 and fid.kl >= 0
    assert fid.ce_zero != fid.ce_orig and "CE recovered" in fid.summary()


def test_a_dictionary_worse_than_predicting_zero_says_so():
    """A quick run ended at FVU 1.10 — worse than predicting zero — with no warning."""
    from mechscope.results import Provenance
    from mechscope.sae.trainer import TrainingLog

    columns = ["step", "tokens", "loss", "fvu", "l0", "dead", "lr"]
    log = TrainingLog(provenance=Provenance(model="m", fingerprint="f"), arch="topk", width=64, columns=columns,
                      values=torch.tensor([[10.0, 640.0, 1.0, 1.10, 4.0, 0.0, 1e-3]]))
    assert "WARNING: FVU > 1 — it reconstructs worse than predicting zero" in log.summary()
    log.values[0, 3] = 0.2
    assert "WARNING" not in log.summary()
