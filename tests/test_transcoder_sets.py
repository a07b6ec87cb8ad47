"""circuit-tracer transcoder sets: per-layer files (either orientation, hf:// from a local cache)
and cross-layer transcoders, read as circuit-tracer defines them and spliced into a model.

circuit-tracer itself does not install beside this environment's pins; the files here are laid out
as its `load_relu_transcoder`, `load_gemma_scope_transcoder` and `load_clt` (0.5.0) read them, and
the expected outputs are its formulas: F.linear(x, W_enc, b_enc), JumpReLU x·[x > θ],
f W_dec + b_dec + x W_skipᵀ; a CLT's layer j writes Σ_{i≤j} f_i W_dec_i[:, j − i] + b_dec_j."""

import pytest
import torch
import yaml
from safetensors.torch import save_file

from mechscope.models.tiny import tiny
from mechscope.sae import SAEError
from mechscope.sae.transcoder_sets import CrossLayerTranscoder, TranscoderSet, load_transcoder_set, resolve_hf_uri

F = 40


@pytest.fixture(scope="module")
def model():
    return tiny("llama")


def layer_weights(d, seed, jump=False, skip=False):
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(F, d, generator=g) * 0.3, "W_dec": torch.randn(F, d, generator=g) * 0.1,
         "b_enc": torch.randn(F, generator=g) * 0.1, "b_dec": torch.randn(d, generator=g) * 0.1}
    if jump:
        w["activation_function.threshold"] = torch.rand(F, generator=g) * 0.2
    if skip:
        w["W_skip"] = torch.randn(d, d, generator=g) * 0.05
    return w


def tracer_forward(w, x):
    """circuit-tracer's SingleLayerTranscoder: (features, output)."""
    pre = torch.nn.functional.linear(x, w["W_enc"], w["b_enc"])
    th = w.get("activation_function.threshold")
    f = pre * (pre > th) if th is not None else pre.relu()
    out = f @ w["W_dec"] + w["b_dec"] + (x @ w["W_skip"].T if "W_skip" in w else 0)
    return f, out


