"""Dictionaries in SAELens and sparsify files: read, written, round-tripped; bad files refused clearly.

The comparison with SAELens's and sparsify's own save / load / forward runs where they install
(their pins clash with the test environment's): `benchmarks/dictionary_formats.py` in
`.venv-bench-sae` (worst relative difference 5.1e-07 over 38 cases, both ways, and against TransformerLens's
ln2.hook_normalized on a tiny llama and gemma). Here the files are
laid out as the two libraries write them, and the expected outputs are their formulas."""

import json

import pytest
import torch
from safetensors.torch import save_file

from mechscope.sae import SAEConfig, SAEError, SparseCoder, load_dictionary, save_saelens, save_sparsify, site_from_hook

D_IN, D_SAE = 16, 48


ARCHS = ["standard", "gated", "topk", "jumprelu", "transcoder", "skip_transcoder", "jumprelu_transcoder",
         "jumprelu_skip_transcoder"]


def saelens_folder(path, arch="standard", apply_b_dec_to_input=True, k=5, d_out=D_IN + 4, meta=None, **cfg_extra):
    """A SAELens 6 folder (cfg.json + sae_weights.safetensors, W_enc [d_in, d_sae], W_skip [d_out, d_in])
    with random weights, laid out as SAE.save_model writes each architecture."""
    g = torch.Generator().manual_seed(0)
    transcoder = "transcoder" in arch
    d_out = d_out if transcoder else D_IN
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.3, "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
         "W_dec": torch.randn(D_SAE, d_out, generator=g) * 0.3, "b_dec": torch.randn(d_out, generator=g) * 0.1}
    if "jumprelu" in arch:
        w["threshold"] = torch.rand(D_SAE, generator=g) * 0.3
    if "skip" in arch:
        w["W_skip"] = torch.randn(d_out, D_IN, generator=g) * 0.2
    if arch == "gated":
        w["b_gate"] = w.pop("b_enc")
        w["b_mag"], w["r_mag"] = torch.randn(D_SAE, generator=g) * 0.1, torch.randn(D_SAE, generator=g) * 0.2
    hooks = {"hook_name": "blocks.3.ln2.hook_normalized" if transcoder else "blocks.3.hook_resid_post"}
    if transcoder:
        hooks["hook_name_out"] = "blocks.3.hook_mlp_out"
    cfg = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec_to_input and not transcoder, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": {**hooks, "model_name": "tiny", **(meta or {})}, **cfg_extra}
    if transcoder:
        cfg["d_out"] = d_out
        cfg["metadata"]["hook_name"] = "blocks.3.hook_resid_mid"  # a site mechscope has without a model
    if arch == "topk":
        cfg["k"] = k
    path.mkdir(parents=True, exist_ok=True)
    save_file(w, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path, w, cfg


def saelens_forward(w, cfg, x):
    """SAELens's encode and forward, written from its definitions: (latents, output)."""
    arch, norm = cfg["architecture"], cfg.get("normalize_activations", "none")
    x_in = x
    if norm == "constant_norm_rescale":
        coeff = D_IN ** 0.5 / x.norm(dim=-1, keepdim=True)
        x_in = x * coeff
    elif norm == "layer_norm":
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True)
        x_in = (x - mu) / (std + 1e-5)
    sae_in = x_in - w["b_dec"] if cfg["apply_b_dec_to_input"] else x_in
    if arch == "gated":
        f = (sae_in @ w["W_enc"] + w["b_gate"] > 0) * (sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]).relu()
    else:
        pre = sae_in @ w["W_enc"] + w["b_enc"]
        if cfg.get("rescale_acts_by_decoder_norm"):
            pre = pre * w["W_dec"].norm(dim=-1)
        if arch == "topk":
            top = pre.topk(cfg["k"], dim=-1)
            f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        else:
            f = pre.relu() * (pre > w["threshold"]) if "jumprelu" in arch else pre.relu()
    acts = f / w["W_dec"].norm(dim=-1) if cfg.get("rescale_acts_by_decoder_norm") else f
    out = acts @ w["W_dec"] + w["b_dec"]
    if "skip" in arch:
        out = out + x @ w["W_skip"].T
    if norm == "constant_norm_rescale" and "transcoder" not in arch:
        out = out / coeff
    elif norm == "layer_norm" and "transcoder" not in arch:
        out = out * std + mu
    return f, out


X = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(1)) * 2


def assert_same(sae, w, cfg, x=X):
    f, out = saelens_forward(w, cfg, x)
    with torch.no_grad():  # float32 sums in another order, weights refolded in float64 once
        torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,b_dec_in", [(a, b) for a in ARCHS for b in (True, False)
                                            if b or "transcoder" not in a])  # transcoders never subtract b_dec
def test_a_saelens_folder_reads_as_the_same_dictionary(tmp_path, arch, b_dec_in):
    path, w, cfg = saelens_folder(tmp_path / "sae", arch, b_dec_in)
    sae = load_dictionary(path)
    assert_same(sae, w, cfg)
    assert sae.cfg.model == "tiny" and sae.cfg.width == D_SAE
    if "transcoder" in arch:
        assert (sae.cfg.site, sae.cfg.target_site, sae.cfg.d_out, sae.cfg.skip) == \
            ("blocks.3.resid_mid", "blocks.3.mlp.out", D_IN + 4, "skip" in arch)
    else:
        assert sae.cfg.site == "blocks.3.resid_post" and not sae.cfg.transcoder


@pytest.mark.parametrize("norm", ["constant_norm_rescale", "layer_norm"])
@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu_transcoder"])
def test_saelens_row_normalisations(tmp_path, norm, arch):
    path, w, cfg = saelens_folder(tmp_path / "sae", arch, normalize_activations=norm)
    sae = load_dictionary(path)
    assert sae.cfg.input_norm == {"constant_norm_rescale": "rescale", "layer_norm": "layer_norm"}[norm]
    assert_same(sae, w, cfg, X * 3 + 0.5)
    if arch != "jumprelu_transcoder":  # and out again
        back = load_dictionary(save_saelens(sae, tmp_path / "again"))
        assert_same(back, w, cfg, X * 3 + 0.5)


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path):
    path, w, cfg = saelens_folder(tmp_path / "sae", "topk", rescale_acts_by_decoder_norm=True)
    w["W_dec"] *= torch.rand(D_SAE, 1, generator=torch.Generator().manual_seed(9)) * 3 + 0.2  # norms far from 1
    save_file(w, str(path / "sae_weights.safetensors"))
    assert_same(load_dictionary(path), w, cfg)


def test_saelens_configs_before_6(tmp_path):
    """A 5.x-style config: hook_point, activation_fn_kwargs, boolean normalize_activations, metadata
    at the top level — read as SAELens's handle_pre_6_0_config reads it."""
    path, w, cfg = saelens_folder(tmp_path / "old", "standard")
    old = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "hook_point": "blocks.2.hook_mlp_out",
           "hook_point_layer": 2, "hook_point_head_index": None, "model_name": "gpt2-small", "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 7}, "normalize_activations": False, "sae_lens_version": "3.12.0",
           "context_size": 128, "prepend_bos": True, "finetuning_scaling_factor": False}
    (path / "cfg.json").write_text(json.dumps(old))
    sae = load_dictionary(path)
    assert (sae.cfg.arch, sae.cfg.k, sae.cfg.site, sae.cfg.model) == ("topk", 7, "blocks.2.mlp.out", "gpt2-small")
    assert_same(sae, w, {"architecture": "topk", "k": 7, "apply_b_dec_to_input": True})
    w["scaling_factor"] = torch.rand(D_SAE, generator=torch.Generator().manual_seed(3)) + 0.5
    save_file(w, str(path / "sae_weights.safetensors"))
    with pytest.raises(SAEError, match="scaling_factor is present but finetuning_scaling_factor is false"):
        load_dictionary(path)
    (path / "cfg.json").write_text(json.dumps({**old, "finetuning_scaling_factor": True}))
    f, _ = saelens_forward(w, {"architecture": "topk", "k": 7, "apply_b_dec_to_input": True}, X)
    with torch.no_grad():  # old SAELens decoded f·scaling_factor: folded into W_dec's rows
        torch.testing.assert_close(load_dictionary(path)(X), (f * w["scaling_factor"]) @ w["W_dec"] + w["b_dec"],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,kw,saelens_arch", [
    ("relu", {}, "standard"), ("topk", {"k": 4}, "topk"), ("jumprelu", {}, "jumprelu"), ("batchtopk", {"k": 4}, "jumprelu"),
    ("gated", {}, "gated"), ("relu", {"input_norm": "layer_norm"}, "standard"),
    ("relu", {"d_out": 20, "target_site": "blocks.2.mlp.out", "site": "blocks.2.mlp.in"}, "transcoder"),
    ("jumprelu", {"d_out": 20, "skip": True, "target_site": "blocks.2.mlp.out", "site": "blocks.2.mlp.in"},
     "jumprelu_skip_transcoder")])
