"""Attribution graphs: the replacement model, edges, pruning and scores.

Reference: circuit-tracer 0.5.0 (its own environment, ``make ct-env``; ``tests/oracles``). On a tiny
llama with random per-layer transcoders its adjacency equals ours to 1.2e-07 (max |A| 1.13), its
replacement and completeness scores to 1e-7 and its pruned node and edge sets exactly. With *skip*
transcoders its nnsight backend drops the skip path from the linear map (the issue's definition and
circuit-tracer's own code — ``skip + (out − skip).detach()`` — keep it): its adjacency then equals
ours with the skip's gradient removed, to 6e-07; ours matches the hand computation below.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import mechscope as ms
from mechscope.tracing import AttributionGraph, attribution_graph, logit_difference, logit_target
from mechscope.tracing.neuronpedia import from_neuronpedia, to_neuronpedia
from mechscope.tracing.prune import graph_scores, influence, normalised, prune
from mechscope.tracing.replacement import GraphError, LocalReplacement
from mechscope.models.tiny import FAMILIES, tiny
from mechscope.sae import SAEConfig, SparseCoder
from mechscope.sae.transcoder_sets import CrossLayerTranscoder

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The cat sat on the mat"


def random_transcoders(model, width=16, skip=(), seed=0, site="mlp.in"):
    """One random ReLU transcoder per block (biases set so about a third of the features fire)."""
    d = model.cfg.d_model
    out = []
    for layer in range(model.cfg.n_layers):
        c = SparseCoder(SAEConfig(arch="relu", d_in=d, width=width, d_out=d, site=f"blocks.{layer}.{site}",
                                  target_site=f"blocks.{layer}.mlp.out", skip=layer in skip), seed=seed + layer)
        g = torch.Generator().manual_seed(seed + 100 + layer)
        with torch.no_grad():
            c.b_enc.copy_(torch.randn(width, generator=g) * 0.1 - 0.05)
            c.b_dec.copy_(torch.randn(d, generator=g) * 0.1)
            if c.W_skip is not None:
                c.W_skip.copy_(torch.randn(d, d, generator=g) * 0.05)
        out.append(c)
    return out


def random_clt(model, width=12, seed=0):
    L, d = model.cfg.n_layers, model.cfg.d_model
    g = torch.Generator().manual_seed(seed)
    W_dec = [torch.randn(width, L - i, d, generator=g) * 0.2 for i in range(L)]
    return CrossLayerTranscoder(torch.randn(L, width, d, generator=g) * 0.3, torch.randn(L, width, generator=g) * 0.1 - 0.05,
                                W_dec, torch.randn(L, d, generator=g) * 0.1, None,
                                [f"blocks.{layer}.mlp.in" for layer in range(L)],
                                [f"blocks.{layer}.mlp.out" for layer in range(L)])


# ------------------------------------------------------------------------------------ replacement model
@pytest.mark.parametrize("family", FAMILIES)
def test_replacement_plus_errors_reproduces_the_model(family):
    """Transcoders + errors, patterns and norm scales frozen, give the model's logits (fp error);
    the linearised run's values are the model's own."""
    model = tiny(family)
    rep = LocalReplacement(model, random_transcoders(model, skip=(0,)), PROMPT)
    assert rep.zero_first and int(rep.ids[0]) == model.tokenizer.bos_token_id  # a special token was put first
    clean = model.run(rep.prompt).logits[0, -1].float()
    run = rep.frozen_run([{}], recompute=True)
    scale = clean.abs().max()
    assert (run.logits - clean).abs().max() <= 2e-5 * scale, family
    lin = rep.linear_run(2)
    final = model.run(rep.prompt, copies=2, cache=["final_norm", "blocks.0.attn.pattern"]).cache["final_norm"]  # eager attention, as the linear run uses
    assert torch.equal(lin.final.detach(), final), family
    idx, acts = rep.active()
    assert len(idx) and (idx[:, 1] > 0).all() and (acts > 0).all()


def test_transcoders_must_fit_the_model():
    model = tiny("llama")
    coders = random_transcoders(model)
    with pytest.raises(GraphError, match="3 blocks"):
        LocalReplacement(model, coders[:2], PROMPT)
    sae = SparseCoder(SAEConfig(arch="relu", d_in=64, width=8, site="blocks.0.resid_post"))
    with pytest.raises(GraphError, match="is an SAE"):
        LocalReplacement(model, {0: sae}, PROMPT)
    wrong = SparseCoder(SAEConfig(arch="relu", d_in=64, width=8, d_out=64, site="blocks.1.mlp.in",
                                  target_site="blocks.1.mlp.out"))
    with pytest.raises(GraphError, match="layer 0's transcoder writes 'blocks.1.mlp.out'"):
        LocalReplacement(model, {0: wrong}, PROMPT)
    with pytest.raises(GraphError, match="no transcoders"):
        LocalReplacement(model, {}, PROMPT)
    rep = LocalReplacement(model, {1: coders[1]}, PROMPT)  # other layers: all error
    assert rep.acts[0] is None and torch.allclose(rep.errors[0, 1:], rep.outputs[0, 1:])
    with pytest.raises(GraphError, match="not a node"):
        rep.frozen_run([{(0, 1, 3): 1.0}])


# ------------------------------------------------------------------------------------ edges
def _measured(rep, key, target, graph_row_layer=None):
    """Change in a target when source ``key`` is removed, in the frozen model with features held."""
    run = rep.frozen_run([{key: 0.0}], recompute=False)
    return target(run, 0) - target(run, 1)


def _check_edges(model, transcoders, n_check=12):
    g = attribution_graph(model, transcoders, PROMPT, batch_size=8, progress=False)
    rep = LocalReplacement(model, transcoders, PROMPT)
    A = g.adjacency(dense=True)
    nf, L, P = g.n_features, g.n_layers, g.n_pos
    # every row: its edges plus its bias are its value — to float32 summation error, which grows with the
    # terms' sizes (demeaned logits cancel terms of ±50 to reach 0.4): 1e-5 of Σ|terms|; seen ≤ 1.7e-6 on
    # AVX-512, AVX2 and the portable kernels
    k = len(g.targets)
    for rows, bias, value in ((A[:nf], g.biases[:nf], g.pre), (A[-k:], g.biases[nf:], g.target_values)):
        err = (rows.sum(1) + bias - value).abs()
        assert (err <= 1e-5 * (rows.abs().sum(1) + bias.abs()) + 1e-7).all(), float(err.max())
    # a sample of edges against perturbing the source in the frozen model
    gen = torch.Generator().manual_seed(0)
    rows = [nf + (L + 1) * P] + torch.randint(0, max(nf, 1), (3,), generator=gen).tolist()
    checked = 0
    for row in rows:
        if row < nf:
            layer, pos, f = g.features[row].tolist()
            enc = rep.stack.encoder_rows(layer, torch.tensor([f]))[0]

            def target(run, r, layer=layer, pos=pos, enc=enc):
                return float(enc @ run.inputs[layer][r, pos].float())
        else:
            vec = logit_target(model, g.target_ids[0], 1.0).vector

            def target(run, r, vec=vec):
                return float(vec @ run.final[r, -1].float())
        nz = A[row].nonzero()[:, 0].tolist()
        for col in nz[:: max(1, len(nz) // 4)][:4]:
            kind = g.node_kind(col)
            if kind == "feature":
                key = tuple(g.features[col].tolist())
            elif kind == "error":
                key = ("error", (col - nf) // P, (col - nf) % P)
            else:
                key = ("token", col - nf - L * P)
            got = _measured(rep, key, target)
            assert abs(got - float(A[row, col])) <= 2e-4 * (1 + abs(got)), (row, col, kind, got, float(A[row, col]))
            checked += 1
    assert checked >= n_check // 2
    return g


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "olmo2", "cohere", "qwen2_moe"])
def test_edges_are_direct_effects_in_the_frozen_model(family):
    """Each edge equals the change in its target when its source is removed with attention, norms
    and every other feature frozen; with skip transcoders the skip is part of the linear map."""
    model = tiny(family)
    _check_edges(model, random_transcoders(model, skip=(0, model.cfg.n_layers - 1)))


def test_cross_layer_transcoder_edges():
    model = tiny("llama")
    clt = random_clt(model)
    g = _check_edges(model, clt)
    assert g.transcoders.startswith("CrossLayerTranscoder")


def test_targets_and_caps():
    model = tiny("llama")
    coders = random_transcoders(model)
    g = attribution_graph(model, coders, PROMPT, targets=["a", logit_difference(model, "a", "b"),
                                                          ("mean direction", 0.5, torch.ones(64))],
                          batch_size=8, progress=False)
    assert g.targets[0] == "a" and g.target_ids[1] == -1 and g.target_weights[2] == 0.5
    ids = g.node_ids()
    assert ids[-1] == f"{g.n_layers + 1}_2_{g.n_pos - 1}" and ids[g.n_features].startswith("err_0_")
    assert len(set(ids)) == len(ids)  # one id per node: no error shares a layer-0 feature's (circuit-tracer's 0_L_P)
    full = attribution_graph(model, coders, PROMPT, batch_size=8, progress=False)
    capped = attribution_graph(model, coders, PROMPT, batch_size=4, update_interval=1, max_feature_nodes=10,
                               progress=False)
    assert capped.n_features == 10 and capped.n_active == full.n_active == full.n_features
    # the visited features are among the most influential of the full graph
    inf = full.influence()[: full.n_features]
    top = {tuple(full.features[i].tolist()) for i in torch.argsort(inf, descending=True)[:25].tolist()}
    assert sum(tuple(f) in top for f in capped.features.tolist()) >= 7
    import importlib

    ag = importlib.import_module("mechscope.tracing.attribute")
    budget = ag.COPY_BUDGET
    try:  # a long prompt gets fewer copies per backward: the same graph, more passes
        ag.COPY_BUDGET = 1
        one = attribution_graph(model, coders, PROMPT, batch_size=8, progress=False)
    finally:
        ag.COPY_BUDGET = budget
    assert one.extra["batch_size"] == 1 and torch.allclose(one.adjacency(dense=True), full.adjacency(dense=True), atol=1e-5)
    with pytest.raises(GraphError, match="a direction must be 64"):
        attribution_graph(model, coders, PROMPT, targets=[("bad", torch.ones(3))], progress=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        attribution_graph(model, coders, PROMPT, batch_size=0, progress=False)


# ------------------------------------------------------------------------------------ planted chain
def _planted_chain():
    """GPT-2 with ReLU MLPs, attention switched off, and one neuron per MLP: token A fires neuron 1
    of block 0, which writes u; u fires neuron 2 of block 1, which writes token B's unembedding.
    The transcoders *are* the MLPs, so every error is zero."""
    model = tiny("gpt2", activation_function="relu")
    hf, d = model.hf, model.cfg.d_model
    tok_a, tok_b = model.token_id("Q"), model.token_id("Z")
    gen = torch.Generator().manual_seed(1)
    w_b = hf.lm_head.weight[tok_b].detach() - hf.lm_head.weight.detach().mean(0)
    w_b = w_b - w_b.mean()
    u = torch.randn(d, generator=gen)
    u = u - u.mean()
    u = u - (u @ w_b) / (w_b @ w_b) * w_b  # u has no direct effect on B's logit through the final LayerNorm
    u = u / u.norm()
    coders = []
    with torch.no_grad():
        for block in hf.transformer.h:
            block.attn.c_proj.weight.zero_()
            block.attn.c_proj.bias.zero_()
            block.mlp.c_fc.weight.zero_()
            block.mlp.c_fc.bias.fill_(-1.0)
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        ln = lambda x, mod: torch.nn.functional.layer_norm(x, (d,), mod.weight, mod.bias, mod.eps)  # noqa: E731
        e_a = hf.transformer.wte.weight[tok_a] + hf.transformer.wpe.weight[5]
        x0 = ln(e_a, hf.transformer.h[0].ln_2)
        h0 = hf.transformer.h[0].mlp
        h0.c_fc.weight[:, 3] = x0 / x0.norm() ** 2 * 2.0
        h0.c_fc.bias[3] = -1.0  # fires (pre ≈ 1) on A at position 5 only: others' cosine with x0 is well below 1/2
        h0.c_proj.weight[3] = u * 8.0
        x1 = ln(e_a + u * 8.0, hf.transformer.h[1].ln_2)
        h1 = hf.transformer.h[1].mlp
        h1.c_fc.weight[:, 7] = x1 / x1.norm() ** 2 * 2.0
        h1.c_fc.bias[7] = -1.0
        h1.c_proj.weight[7] = w_b / w_b.norm() * 8.0
    coders = []
    for layer, block in enumerate(hf.transformer.h):
        c = SparseCoder(SAEConfig(arch="relu", d_in=d, width=block.mlp.c_fc.weight.shape[1], d_out=d,
                                  site=f"blocks.{layer}.mlp.in", target_site=f"blocks.{layer}.mlp.out"))
        with torch.no_grad():
            c.W_enc.copy_(block.mlp.c_fc.weight.T)
            c.b_enc.copy_(block.mlp.c_fc.bias)
            c.W_dec.copy_(block.mlp.c_proj.weight)
            c.b_dec.copy_(block.mlp.c_proj.bias)
        coders.append(c)
    return model, coders, tok_a, tok_b


def test_planted_chain_is_what_survives_pruning():
    model, coders, tok_a, tok_b = _planted_chain()
    prompt = [model.tokenizer.bos_token_id] + model.tokenize("a bc")[0][0].tolist()[:4] + [tok_a]
    assert len(prompt) == 6
    g = attribution_graph(model, coders, prompt, targets=[tok_b], progress=False)
    assert g.features.tolist() == [[0, 5, 3], [1, 5, 7]]  # exactly the two planted neurons fire
    assert float(g.extra["max_error"]) < 1e-5
    kept = g.prune()
    ids = g.node_ids()
    kept_ids = {ids[i] for i in kept.nodes.nonzero()[:, 0].tolist()}
    chain = {"0_3_5", "1_7_5", f"E_{tok_a}_5", f"{g.n_layers + 1}_{tok_b}_5"}
    assert chain <= kept_ids
    assert not any(g.node_kind(ids.index(i)) == "error" for i in kept_ids)
    A = g.adjacency(dense=True)
    assert A[1, 0] > 0 and A[-1, 1] > 0 and A[0, ids.index(f"E_{tok_a}_5")] > 0
    rep, comp = g.scores()
    assert rep == pytest.approx(1.0) and comp == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ influence, pruning, scores
def _dense_reference(A: torch.Tensor, w: torch.Tensor):
    """Influence by the closed form w (I − N)⁻¹ − w on the dense normalised matrix."""
    N = A.abs()
    N = N / N.sum(1, keepdim=True).clamp(min=1e-10)
    n = A.shape[0]
    return w @ torch.linalg.inv(torch.eye(n, dtype=torch.float64) - N.double()).float() - w


def test_influence_pruning_and_scores_on_a_small_graph():
    # nodes: f0 f1 (features), e0 (error), t0 (token), y (target); rows targets, columns sources
    A = torch.zeros(5, 5)
    A[0, 3] = 2.0  # t0 → f0
    A[1, 0], A[1, 2] = 1.0, -1.0  # f0 → f1, e0 → f1
    A[4, 1], A[4, 3], A[4, 0] = 3.0, 1.0, 0.01  # f1 → y, t0 → y, f0 → y (weak)
    w = torch.tensor([0, 0, 0, 0, 1.0])
    S = A.to_sparse()
    inf = influence(normalised(S), w)
    assert torch.allclose(inf, _dense_reference(A, w), atol=1e-6)
    assert inf[1] == pytest.approx(3 / 4.01) and inf[2] == pytest.approx(3 / 4.01 / 2)
    rep, comp = graph_scores(S, w, slice(2, 3), slice(3, 4))
    tok = float(inf[3])
    assert rep == pytest.approx(tok / (tok + float(inf[2])))
    out = inf + w
    share = torch.tensor([0, 0.5, 0, 0, 0])
    assert comp == pytest.approx(float(((1 - share) * out).sum() / out.sum()))
    kept = prune(S, w, n_features=2, n_fixed=2, node_threshold=0.8, edge_threshold=0.98)
    assert kept.nodes.tolist() == [True, True, False, True, True]  # the error falls below 0.8 of the influence
    edges = {tuple(S.coalesce().indices()[:, i].tolist()) for i in kept.edges.nonzero()[:, 0].tolist()}
    assert (4, 0) not in edges and {(0, 3), (1, 0), (4, 1), (4, 3)} <= edges
    with pytest.raises(ValueError, match="node_threshold=1.5"):
        prune(S, w, 2, 2, node_threshold=1.5)


# ------------------------------------------------------------------------------------ circuit-tracer itself
CT_PYTHON = ROOT / ".venv-ct" / "bin" / "python"


@pytest.mark.skipif(not CT_PYTHON.exists(), reason="circuit-tracer's environment (make ct-env) is not installed: "
                    "it pins transformers 4.57.3, so it cannot share mechscope's")
@pytest.mark.parametrize("skip", [False, True])
def test_adjacency_equals_circuit_tracers(tmp_path, skip, monkeypatch):
    model = tiny("llama")
    coders = random_transcoders(model, skip=(2,) if skip else ())
    model.hf.save_pretrained(tmp_path / "model")
    model.tokenizer.save_pretrained(tmp_path / "model")
    from safetensors.torch import load_file, save_file

    w = {}
    for layer, c in enumerate(coders):
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            w[f"{layer}.{name}"] = getattr(c, name).detach().clone()
        if c.W_skip is not None:
            w[f"{layer}.W_skip"] = c.W_skip.detach().T.contiguous()  # circuit-tracer applies x W_skipᵀ
    save_file(w, str(tmp_path / "transcoders.safetensors"))
    ids = model.tokenize(PROMPT)[0][0].tolist()
    (tmp_path / "prompt.json").write_text(json.dumps({"ids": ids, "batch_size": 16}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([str(CT_PYTHON), str(ROOT / "tests" / "oracles" / "circuit_tracer_graph.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ct = load_file(str(tmp_path / "circuit_tracer.safetensors"))
    if skip:  # circuit-tracer's nnsight backend drops the skip's gradient: compare with ours without it
        import mechscope.tracing.replacement as replacement

        monkeypatch.setattr(replacement.TranscoderStack, "skip", lambda self, layer, x: None)
    g = attribution_graph(model, coders, ids, batch_size=16, progress=False)
    A, B = g.adjacency(dense=True), ct["adjacency"]
    assert A.shape == B.shape and torch.equal(g.features, ct["active_features"][ct["selected_features"]])
    assert g.target_ids == ct["logit_tokens"].tolist()
    assert (A - B).abs().max() <= 1e-5 * B.abs().max()
    scores = json.loads((tmp_path / "circuit_tracer.json").read_text())
    assert g.scores() == pytest.approx((scores["replacement"], scores["completeness"]), abs=1e-5)
    kept = g.prune()
    assert torch.equal(kept.nodes, ct["node_mask"])
    dense_edges = torch.zeros_like(ct["edge_mask"])
    (r, c) = g.adjacency().indices()
    dense_edges[r[kept.edges], c[kept.edges]] = True
    assert torch.equal(dense_edges, ct["edge_mask"])
    # our graph JSON is a valid document for circuit-tracer's own graph models (Neuronpedia's schema)
    (tmp_path / "graph.json").write_text(json.dumps(to_neuronpedia(g, slug="tiny")))
    check = ("import json, sys; from circuit_tracer.frontend.graph_models import Model; "
             "m = Model(**json.load(open(sys.argv[1]))); print(len(m.nodes), len(m.links))")
    out = subprocess.run([str(CT_PYTHON), "-c", check, str(tmp_path / "graph.json")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1] == str(int(kept.edges.sum()))


# ------------------------------------------------------------------------------------ the result
def test_graph_is_a_result(tmp_path):
    model = tiny("llama")
    g = attribution_graph(model, random_transcoders(model), PROMPT, batch_size=16, progress=False)
    assert isinstance(g, AttributionGraph) and "Replacement score" in g.summary()
    assert set(g.evidence()) >= {"replacement_score", "completeness_score"}
    back = ms.results.load_result(g.save(tmp_path / "graph"))
    assert torch.equal(back.edge_index, g.edge_index) and back.node_ids() == g.node_ids()


# ------------------------------------------------------------------------------------ validation by intervention
def test_validation_predicts_small_interventions_exactly_and_large_ones_roughly():
    from mechscope.tracing.validation import validate_graph

    model, coders, tok_a, tok_b = _planted_chain()
    prompt = [model.tokenizer.bos_token_id] + model.tokenize("a bc")[0][0].tolist()[:4] + [tok_a]
    g = attribution_graph(model, coders, prompt, targets=[tok_b], progress=False)
    small = validate_graph(g, model, coders, ["0_3_5", "1_7_5", ["0_3_5", "1_7_5"]], factor=0.9)
    # features stay active under a 10% change, so the frozen replacement model is the graph's linear model
    assert torch.allclose(small.predicted, small.frozen, atol=1e-4 * float(small.frozen.abs().max()))
    assert small.predicted[0, 0] < 0 and small.direct[0, 0] == pytest.approx(0.0, abs=1e-4)  # f1 acts only through f2
    # the real model: f2's change reaches B's logit; f1's barely reaches f2, whose LayerNorm input it dominates
    # (a frozen norm scale is the graph's assumption, and here it is far from the truth)
    assert small.model[1, 0] < 0 and abs(small.model[0, 0]) < abs(small.predicted[0, 0])
    ablate = validate_graph(g, model, coders, [(0, 5, 3)])  # ablating f1 switches f2 off: B's logit falls
    assert ablate.frozen[0, 0] < 0 and ablate.model[0, 0] < 0
    assert ablate.predicted[0, 0] < ablate.frozen[0, 0]  # linear: f2 is pushed below zero; ReLU stops it there
    assert "predicted / frozen / model" in ablate.summary()
    with pytest.raises(GraphError, match="not a feature node"):
        validate_graph(g, model, coders, ["0_9_5"])


def test_validation_on_a_random_model():
    from mechscope.tracing.validation import validate_graph

    model = tiny("llama")
    coders = random_transcoders(model, skip=(1,))
    g = attribution_graph(model, coders, PROMPT, batch_size=16, progress=False)
    # a 0.1% change keeps every feature on its side of zero (random transcoders have many features near it:
    # at 2% some switch, and the linear prediction's correlation falls to 0.95), so the graph is the frozen model
    v = validate_graph(g, model, coders, k=6, factor=0.999)
    assert v.predicted.shape == (6, len(g.targets))
    assert v.evidence()["corr_predicted_frozen"] > 0.9999


# ------------------------------------------------------------------------------------ graph JSON
def test_neuronpedia_json_round_trip():
    model = tiny("llama")
    g = attribution_graph(model, random_transcoders(model), PROMPT, batch_size=16, progress=False)
    kept = g.prune()
    own = g.node_ids()
    error = next(own[i] for i in kept.nodes.nonzero()[:, 0].tolist() if g.node_kind(i) == "error")
    doc = to_neuronpedia(g, slug="tiny", supernodes=[["first", "E_1_0"], ["an error", error]])
    layer, pos = error.split("_")[1:]
    written = {own[i].replace("err_", "0_", 1) for i in kept.nodes.nonzero()[:, 0].tolist()}  # circuit-tracer's ids
    assert {n["node_id"] for n in doc["nodes"]} <= written and f"0_{layer}_{pos}" in {n["node_id"] for n in doc["nodes"]}
    assert doc["qParams"]["supernodes"] == [["first", "E_1_0"], ["an error", f"0_{layer}_{pos}"]]
    assert len(doc["links"]) == int(kept.edges.sum())
    text = json.dumps(doc)
    back = from_neuronpedia(text)
    assert back.n_layers == g.n_layers and back.token_ids == g.token_ids and back.target_ids == g.target_ids
    assert back.extra["supernodes"] == [["first", "E_1_0"], ["an error", error]] and back.extra["ambiguous_links"] == 0
    (r, c), v = g.adjacency().indices(), g.adjacency().values()
    want = {(own[int(c[e])], own[int(r[e])]): float(v[e]) for e in kept.edges.nonzero()[:, 0].tolist()}
    ids, B = back.node_ids(), back.adjacency()
    (r, c), v = B.indices(), B.values()
    got = {(ids[int(c[e])], ids[int(r[e])]): float(v[e]) for e in range(len(v))}
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k]) for k in want)  # the same edges, same ids
    assert "NaN" not in back.html(draw=False)  # the viewer's JSON block stays valid JSON without activations
    again = to_neuronpedia(back, node_threshold=1.0, edge_threshold=1.0)
    assert {(x["source"], x["target"]) for x in again["links"]} <= {(x["source"], x["target"]) for x in doc["links"]}


def test_neuronpedia_json_resolves_ids_by_feature_type_and_refuses_bad_documents():
    meta = {"slug": "s", "scan": "x", "transcoder_list": [], "prompt_tokens": ["<bos>", "a", "b"], "prompt": "ab"}
    node = lambda i, t, **kw: {"node_id": i, "feature_type": t, **kw}  # noqa: E731
    doc = {"metadata": meta, "qParams": {},
           "nodes": [node("E_5_1", "embedding"), node("0_1_1", "cross layer transcoder", activation=2.0),
                     node("0_1_1", "mlp reconstruction error"), node("1_2_2", "cross layer transcoder"),
                     node("3_7_2", "logit", token_prob=0.5, clerp='Output " c" (p=0.500)')],
           "links": [{"source": "E_5_1", "target": "0_1_1", "weight": 1.0},  # into the feature (errors receive nothing)
                     {"source": "0_1_1", "target": "1_2_2", "weight": 2.0},  # only feature (0, 1, 1) feeds layer 1
                     {"source": "0_1_1", "target": "3_7_2", "weight": 0.5},  # both could feed the logit: the feature
                     {"source": "1_2_2", "target": "3_7_2", "weight": 3.0}]}
    g = from_neuronpedia(doc)
    assert g.n_layers == 2 and g.features.tolist() == [[0, 1, 1], [1, 2, 2]] and g.targets == [" c"]
    assert g.extra["ambiguous_links"] == 1 and g.activations[0] == 2.0
    A = g.adjacency(dense=True)
    assert A[0, g.n_features + 2 * 3 + 1] == 1.0 and A[1, 0] == 2.0 and A[-1, 1] == 3.0 and A[-1, 0] == 0.5
    for bad, match in [("{", "not a graph JSON"), ("[]", "top level is a list"), ({"nodes": []}, "missing"),
                       ({**doc, "nodes": [node("E_5_1", "bogus")]}, "feature_type 'bogus'"),
                       ({**doc, "links": [{"source": "nope", "target": "E_5_1", "weight": 1}]}, "'nope' is not a node"),
                       ({**doc, "links": [{"source": "E_5_1", "target": "0_1_1", "weight": float("nan")}]}, "finite"),
                       ({**doc, "nodes": [node("E_x_1", "embedding")]}, "does not match")]:
        with pytest.raises(ValueError, match=match):
            from_neuronpedia(bad)


# ------------------------------------------------------------------------------------ attention behind edges
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "qwen2"])
def test_head_loadings_add_up_to_cross_position_edges(family):
    """Without skips every path that leaves a position starts with one head reading the residual
    there, so the heads' loadings (pattern × ∂target/∂z × W_V N(v), a formula of its own) sum to the
    edge; the rest is zero."""
    from mechscope.tracing.attention import explain_edges

    model = tiny(family)
    coders = random_transcoders(model)
    g = attribution_graph(model, coders, PROMPT, batch_size=16, progress=False)
    out = explain_edges(g, model, coders, top_edges=6, heads=2)
    assert len(out) == 6
    for key, e in out.items():
        total = sum(v for _, v in e["heads"]) if len(e["heads"]) == model.cfg.n_layers * model.cfg.n_heads else None
        assert abs(e["rest"]) <= 2e-4 * (1 + abs(e["edge"])), (key, e["rest"], e["edge"])
        assert total is None or total == pytest.approx(e["edge"], abs=2e-4 * (1 + abs(e["edge"])))
        assert e["heads"][0][0].startswith("L") and len(e["qk"]) == 2


def test_qk_attribution_splits_the_score():
    """With no biases anywhere (llama, transcoders without b_dec, no constant first position) a
    score's query-side shares and its key-side shares each add up to the score itself."""
    from mechscope.tracing.attention import explain_edges

    model = tiny("llama")
    coders = random_transcoders(model)
    for c in coders:
        with torch.no_grad():
            c.b_dec.zero_()
    g = attribution_graph(model, coders, PROMPT, batch_size=16, prepend=False, progress=False)
    assert not g.extra["zero_first"]
    out = explain_edges(g, model, coders, top_edges=4, heads=3, terms=400)
    for e in out.values():
        for head, qk in e["qk"].items():
            assert qk["query_total"] == pytest.approx(qk["score"], abs=1e-4)
            assert qk["key_total"] == pytest.approx(qk["score"], abs=1e-4)
            assert sum(v for _, v in qk["query"]) == pytest.approx(qk["score"], abs=1e-3)
    with pytest.raises(GraphError, match="only features and targets receive"):
        explain_edges(g, model, coders, edges=[(g.node_ids()[0], g.node_ids()[g.token_slice.start])])


