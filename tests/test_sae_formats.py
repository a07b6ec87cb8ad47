"""Dictionaries in SAELens and sparsify files: read, written, round-tripped; bad files refused clearly.

The comparison with SAELens's and sparsify's own save / load / forward runs where they install
(their pins clash with the test environment's): `benchmarks/dictionary_formats.py` in
`.venv-bench-sae` (worst relative difference 5.1e-07 over 12 cases, both ways). Here the files are
laid out as the two libraries write them, and the expected outputs are their formulas."""

import json

import pytest
import torch
from safetensors.torch import save_file

from mechscope.sae import SAEConfig, SAEError, SparseCoder, load_dictionary, save_saelens, save_sparsify, site_from_hook

D_IN, D_SAE = 16, 48


def saelens_folder(path, arch="standard", apply_b_dec_to_input=True, k=5, **cfg_extra):
    """A SAELens 6 folder (cfg.json + sae_weights.safetensors, W_enc [d_in, d_sae]) with random weights."""
    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.3, "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
         "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.3, "b_dec": torch.randn(D_IN, generator=g) * 0.1}
    if arch == "jumprelu":
        w["threshold"] = torch.rand(D_SAE, generator=g) * 0.3
    cfg = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"hook_name": "blocks.3.hook_resid_post", "model_name": "tiny"}, **cfg_extra}
    if arch == "topk":
        cfg["k"] = k
    path.mkdir(parents=True, exist_ok=True)
    save_file(w, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path, w, cfg


def saelens_encode(w, cfg, x):
    """SAELens's encode, written from its definition."""
    pre = (x - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "standard":
        return pre.relu()
    if cfg["architecture"] == "jumprelu":
        return pre.relu() * (pre > w["threshold"])
    top = pre.topk(cfg["k"], dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("b_dec_in", [True, False])
def test_a_saelens_folder_reads_as_the_same_dictionary(tmp_path, arch, b_dec_in):
    path, w, cfg = saelens_folder(tmp_path / "sae", arch, b_dec_in)
    sae = load_dictionary(path)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(1)) * 2
    f = saelens_encode(w, cfg, x)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)  # float32 sums in another order
        torch.testing.assert_close(sae(x), f @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)
    assert sae.cfg.site == "blocks.3.resid_post" and sae.cfg.model == "tiny" and sae.cfg.width == D_SAE


@pytest.mark.parametrize("arch,kw", [("relu", {}), ("topk", {"k": 4}), ("jumprelu", {}), ("batchtopk", {"k": 4})])
def test_mechscope_to_saelens_and_back(tmp_path, arch, kw):
    torch.manual_seed(0)
    sae = SparseCoder(SAEConfig(arch, D_IN, D_SAE, site="blocks.2.mlp.out", **kw))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        sae.scale_in.fill_(1.9)  # the input normalisation mechscope trains with is folded into the weights
        sae.scale_out.fill_(1.9)
        sae.batch_threshold.fill_(0.1)
    folder = save_saelens(sae, tmp_path / "out")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(arch, arch)
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_mlp_out"
    back = load_dictionary(folder)
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # float32 weights rescaled once each way: equal to rounding
        torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-5)


def test_bad_dictionary_files_are_refused_by_name(tmp_path):
    path, w, cfg = saelens_folder(tmp_path / "gated", "gated")
    with pytest.raises(SAEError, match="architecture 'gated' is not supported yet; supported: standard, topk, jumprelu"):
        load_dictionary(path)
    path, _, _ = saelens_folder(tmp_path / "norm", normalize_activations="expected_average_only_in")
    with pytest.raises(SAEError, match="normalize_activations='expected_average_only_in'"):
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