def test_mechscope_to_saelens_and_back(tmp_path, arch, kw, saelens_arch):
    torch.manual_seed(0)
    sae = SparseCoder(SAEConfig(arch, D_IN, D_SAE, **{"site": "blocks.2.mlp.out", **kw}))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        sae.scale_in.fill_(1.9)  # the input normalisation mechscope trains with is folded into the weights
        sae.scale_out.fill_(1.9 if not sae.cfg.transcoder else 0.7)
        sae.b_in.normal_()  # a transcoder's input centring is folded into b_enc
        sae.batch_threshold.fill_(0.1)
    folder = save_saelens(sae, tmp_path / "out")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == saelens_arch
    assert cfg["metadata"]["hook_name"] == ("blocks.2.hook_mlp_out" if not sae.cfg.transcoder else "blocks.2.mlp.hook_in")
    back = load_dictionary(folder, site=sae.cfg.site)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # float32 weights rescaled once each way: equal to rounding
        torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-5)


def test_head_dictionaries_read_one_head_or_all_heads_flattened(tmp_path):
    """SAELens hook_z (reshape_activations, [.., head·d_head]) and hook_head_index (one head)."""
    path, w, cfg = saelens_folder(tmp_path / "z", reshape_activations="hook_z",
                                  meta={"hook_name": "blocks.1.attn.hook_z"})
    sae = load_dictionary(path)
    assert (sae.cfg.site, sae.cfg.head) == ("blocks.1.attn.z", None)
    assert json.loads((save_saelens(sae, tmp_path / "z2") / "cfg.json").read_text())["reshape_activations"] == "hook_z"
    path, w, cfg = saelens_folder(tmp_path / "h", meta={"hook_name": "blocks.1.attn.hook_z", "hook_head_index": 2})
    sae = load_dictionary(path)
    assert (sae.cfg.site, sae.cfg.head) == ("blocks.1.attn.z", 2)
    cfg2 = json.loads((save_saelens(sae, tmp_path / "h2") / "cfg.json").read_text())
    assert (cfg2["metadata"]["hook_head_index"], cfg2["reshape_activations"]) == (2, "none")


def test_bad_dictionary_files_are_refused_by_name(tmp_path):
    path, w, cfg = saelens_folder(tmp_path / "abstopk", "abstopk")
    with pytest.raises(SAEError, match="architecture 'abstopk': not supported; supported: standard, gated, topk"):
        load_dictionary(path)
    path, w, cfg = saelens_folder(tmp_path / "batchtopk", "batchtopk")
    with pytest.raises(SAEError, match="saves BatchTopK and Matryoshka SAEs as jumprelu"):
        load_dictionary(path)
    path, _, _ = saelens_folder(tmp_path / "norm", normalize_activations="expected_average_only_in")
    with pytest.warns(UserWarning, match="was not folded into these weights"):
        load_dictionary(path)
    path, _, _ = saelens_folder(tmp_path / "norm2", normalize_activations="whitened_twice")
    with pytest.raises(SAEError, match="normalize_activations='whitened_twice'; known: none"):
        load_dictionary(path)
    path, w, cfg = saelens_folder(tmp_path / "gated", "gated")
    del w["r_mag"]
    save_file(w, str(path / "sae_weights.safetensors"))
    with pytest.raises(SAEError, match=r"lacks \['r_mag'\]"):
        load_dictionary(path)
    path, w, cfg = saelens_folder(tmp_path / "nan")
    w["W_dec"][0, 0] = float("nan")
    save_file(w, str(path / "sae_weights.safetensors"))
    with pytest.raises(SAEError, match="W_dec contains NaN"):
        load_dictionary(path)
    path, w, cfg = saelens_folder(tmp_path / "shape")
    w["W_dec"] = w["W_dec"][:, :-1].contiguous()
    save_file(w, str(path / "sae_weights.safetensors"))
    with pytest.raises(SAEError, match="shapes disagree"):
        load_dictionary(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEError, match="holds neither config.json"):
        load_dictionary(tmp_path / "empty")
    with pytest.raises(SAEError, match="is not a folder"):
        load_dictionary(tmp_path / "missing")
    with pytest.raises(SAEError, match="without its gain"):
        site_from_hook("blocks.4.ln2.hook_normalized")
    assert site_from_hook("blocks.4.attn.hook_z") == "blocks.4.attn.z"