# ------------------------------------------------------------------------------------ supernodes
def test_supernodes_collapse_and_grouping():
    from mechscope.tracing.view import collapse, group_features, set_supernodes, supernode_figure

    model, coders, tok_a, tok_b = _planted_chain()
    prompt = [model.tokenizer.bos_token_id] + model.tokenize("a bc")[0][0].tolist()[:4] + [tok_a]
    g = attribution_graph(model, coders, prompt, targets=[tok_b], progress=False)
    A = g.adjacency(dense=True)
    ids = g.node_ids()
    labels, C = collapse(g, [["chain", "0_3_5", "1_7_5"]])
    assert len(labels) == g.n_nodes - 1 and labels[0] == "chain"
    tok = ids.index(f"E_{tok_a}_5")
    assert C[-1, 0] == pytest.approx(float(A[-1, 0] + A[-1, 1]))  # both features' edges into the target, summed
    assert C[0, tok - 1] == pytest.approx(float(A[0, tok] + A[1, tok]))
    assert C[0, 0] == 0  # the edge inside the group is gone
    with pytest.raises(GraphError, match="not nodes of this graph"):
        collapse(g, [["x", "9_9_9"]])
    # named by hand: stored, drawn as one box with its summed edge into the target
    with pytest.raises(GraphError, match="has no supernodes"):
        supernode_figure(g)
    assert set_supernodes(g, {"chain": ["0_3_5", "1_7_5"]}) == [["chain", "0_3_5", "1_7_5"]]
    with pytest.raises(GraphError, match=r"\['E_1_5'\] are no feature or error node"):
        set_supernodes(g, {"tokens": ["E_1_5"]})
    fig = g.figure()
    assert "chain" in [t.get_text() for t in fig.axes[0].texts] and len(fig.axes[0].patches) + len(fig.axes[0].texts) > 3
    # two features writing the same direction are proposed as one supernode, named by the token they promote
    with torch.no_grad():
        coders[1].W_dec[9] = coders[1].W_dec[7] * 0.5
        model.hf.transformer.h[1].mlp.c_fc.weight[:, 9] = model.hf.transformer.h[1].mlp.c_fc.weight[:, 7]
        model.hf.transformer.h[1].mlp.c_fc.bias[9] = -1.0
        model.hf.transformer.h[1].mlp.c_proj.weight[9] = coders[1].W_dec[9]
        coders[1].W_enc[9] = coders[1].W_enc[7]
        coders[1].b_enc[9] = -1.0
    g2 = attribution_graph(model, coders, prompt, targets=[tok_b], progress=False)
    groups = group_features(g2, model, coders, similarity=0.95, node_threshold=0.99)
    assert groups == [[f"→ {model.tokenizer.decode([tok_b])!r}", "1_7_5", "1_9_5"]]
    doc = to_neuronpedia(g2)  # the graph's own supernodes, with the members the export keeps
    kept = {n["node_id"] for n in doc["nodes"]}
    assert doc["qParams"]["supernodes"] == [[groups[0][0], *[m for m in groups[0][1:] if m in kept]]]
    assert "1_7_5" in kept