def write_set(folder, weights, transpose_enc=False, listed=None, **cfg):
    folder.mkdir(parents=True, exist_ok=True)
    for i, w in enumerate(weights):
        w = dict(w)
        if transpose_enc:  # an older release's orientation: [d_in, features]
            w["W_enc"] = w["W_enc"].T.contiguous()
        save_file(w, str(folder / f"layer_{i}.safetensors"))
    config = {"model_name": "tiny-llama", "model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in",
              "feature_output_hook": "hook_mlp_out", **cfg}
    if listed is not None:
        config["transcoders"] = listed
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.mark.parametrize("jump,skip,transpose", [(False, False, False), (True, True, False), (True, False, True)])
def test_a_per_layer_set_reads_as_circuit_tracer_defines_it(tmp_path, model, jump, skip, transpose):
    d = model.cfg.d_model
    weights = [layer_weights(d, seed, jump, skip) for seed in range(model.cfg.n_layers)]
    tset = load_transcoder_set(write_set(tmp_path / "set", weights, transpose), model=model)
    assert isinstance(tset, TranscoderSet) and len(tset) == model.cfg.n_layers
    x = torch.randn(20, d, generator=torch.Generator().manual_seed(9))
    for layer, w in enumerate(weights):
        coder = tset[layer]
        assert (coder.cfg.site, coder.cfg.target_site) == (f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out")
        f, out = tracer_forward(w, x)
        with torch.no_grad():
            torch.testing.assert_close(coder.encode(x), f, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(coder(x), out, rtol=1e-5, atol=1e-5)
    tokens = torch.arange(3, 25).view(1, -1)
    clean = model.run(tokens).logits
    torch.testing.assert_close(model.run(tokens, interventions=tset.splice(error=True)).logits, clean, rtol=1e-4, atol=1e-4)
    assert (model.run(tokens, interventions=tset.splice()).logits - clean).abs().max() > 1e-3


def test_gemma_scope_files_in_a_set(tmp_path, model):
    """Gemma Scope transcoders (params.npz, W_enc [d_in, features]) and Gemma Scope 2 safetensors
    (w_enc [d_in, features], w_dec, threshold, affine_skip_connection applied as x·A)."""
    import numpy as np

    d = model.cfg.d_model
    weights = [layer_weights(d, s, jump=True, skip=True) for s in range(3)]
    folder = tmp_path / "gs"
    folder.mkdir()
    for i, w in enumerate(weights):
        if i == 0:  # npz: no skip connection in Gemma Scope 1
            np.savez(folder / "layer_0.npz", W_enc=w["W_enc"].T.numpy(), W_dec=w["W_dec"].numpy(), b_enc=w["b_enc"].numpy(),
                     b_dec=w["b_dec"].numpy(), threshold=w["activation_function.threshold"].numpy())
            del w["W_skip"]
        else:
            save_file({"w_enc": w["W_enc"].T.contiguous(), "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
                       "threshold": w["activation_function.threshold"], "affine_skip_connection": w["W_skip"].T.contiguous()},
                      str(folder / f"layer_{i}.safetensors"))
    write_set(folder, [], listed=["layer_0.npz", "layer_1.safetensors", "layer_2.safetensors"])
    tset = load_transcoder_set(folder)
    x = torch.randn(9, d, generator=torch.Generator().manual_seed(2))
    for layer, w in enumerate(weights):
        f, out = tracer_forward(w, x)
        with torch.no_grad():
            torch.testing.assert_close(tset[layer].encode(x), f, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(tset[layer](x), out, rtol=1e-5, atol=1e-5)


def test_hf_uris_resolve_from_the_local_cache_or_are_refused(tmp_path, model):
    d = model.cfg.d_model
    cache = tmp_path / "hub"
    snap = cache / "models--org--tc" / "snapshots" / "abc123"
    (cache / "models--org--tc" / "refs").mkdir(parents=True)
    (cache / "models--org--tc" / "refs" / "main").write_text("abc123")
    write_set(snap / "sub", [layer_weights(d, s) for s in range(3)])
    uris = [f"hf://org/tc/sub/layer_{i}.safetensors" for i in range(3)]
    assert resolve_hf_uri(uris[1], cache) == snap / "sub" / "layer_1.safetensors"
    assert resolve_hf_uri("hf://org/tc/sub/layer_1.safetensors?revision=abc123", cache).is_file()
    folder = write_set(tmp_path / "cfg", [], listed=uris)
    assert len(load_transcoder_set(folder, hf_cache=cache)) == 3
    with pytest.raises(SAEError, match=r"not in the local Hugging Face cache: looked for .*models--org--tc/snapshots/abc123/sub/layer_9"):
        resolve_hf_uri("hf://org/tc/sub/layer_9.safetensors", cache)
    write_set(folder, [], listed=uris[:2] + ["hf://org/other/x.safetensors"])
    with pytest.raises(SAEError, match="models--org--other"):
        load_transcoder_set(folder, hf_cache=cache)
    # a path built from the file's contents stays inside the cache (was: any file the process could read)
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    for uri in ("hf://org/tc/secret.safetensors?revision=../../../..", "hf://org/tc/../../../../secret.safetensors",
                "hf://org/tc/sub/layer_1.safetensors?revision=/etc"):
        with pytest.raises(SAEError, match="leads outside the Hugging Face cache's snapshots of org/tc"):
            resolve_hf_uri(uri, cache)
    for listed, match in (([1, 2, 3], "transcoders is \\[1, 2, 3\\]; it is a list of file paths"),
                          ([["a"], ["b"]], "it is a list of file paths"), ("layer_0", "it is a list of file paths")):
        write_set(folder, [], listed=listed)
        with pytest.raises(SAEError, match=match):
            load_transcoder_set(folder, hf_cache=cache)
    write_set(folder, [], listed=uris, feature_input_hook=7)
    with pytest.raises(SAEError, match="feature_input_hook is 7; it is a string"):
        load_transcoder_set(folder, hf_cache=cache)


def test_bad_sets_are_refused_by_name(tmp_path, model):
    d = model.cfg.d_model
    with pytest.raises(SAEError, match="holds no config.yaml"):
        load_transcoder_set(tmp_path)
    folder = write_set(tmp_path / "a", [layer_weights(d, s) for s in range(3)], model_kind="mixture")
    with pytest.raises(SAEError, match="model_kind 'mixture'; known: transcoder_set, cross_layer_transcoder"):
        load_transcoder_set(folder)
    bad = layer_weights(d, 0)
    bad["W_dec"] = bad["W_dec"][:, :-1].contiguous()
    folder = write_set(tmp_path / "b", [bad])
    with pytest.raises(SAEError, match="W_dec is .*b_dec says d_out = 64"):
        load_transcoder_set(folder)
    nan = layer_weights(d, 0)
    nan["b_enc"][3] = float("nan")
    with pytest.raises(SAEError, match="b_enc contains NaN"):
        load_transcoder_set(write_set(tmp_path / "c", [nan]))
    folder = write_set(tmp_path / "d", [layer_weights(d, s) for s in range(3)], model_name="gpt2")
    with pytest.warns(UserWarning, match="names the model 'gpt2'; this one is 'tiny-llama'"):  # fits: a warning
        load_transcoder_set(folder, model=model)
    folder = write_set(tmp_path / "e", [layer_weights(d, s) for s in range(3)], feature_input_hook="ln2.hook_normalized")
    with pytest.raises(SAEError, match="without its gain.*give model="):
        load_transcoder_set(folder)
    assert load_transcoder_set(folder, model=model)[0].cfg.site == "blocks.0.mlp.in"


def write_clt(folder, n, d, jump=True, same_layer_only=False, seed=0):
    """W_enc_i / W_dec_i files as circuit-tracer's load_clt reads them."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = []
    for i in range(n):
        enc = {f"W_enc_{i}": torch.randn(F, d, generator=g) * 0.3, f"b_enc_{i}": torch.randn(F, generator=g) * 0.1,
               f"b_dec_{i}": torch.randn(d, generator=g) * 0.1}
        if jump:
            enc[f"threshold_{i}"] = torch.rand(F, generator=g) * 0.2
        dec = torch.randn(F, n - i, d, generator=g) * 0.1
        if same_layer_only:
            dec[:, 1:] = 0
        save_file(enc, str(folder / f"W_enc_{i}.safetensors"))
        save_file({f"W_dec_{i}": dec}, str(folder / f"W_dec_{i}.safetensors"))
        weights.append((enc, dec))
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "model_name": "tiny-llama", "model_kind": "cross_layer_transcoder", "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out"}))
    return folder, weights


def test_a_cross_layer_transcoder_reads_and_writes_across_layers(tmp_path, model):
    n, d = model.cfg.n_layers, model.cfg.d_model
    folder, weights = write_clt(tmp_path / "clt", n, d)
    clt = load_transcoder_set(folder, model=model)
    assert isinstance(clt, CrossLayerTranscoder) and clt.sites[1] == "blocks.1.resid_mid"
    x = torch.randn(n, 7, d, generator=torch.Generator().manual_seed(3))
    f = []
    for i, (enc, _) in enumerate(weights):
        pre = torch.nn.functional.linear(x[i], enc[f"W_enc_{i}"], enc[f"b_enc_{i}"])
        f.append(pre * (pre > enc[f"threshold_{i}"]))
    want = torch.stack([sum(f[i] @ weights[i][1][:, j - i] for i in range(j + 1)) + weights[j][0][f"b_dec_{j}"]
                        for j in range(n)])
    with torch.no_grad():
        torch.testing.assert_close(clt.encode(x), torch.stack(f), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clt(x), want, rtol=1e-5, atol=1e-5)
    tokens = torch.arange(3, 25).view(1, -1)
    clean = model.run(tokens).logits
    torch.testing.assert_close(model.run(tokens, interventions=clt.splice(error=True)).logits, clean, rtol=1e-4, atol=1e-4)
    spliced = model.run(tokens, interventions=clt.splice()).logits
    ablated = model.run(tokens, interventions=clt.splice(ablate=[(0, f) for f in range(F)])).logits
    assert (spliced - clean).abs().max() > 1e-3 and (ablated - spliced).abs().max() > 1e-4
    with pytest.raises(SAEError, match=r"\(0, 99\) is not a feature"):
        clt.splice(ablate=[(0, 99)])


def test_a_clt_writing_only_its_own_layer_is_a_per_layer_set(tmp_path, model):
    """Decoders that write only at their own layer (W_dec_i[:, 1:] = 0) make the CLT a set of
    per-layer transcoders: splicing either gives the same run."""
    n, d = model.cfg.n_layers, model.cfg.d_model
    folder, weights = write_clt(tmp_path / "clt", n, d, same_layer_only=True, seed=4)
    clt = load_transcoder_set(folder)
    per_layer = [{"W_enc": enc[f"W_enc_{i}"], "b_enc": enc[f"b_enc_{i}"], "W_dec": dec[:, 0].contiguous(),
                  "b_dec": enc[f"b_dec_{i}"], "activation_function.threshold": enc[f"threshold_{i}"]}
                 for i, (enc, dec) in enumerate(weights)]
    tset = load_transcoder_set(write_set(tmp_path / "set", per_layer, feature_input_hook="hook_resid_mid"))
    tokens = torch.arange(3, 25).view(1, -1)
    torch.testing.assert_close(model.run(tokens, interventions=clt.splice()).logits,
                               model.run(tokens, interventions=tset.splice()).logits, rtol=1e-5, atol=1e-5)


def test_sae_info_describes_sets_and_load_dictionary_points_to_them(tmp_path, model, capsys):
    from mechscope.cli import main
    from mechscope.sae import load_dictionary

    d = model.cfg.d_model
    folder = write_set(tmp_path / "set", [layer_weights(d, s, skip=True) for s in range(3)])
    assert main(["sae", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "circuit-tracer transcoder set" in out and "layer l reads blocks.l.mlp.in, writes blocks.l.mlp.out" in out
    assert "40 per layer (relu, skip)" in out
    clt, _ = write_clt(tmp_path / "clt", 3, d)
    assert main(["sae", "info", str(clt)]) == 0
    assert "cross-layer transcoder" in capsys.readouterr().out
    with pytest.raises(SAEError, match=r"is a circuit-tracer transcoder set \(config.yaml.*load_transcoder_set"):
        load_dictionary(folder)