def sparsify_folder(path, k=5):
    """A sparsify folder (one per hookpoint: cfg.json + sae.safetensors, encoder.weight [latents, d_in])."""
    g = torch.Generator().manual_seed(3)
    w = {"encoder.weight": torch.randn(D_SAE, D_IN, generator=g) * 0.3, "encoder.bias": torch.randn(D_SAE, generator=g) * 0.1,
         "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.3, "b_dec": torch.randn(D_IN, generator=g) * 0.1}
    cfg = {"activation": "topk", "expansion_factor": 3, "normalize_decoder": True, "num_latents": D_SAE, "k": k,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D_IN}
    path.mkdir(parents=True, exist_ok=True)
    save_file(w, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path, w, cfg


def test_a_sparsify_folder_reads_as_the_same_dictionary(tmp_path):
    path, w, cfg = sparsify_folder(tmp_path / "layers.6.mlp")
    sae = load_dictionary(path)
    assert sae.cfg.arch == "topk" and sae.cfg.k == 5 and sae.cfg.site == "blocks.6.mlp.out"
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(4))
    pre = ((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"]).relu()  # sparsify's encode
    top = pre.topk(5, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), f @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)
    back = load_dictionary(save_sparsify(sae, tmp_path / "again"))  # and out again
    with torch.no_grad():
        torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(SAEError, match="sparsify files hold TopK dictionaries only; this one is 'jumprelu'"):
        save_sparsify(SparseCoder(SAEConfig("jumprelu", D_IN, D_SAE)), tmp_path / "no")
    path, w, cfg = sparsify_folder(tmp_path / "groupmax")
    (path / "cfg.json").write_text(json.dumps({**cfg, "activation": "groupmax"}))
    with pytest.raises(SAEError, match="activation 'groupmax' is not supported"):
        load_dictionary(path)


def test_a_gemma_scope_folder_reads_with_the_site_named(tmp_path):
    """Gemma Scope's params.npz: JumpReLU whose encoder reads x itself (no b_dec subtraction);
    the folder gives the layer, not the site, so the caller names it."""
    import numpy as np

    g = np.random.default_rng(5)
    w = {"W_enc": g.normal(size=(D_IN, D_SAE)) * 0.3, "W_dec": g.normal(size=(D_SAE, D_IN)) * 0.3,
         "b_enc": g.normal(size=D_SAE) * 0.1, "b_dec": g.normal(size=D_IN) * 0.1, "threshold": g.random(D_SAE) * 0.2}
    w = {k: torch.from_numpy(v.astype(np.float32)) for k, v in w.items()}
    folder = tmp_path / "layer_7" / "width_16k" / "average_l0_40"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in w.items()})
    with pytest.raises(SAEError, match=r"does not say which site it reads; give site= \(e.g. blocks.7.resid_post"):
        load_dictionary(folder)
    sae = load_dictionary(folder / "params.npz", site="blocks.7.mlp.out")
    assert sae.cfg.arch == "jumprelu" and sae.cfg.site == "blocks.7.mlp.out"
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(6))
    pre = x @ w["W_enc"] + w["b_enc"]
    f = pre.relu() * (pre > w["threshold"])
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), f @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in w.items() if k != "threshold"})
    with pytest.raises(SAEError, match=r"lacks \['threshold'\]"):
        load_dictionary(folder, site="blocks.7.mlp.out")