def test_the_committed_specimen_reads_back():
    """docs/specimens' capital graph (Neuronpedia JSON) is readable, labelled and names its supernodes."""
    import json
    from pathlib import Path

    from mechscope.tracing import AttributionGraph

    path = Path(__file__).parent.parent / "docs" / "specimens" / "smollm2-capital-of-france.json"
    doc = json.loads(path.read_text())
    g = from_neuronpedia(doc)
    assert g.targets[0] == " Paris" and g.tokens[-2:] == [" France", " is"]
    named = json.loads(path.with_name("smollm2-capital-of-france.supernodes.json").read_text())
    assert [s[0] for s in g.extra["supernodes"]] == list(named)
    assert sum(bool(n["clerp"]) for n in doc["nodes"]) > 100


def test_the_static_figure_draws_only_the_strongest_edges(monkeypatch):
    """Thousands of faint lines hide a graph and bloat its picture: the figure draws the FIGURE_EDGES strongest
    pruned edges, and its title says how many there are."""
    from matplotlib.collections import LineCollection

    import mechscope.tracing.graph as graph_module

    model = tiny("llama")
    g = attribution_graph(model, random_transcoders(model), PROMPT, progress=False)
    kept = g.prune(0.8, 0.98)
    n = int(kept.edges.sum())
    assert n > 6
    monkeypatch.setattr(graph_module, "FIGURE_EDGES", 5)
    ax = g.figure().axes[0]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)][0]
    assert len(lines.get_segments()) == 5 and ax.get_title().endswith(f"{n:,} edges (pruned 0.8 / 0.98); the 5 strongest drawn")
    widths = lines.get_linewidths()
    assert max(widths) == pytest.approx(2.8)  # the strongest edge of all is among those drawn
    monkeypatch.setattr(graph_module, "FIGURE_EDGES", n)
    ax = g.figure().axes[0]
    assert "strongest" not in ax.get_title()
    assert len([c for c in ax.collections if isinstance(c, LineCollection)][0].get_segments()) == n