def model_with_random_norms(family):
    """A tiny model whose pre-MLP norms have gains (and, for LayerNorm, biases) far from 1 and 0."""
    from mechscope.models.tiny import tiny

    model = tiny(family)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.hf.named_parameters():
            if f".{model.adapter.mid_norm}." in name:  # the pre-MLP norm (Gemma 2: pre_feedforward_layernorm)
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("weight") else torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.mark.parametrize("family", ["llama", "gemma", "gemma2", "gpt2"])
@pytest.mark.parametrize("arch", ["standard", "jumprelu_skip_transcoder"])
def test_ln2_hook_normalized_is_folded_into_mlp_in(tmp_path, family, arch):
    """TransformerLens's ln2.hook_normalized is the pre-MLP norm's output without gain g (and bias b);
    with the model given, the dictionary reads mechscope's mlp.in = g·x̂ + b instead (gemma's gain is
    1 + weight). Checked here against the definitions; against TransformerLens itself in
    benchmarks/dictionary_formats.py."""
    model = model_with_random_norms(family)
    d = model.cfg.d_model
    path, w, cfg = saelens_folder(tmp_path / "sae", arch, d_out=d)
    g = torch.Generator().manual_seed(12)
    w = {k: torch.randn(v.shape[:-1] + (d,) if k in ("W_dec", "b_dec") else v.shape, generator=g) * 0.2
         if k in ("W_dec", "b_dec") else v for k, v in w.items()}
    w["W_enc"] = torch.randn(d, D_SAE, generator=g) * 0.3
    if "W_skip" in w:
        w["W_skip"] = torch.randn(d, d, generator=g) * 0.1
    save_file(w, str(path / "sae_weights.safetensors"))
    cfg.update(d_in=d, d_out=d)
    cfg["metadata"].update(hook_name="blocks.1.ln2.hook_normalized", model_name=model.name)
    if "transcoder" in arch:
        cfg["metadata"]["hook_name_out"] = "blocks.1.hook_mlp_out"
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match="without its gain.*give model="):
        load_dictionary(path)
    sae = load_dictionary(path, model=model)
    assert sae.cfg.site == "blocks.1.mlp.in"
    mlp_in = model.run(torch.arange(3, 40).view(1, -1), cache="blocks.1.mlp.in").cache["blocks.1.mlp.in"][0]
    norm = model.hf.get_submodule(f"{model.adapter.blocks}.1.{model.adapter.mid_norm}")
    gain = norm.weight + 1 if family.startswith("gemma") else norm.weight
    bias = norm.bias if family == "gpt2" else 0.0
    x_hat = ((mlp_in - bias) / gain).detach()
    f, out = saelens_forward(w, cfg, x_hat)
    want = out if "transcoder" in arch else out * gain + bias
    with torch.no_grad():  # float32 activations through weights refolded in float64
        torch.testing.assert_close(sae.encode(mlp_in), f, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sae(mlp_in), want.detach(), rtol=1e-4, atol=1e-4)


def test_a_dictionary_for_another_model_or_site_is_refused(tmp_path):
    from mechscope.models.tiny import tiny

    llama, gpt2 = tiny("llama"), tiny("gpt2")
    path, w, cfg = saelens_folder(tmp_path / "narrow")  # d_in 16; the tiny models are 64 wide
    cfg["metadata"].update(model_name="tiny-llama", hook_name="blocks.2.hook_resid_post")
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match="has width 16 at blocks.2.resid_post; tiny-llama's blocks.2.resid_post is 64"):
        load_dictionary(path, model=llama)
    cfg["metadata"].update(model_name="gpt2-small", hook_name="blocks.1.hook_resid_post")
    cfg["d_in"] = 64
    w = {"W_enc": torch.randn(64, D_SAE) * 0.1, "b_enc": torch.zeros(D_SAE), "W_dec": torch.randn(D_SAE, 64) * 0.1,
         "b_dec": torch.zeros(64)}
    save_file(w, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="names the model 'gpt2-small'; this one is 'tiny-llama'.* sites and widths fit"):
        assert load_dictionary(path, model=llama).cfg.site == "blocks.1.resid_post"  # a name alone refuses nothing
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dictionary(path, model=llama, other_model=True).cfg.site == "blocks.1.resid_post"
    llama.hf.config._name_or_path = "org/GPT2-small"  # the hub id a saved folder's config records
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dictionary(path, model=llama)
    llama.hf.config._name_or_path = ""
    cfg["metadata"]["hook_name"] = "blocks.7.hook_resid_post"
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match="reads site 'blocks.7.resid_post', which tiny-llama does not have"):
        load_dictionary(path, model=llama, other_model=True)
    # TransformerLens's centred residual stream: a view of LayerNorm models only
    cfg["metadata"].update(hook_name="blocks.1.hook_resid_post", model_from_pretrained_kwargs={"center_writing_weights": True})
    (path / "cfg.json").write_text(json.dumps(cfg))
    assert load_dictionary(path, model=gpt2, other_model=True).cfg.input_norm == "center"
    assert load_dictionary(path, model=llama, other_model=True).cfg.input_norm == "none"
    sae = load_dictionary(path, model=gpt2, other_model=True)
    x = torch.randn(5, 64)
    with torch.no_grad():  # reads x − mean(x), gives the mean back
        f = ((x - x.mean(-1, keepdim=True) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]).relu()
        torch.testing.assert_close(sae(x), f @ w["W_dec"] + w["b_dec"] + x.mean(-1, keepdim=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", [None, 1])
def test_head_dictionaries_splice_into_attn_z(head):
    """An exact dictionary (f = ReLU([x, −x]), decoded as f₊ − f₋) spliced at attn.z leaves the run as
    it was; a zero decoder empties its head (or all heads) and nothing else."""
    from mechscope.models.tiny import tiny
    from mechscope.sae import splice

    model = tiny("llama")
    d = model.cfg.d_head if head is not None else model.cfg.n_heads * model.cfg.d_head
    sae = SparseCoder(SAEConfig("relu", d, 2 * d, site="blocks.1.attn.z", head=head))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_(), sae.b_dec.zero_()
    tokens = torch.arange(3, 30).view(1, -1)
    clean = model.run(tokens, cache="blocks.1.attn.z")
    spliced = model.run(tokens, interventions=splice(sae), cache="blocks.1.attn.z")
    torch.testing.assert_close(spliced.logits, clean.logits, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        sae.W_dec.zero_()
    z = model.run(tokens, interventions=splice(sae), cache="blocks.1.attn.z").cache["blocks.1.attn.z"]
    z0 = clean.cache["blocks.1.attn.z"]
    emptied = [head] if head is not None else list(range(model.cfg.n_heads))
    assert z[..., emptied, :].abs().max() == 0
    kept = [h for h in range(model.cfg.n_heads) if h not in emptied]
    torch.testing.assert_close(z[..., kept, :], z0[..., kept, :])


@pytest.mark.parametrize("skip", [False, True])
def test_a_sparsify_transcoder_reads_and_writes(tmp_path, skip):
    """sparsify transcoders: the encoder reads x itself (no b_dec subtraction); W_skip [d_in, d_in]
    is applied as x W_skipᵀ; the hookpoint layers.N.mlp reads mlp.in and writes mlp.out."""
    path, w, cfg = sparsify_folder(tmp_path / "layers.2.mlp")
    cfg.update(transcode=True, skip_connection=skip)
    if skip:
        w["W_skip"] = torch.randn(D_IN, D_IN, generator=torch.Generator().manual_seed(8)) * 0.2
        save_file(w, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    sae = load_dictionary(path)
    assert (sae.cfg.site, sae.cfg.target_site, sae.cfg.skip) == ("blocks.2.mlp.in", "blocks.2.mlp.out", skip)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(4))
    top = (x @ w["encoder.weight"].T + w["encoder.bias"]).relu().topk(5, dim=-1)
    f = torch.zeros(64, D_SAE).scatter(-1, top.indices, top.values)
    y = f @ w["W_dec"] + w["b_dec"] + (x @ w["W_skip"].T if skip else 0)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), y, rtol=1e-5, atol=1e-5)
        back = load_dictionary(save_sparsify(sae, tmp_path / "out" / "layers.2.mlp"))
        torch.testing.assert_close(back(x), y, rtol=1e-5, atol=1e-5)
    cfg.update(transcode=False, skip_connection=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match="skip connection on an autoencoder"):
        load_dictionary(path)


def test_malformed_configs_are_refused_by_name(tmp_path):
    """A cfg.json that is a JSON list raised AttributeError; a TopK config without k a KeyError."""
    path, _, cfg = saelens_folder(tmp_path / "list")
    (path / "cfg.json").write_text(json.dumps([cfg]))
    with pytest.raises(SAEError, match="holds a JSON list; a dictionary's config is a JSON object"):
        load_dictionary(path)
    for k in (None, 0, "5", 2.5):
        path, _, cfg = saelens_folder(tmp_path / f"topk-{k}", arch="topk")
        cfg.pop("k", None)
        if k is not None:
            cfg["k"] = k
        (path / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(SAEError, match=f"a topk config needs k, .* it has k={k!r}"):
            load_dictionary(path)


def test_info_describes_a_transcoder_that_does_not_name_its_output(tmp_path, capsys):
    """`mechscope sae info` exited 2 on a valid SAELens transcoder whose metadata names no output hook;
    now it describes what the files say and what is missing, and loading names the flag that supplies it."""
    from mechscope.cli import main

    path, _, cfg = saelens_folder(tmp_path / "tc", arch="transcoder", d_out=D_IN)
    del cfg["metadata"]["hook_name_out"]
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEError, match=r"do not name the site it writes; give target_site= \(--target-site"):
        load_dictionary(path)
    assert main(["sae", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "reads      blocks.3.resid_mid, d_in" in out and "writes     (not named: give --target-site)" in out
    assert load_dictionary(path, target_site="blocks.3.mlp.out").cfg.transcoder


def test_weights_of_the_wrong_rank_and_sites_past_the_last_layer_are_refused(tmp_path):
    """A sparsify encoder of rank 3 raised an unpacking ValueError; every reader now names the tensor, its
    shape and the layout it should have. A SAELens file naming layer 99 of a 3-layer model is refused when
    the model is given, whatever the model's name says."""
    from mechscope.models.tiny import tiny

    path, w, cfg = sparsify_folder(tmp_path / "layers.1")
    save_file({**w, "encoder.weight": w["encoder.weight"][None]}, str(path / "sae.safetensors"))
    with pytest.raises(SAEError, match=r"encoder.weight has shape \[1, \d+, \d+\] \(rank 3\); it should be "
                                       r"\[width, d_in\] \(rank 2\)"):
        load_dictionary(path)
    path, w, cfg = saelens_folder(tmp_path / "saelens")
    save_file({**w, "b_enc": w["b_enc"][:, None]}, str(path / "sae_weights.safetensors"))
    with pytest.raises(SAEError, match=r"b_enc has shape \[\d+, 1\] \(rank 2\); it should be \[d_sae\]"):
        load_dictionary(path)
    llama = tiny("llama")
    w = {"W_enc": torch.randn(64, D_SAE) * 0.1, "b_enc": torch.zeros(D_SAE), "W_dec": torch.randn(D_SAE, 64) * 0.1,
         "b_dec": torch.zeros(64)}
    for model_name in ("tiny-llama", "another-model"):
        path, _, cfg = saelens_folder(tmp_path / f"layer99-{model_name}")
        cfg["d_in"] = 64
        cfg["metadata"].update(model_name=model_name, hook_name="blocks.99.hook_resid_post")
        save_file(w, str(path / "sae_weights.safetensors"))
        (path / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(SAEError, match="reads site 'blocks.99.resid_post', which tiny-llama does not have"):
            load_dictionary(path, model=llama)
