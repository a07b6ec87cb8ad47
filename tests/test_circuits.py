"""Component graph, edge-level runs, EAP / EAP-IG / ACDC, circuit evidence, path patching."""

import pytest
import torch

from mechscope import names

from mechscope.circuits import (Circuit, Graph, acdc, circuit_from_mask, eap, eap_ig, evaluate, faithfulness,
                                minimal_circuit)
from mechscope.circuits.edges import ablated_outputs, edge_run, sender_outputs
from mechscope.models.attention import active_probes
from mechscope.models.tiny import FAMILIES, tiny
from mechscope.circuits.paths import path_patching
from mechscope.components.patching import activation_patching
from mechscope.results import Provenance
from mechscope.tasks.base import Task
from mechscope.toy.planted import PLANTED_EDGES, planted_model, planted_task


def _pairs(seed=0, n=3, length=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 300, (n, length), generator=g).tolist(), torch.randint(5, 300, (n, length), generator=g).tolist()


def _random_task(model, n=4, length=6, seed=0):
    clean, corrupted = _pairs(seed, n, length)
    with torch.no_grad():
        good = model.run(clean).logits[:, -1].argmax(-1)
        bad = model.run(corrupted).logits[:, -1].argmax(-1)
    return Task("random", 1, seed, clean, corrupted, [[int(x)] for x in good], [[int(x)] for x in bad])


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules()) and active_probes() == 0


@pytest.fixture(scope="module")
def planted():
    model = planted_model()
    return model, planted_task(model)


# ------------------------------------------------------------------------------------------------
# The graph


def test_graph_counts_edges_and_resolves_names():
    m = tiny("llama")  # 4 heads sharing 2 key/value heads
    g = Graph.of(m)
    c = m.cfg
    per_layer_receivers = c.n_heads + 2 * c.n_kv_heads + 1
    assert len(g.receivers) == c.n_layers * per_layer_receivers + 1
    assert len(g.senders) == 1 + c.n_layers * (c.n_heads + 1)
    expected = sum((c.n_heads + 2 * c.n_kv_heads) * g.sender_start[l] + g.sender_start[l] + c.n_heads
                   for l in range(c.n_layers)) + len(g.senders)
    assert g.n_edges == expected
    assert g.receivers_of("a1.h3") == [g.receivers.index("a1.h3.q"), g.receivers.index("a1.kv1.k"),
                                       g.receivers.index("a1.kv1.v")]
    assert g.receivers_of("a1.h2.v") == [g.receivers.index("a1.kv1.v")]
    with pytest.raises(KeyError, match="a0.h0 → a0.h1.q is not an edge"):
        g.edge_index("a0.h0", "a0.h1.q")
    with pytest.raises(KeyError, match="unknown sender 'a9.h0'"):
        g.edge_index("a9.h0", "logits")
    with pytest.raises(KeyError, match="unknown receiver 'a0.q'"):
        g.receivers_of("a0.q")


def test_parallel_blocks_have_no_head_to_own_mlp_edges():
    par, seq = Graph.of(tiny("gpt_neox")), Graph.of(tiny("gpt_neox_sequential"))
    assert par.parallel and not seq.parallel
    assert not par.allowed[par.sender_index("a0.h0"), par.receivers.index("m0")]
    assert seq.allowed[seq.sender_index("a0.h0"), seq.receivers.index("m0")]


def test_prune_drops_edges_into_components_that_reach_nothing():
    g = Graph.of(tiny("gpt2"))
    mask = g.mask_of([("embed", "a0.h0.q"), ("embed", "a0.h1.v"), ("a0.h1", "logits")])
    kept = g.edges_of(g.prune(mask))
    assert sorted((s, r) for s, r, _ in kept) == [("a0.h1", "logits"), ("embed", "a0.h1.v")]


# ------------------------------------------------------------------------------------------------
# Edge-level runs are exact


EDGE_FAMILIES = FAMILIES
MOE = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss")


@pytest.mark.parametrize("family", ["olmo2", "olmoe"])
def test_joint_qk_norms_give_each_head_its_slice_of_the_normalised_projection(family):
    """OLMo 2/3 and OLMoE normalise q and k over all heads at once: head h's query is slice h of
    q_norm(q_proj(its own input)). Cutting every edge into one head's query (corrupted ablation) is
    then patching that head's query from the corrupted run; the same for a key."""
    import mechscope as ms

    m = tiny(family)
    g = Graph.of(m)
    clean, corrupted = _pairs()
    abl = sender_outputs(m, g, corrupted)
    source = m.run(corrupted, cache=["blocks.1.attn.q", "blocks.1.attn.k"])
    for receiver, site in (("a1.h1.q", "blocks.1.attn.q"), (g.kv_name(1, 1) + ".k", "blocks.1.attn.k")):
        keep = g.allowed.float()
        keep[:, g.receivers_of(receiver)] = 0.0
        cut = edge_run(m, g, clean, keep=keep, ablated=abl).logits
        patched = m.run(clean, interventions=[ms.Patch(site, source=source, heads=[1])]).logits[:, -1]
        torch.testing.assert_close(cut, patched, atol=2e-6, rtol=0)
        assert (cut - m.run(clean).logits[:, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_all_kept_is_the_model_and_all_cut_is_the_corrupted_run(family):
    m = tiny(family)
    g = Graph.of(m)
    clean, corrupted = _pairs()
    ref_clean, ref_corr = m.run(clean).logits[:, -1], m.run(corrupted).logits[:, -1]
    abl = sender_outputs(m, g, corrupted)
    keep = torch.stack([g.allowed.float(), torch.zeros(len(g.senders), len(g.receivers))])
    out = edge_run(m, g, clean, keep=keep, ablated=abl).logits
    if family in MOE:  # each expert multiplies the rows routed to it: another batch, another row count, and
        torch.testing.assert_close(out[:3], ref_clean, atol=1e-6, rtol=0)  # BLAS may sum them in another order
    else:
        assert torch.equal(out[:3], ref_clean)  # nothing cut: bit for bit
    torch.testing.assert_close(out[3:], ref_corr, atol=2e-6, rtol=0)  # float32 sums of ~the same terms
    assert _no_hooks(m)


@pytest.mark.parametrize("family", MOE)
def test_experts_send_separately_into_one_moe_receiver(family):
    """A mixture of experts is one receiver (m{l}) and each expert a sender (m{l}.e{e}; Qwen2-MoE's
    gated shared expert m{l}.shared): their outputs are the expert sites, and cutting every edge out
    of one expert (zero ablation) is the run with that expert's output zero-ablated."""
    import mechscope as ms

    m = tiny(family)
    g = Graph.of(m)
    shared = ["m0.shared"] if family == "qwen2_moe" else []
    assert g.senders[g.sender_start[0] + m.cfg.n_heads:g.sender_start[1]] == [f"m0.e{e}" for e in range(4)] + shared
    assert "m0" in g.receivers and "m0" not in g.senders and Graph(*g.shape) == g
    clean, _ = _pairs()
    out = sender_outputs(m, g, clean)
    run = m.run(clean, cache=[f"blocks.0.mlp.experts.{e}.out" for e in range(4)] + ["blocks.0.mlp.out"])
    for e in range(4):
        torch.testing.assert_close(out[:, :, g.sender_index(f"m0.e{e}")], run.cache[f"blocks.0.mlp.experts.{e}.out"])
    if shared:
        gated = m.run(clean, cache="blocks.0.mlp.shared_expert.out").cache["blocks.0.mlp.shared_expert.out"]
        torch.testing.assert_close(out[:, :, g.sender_index("m0.shared")], gated, atol=1e-6, rtol=1e-5)
    moe = out[:, :, g.sender_start[0] + m.cfg.n_heads:g.sender_start[1]].sum(2)
    torch.testing.assert_close(moe, run.cache["blocks.0.mlp.out"], atol=1e-6, rtol=1e-5)
    busiest = max(range(4), key=lambda e: float(out[:, :, g.sender_index(f"m0.e{e}")].abs().sum()))
    keep = g.allowed.float()
    keep[g.sender_index(names.expert(0, busiest).label)] = 0.0  # either spelling
    cut = edge_run(m, g, clean, keep=keep, ablated=torch.zeros_like(out[:1])).logits
    ablated = m.run(clean, interventions=[ms.Ablate(f"blocks.0.mlp.experts.{busiest}.out")]).logits[:, -1]
    torch.testing.assert_close(cut, ablated, atol=1e-5, rtol=1e-5)
    assert (cut - m.run(clean).logits[:, -1]).abs().max() > 1e-3
    with pytest.raises(KeyError, match=r"experts m\{l\}.e\{e\} \(e 0..3\)"):
        g.sender_index("m0")
    # an expert reads the MoE block's input: pruning and greedy circuits walk through it
    mask = g.mask_of([("embed", "m0"), (f"m0.e{busiest}", "logits")])
    assert torch.equal(g.prune(mask), mask)
    assert g.prune(g.mask_of([("embed", "m0")])).sum() == 0
    scores = eap(m, _random_task(m), progress=False)
    greedy = g.mask_of(scores.circuit(12).edges)
    assert int(greedy.sum()) == 12 and torch.equal(g.prune(greedy), greedy)  # grown from the logits
    assert float(scores.scores[g.sender_index(f"m1.e{busiest}")].abs().sum()) > 0


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_batched_masks_equal_one_at_a_time(family):
    m = tiny(family)
    g = Graph.of(m)
    clean, corrupted = _pairs(1)
    abl = sender_outputs(m, g, corrupted)
    torch.manual_seed(0)
    for density in (0.03, 0.5, 0.97):  # sparse circuits sum the kept senders, dense ones the cut ones
        keep = (torch.rand(3, len(g.senders), len(g.receivers)) < density).float()
        batched = edge_run(m, g, clean, keep=keep, ablated=abl).logits
        single = torch.cat([edge_run(m, g, clean, keep=keep[i], ablated=abl).logits for i in range(3)])
        torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", EDGE_FAMILIES)
def test_copies_share_the_blocks_where_their_masks_agree(family):
    """Masks that differ only from block L on run blocks < L once and tile the rows there; the
    logits equal one mask at a time (prompts of different lengths: masks and positions tile too)."""
    m = tiny(family)
    g = Graph.of(m)
    clean, corrupted = _pairs(2, n=3, length=7)
    clean = [c[:7 - i] for i, c in enumerate(clean)]
    corrupted = [c[:7 - i] for i, c in enumerate(corrupted)]
    abl = sender_outputs(m, g, corrupted)
    block0 = m.hf.get_submodule(f"{m.adapter.blocks}.0")
    per = len(g.attn_receivers[0]) + int(g.has_mlp)
    torch.manual_seed(0)
    for first in (0, 1, per, g.n_layers * per, None):  # first receiver that differs (None: the copies are equal)
        base = (torch.rand(len(g.senders), len(g.receivers)) < 0.5).float()
        keep = base.repeat(3, 1, 1)
        if first is not None:
            keep[1:, :, first:] = (torch.rand(2, len(g.senders), len(g.receivers) - first) < 0.5).float()
        rows = []
        handle = block0.register_forward_pre_hook(lambda _m, args, kwargs: rows.append(
            (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
        batched = edge_run(m, g, clean, keep=keep, ablated=abl).logits
        handle.remove()
        single = torch.cat([edge_run(m, g, clean, keep=keep[i], ablated=abl).logits for i in range(3)])
        torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
        assert rows[0] == (9 if first in (0, 1) else 3)  # block 0 ran once per prompt when it could
    assert _no_hooks(m)


def test_cutting_one_edge_into_the_logits_matches_a_hand_computation():
    m = tiny("llama")
    g = Graph.of(m)
    clean, corrupted = _pairs(2)
    last = f"blocks.{m.cfg.n_layers - 1}"
    z_site = f"{last}.attn.z"
    rc = m.run(clean, cache=[f"{last}.resid_post", z_site, "embed"])
    rk = m.run(corrupted, cache=[z_site, "embed"])
    norm, head = m.hf.model.norm, m.hf.lm_head
    abl = sender_outputs(m, g, corrupted)
    # 1. cut embed → logits only: the final norm reads resid − embed_clean + embed_corrupted
    keep = g.allowed.float()
    keep[0, -1] = 0
    want = head(norm(rc.cache[f"{last}.resid_post"] - rc.cache["embed"] + rk.cache["embed"]))[:, -1]
    torch.testing.assert_close(edge_run(m, g, clean, keep=keep, ablated=abl).logits, want, atol=1e-5, rtol=1e-5)
    # 2. keep only (last layer, head 0) → logits: everything else the logits read is corrupted
    h = g.sender_index(f"a{m.cfg.n_layers - 1}.h0")
    keep = g.allowed.float()
    keep[:, -1] = 0
    keep[h, -1] = 1
    resid_corr = m.run(corrupted, cache=[f"{last}.resid_post"]).cache[f"{last}.resid_post"]
    ho_clean = m.head_outputs(rc.cache[z_site], m.cfg.n_layers - 1)[:, :, 0]
    ho_corr = m.head_outputs(rk.cache[z_site], m.cfg.n_layers - 1)[:, :, 0]
    want = head(norm(resid_corr - ho_corr + ho_clean))[:, -1]
    torch.testing.assert_close(edge_run(m, g, clean, keep=keep, ablated=abl).logits, want, atol=1e-5, rtol=1e-5)


def test_edge_run_checks_its_inputs_and_leaves_no_hooks():
    m = tiny("llama")
    g = Graph.of(m)
    clean, corrupted = _pairs()
    with pytest.raises(ValueError, match=r"needs \[copies, "):
        edge_run(m, g, clean, keep=torch.ones(3, 3), ablated=sender_outputs(m, g, corrupted))
    with pytest.raises(ValueError, match="needs ablated"):
        edge_run(m, g, clean, keep=g.allowed.float())

    def broken(logits):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        edge_run(m, g, clean, grad_metric=broken)
    assert _no_hooks(m)
    with pytest.raises(ValueError, match="valid: corrupted, mean, resample, zero"):
        ablated_outputs(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5), torch.ones(2, 3), "nothing")
    zero = ablated_outputs(torch.ones(2, 3, 4, 5), torch.ones(2, 3, 4, 5), torch.ones(2, 3), "zero")
    assert zero.shape == (1, 3, 4, 5) and not zero.any()


# ------------------------------------------------------------------------------------------------
# Discovery on a model whose circuit is known


def test_eap_and_eap_ig_rank_exactly_the_planted_edges_first(planted):
    model, task = planted
    planted_set = set(PLANTED_EDGES)
    for method in (eap, eap_ig):
        scores = method(model, task, progress=False)
        ranked = scores.ranked()
        assert {(s, r) for s, r, _ in ranked[:6]} == planted_set, method.__name__
        assert all(abs(v) < 1e-6 for *_, v in ranked[6:])  # nothing else carries any signal
        assert all(abs(v) > 1e-3 for *_, v in ranked[:6])


def test_acdc_recovers_exactly_the_planted_edges(planted):
    model, task = planted
    for measure in ("kl", "task"):
        circuit = acdc(model, task, threshold=1e-4, measure=measure, speculate=4, progress=False)
        assert {(s, r) for s, r, _ in circuit.edges} == set(PLANTED_EDGES), measure
        assert circuit.faithfulness == pytest.approx(1.0, abs=1e-5)
        assert circuit.extra["forwards"] < Graph.of(model).n_edges  # speculative batching pays off


def test_planted_circuit_is_faithful_and_complete_under_every_ablation(planted):
    model, task = planted
    g = Graph.of(model)
    circuit = circuit_from_mask(g, g.mask_of(PLANTED_EDGES), provenance=Provenance.of(model), task="planted")
    for ablation in ("corrupted", "mean", "resample"):
        ev = evaluate(model, task, circuit, ablation=ablation)
        assert ev.faithfulness == pytest.approx(1.0, abs=1e-5), ablation
        assert ev.extra["complement_faithfulness"] == pytest.approx(0.0, abs=1e-5), ablation
        assert ev.completeness == pytest.approx(1.0, abs=1e-5)
    # a wrong circuit (one planted edge missing) is not faithful
    partial = circuit_from_mask(g, g.mask_of(PLANTED_EDGES[1:]), provenance=Provenance.of(model), task="planted")
    assert evaluate(model, task, partial).faithfulness < 0.5
    many = faithfulness(model, task, torch.stack([g.mask_of(PLANTED_EDGES), g.mask_of(PLANTED_EDGES[1:]), g.allowed.float()]))
    torch.testing.assert_close(many, torch.tensor([1.0, evaluate(model, task, partial).faithfulness, 1.0]), atol=1e-5, rtol=0)


def test_minimal_circuit_finds_the_planted_circuit_and_keeps_the_curve(planted):
    model, task = planted
    scores = eap_ig(model, task, progress=False)
    # the planted key edge has a negative score (attending by token identity lowers this metric on
    # average), so only the |score| ranking holds it; the signed ranking needs every edge
    circuit = minimal_circuit(model, task, scores, target=0.99, absolute=True, progress=False)
    assert {(s, r) for s, r, _ in circuit.edges} == set(PLANTED_EDGES)
    assert circuit.faithfulness == pytest.approx(1.0, abs=1e-5)
    sizes = [n for n, _ in circuit.extra["curve"]]
    assert sizes == sorted(sizes) and circuit.extra["curve"][-1][1] == pytest.approx(1.0, abs=1e-5)
    signed = minimal_circuit(model, task, scores, target=0.99, progress=False)
    assert len(signed.edges) > 6 and signed.extra["ranking"] == "score"
    again = evaluate(model, task, signed)  # the evidence minimal_circuit reuses from its curve is evaluate's
    for key in ("metric_circuit", "metric_empty", "complement_faithfulness"):
        assert signed.extra[key] == pytest.approx(again.extra[key], abs=1e-6)
    assert (signed.faithfulness, signed.completeness) == pytest.approx((again.faithfulness, again.completeness), abs=1e-6)
    assert circuit.png_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no circuit reaches faithfulness 1.5"):
        minimal_circuit(model, task, scores, target=1.5, progress=False)


def test_circuit_json_round_trip_and_bad_documents(planted):
    model, task = planted
    g = Graph.of(model)
    circuit = evaluate(model, task, circuit_from_mask(g, g.mask_of(PLANTED_EDGES), provenance=Provenance.of(model),
                                                      task="planted"))
    back = Circuit.from_json(circuit.to_json())
    assert back.edges == circuit.edges and back.faithfulness == circuit.faithfulness and back.nodes == circuit.nodes
    assert g.mask_of(back.edges).sum() == 6
    with pytest.raises(ValueError, match="not a circuit JSON document"):
        Circuit.from_json("{broken")
    with pytest.raises(ValueError, match="type 'PatchingSweep'"):
        Circuit.from_json('{"type": "PatchingSweep"}')
    with pytest.raises(ValueError, match="is not \\[sender, receiver, score\\]"):
        Circuit.from_json('{"type": "Circuit", "edges": [["embed"]]}')
    svg = back.svg()
    assert svg.count('class="edge"') == 6 and "a1.h0" in svg


# ------------------------------------------------------------------------------------------------
# Path patching


def test_path_patching_into_every_reader_equals_patching_the_head():
    m = tiny("gpt2")
    task = _random_task(m)
    g = Graph.of(m)
    paths = path_patching(m, task, receivers=g.receivers, progress=False)
    heads = activation_patching(m, task, "heads", direction="noising", progress=False)
    got = torch.stack([paths.effect[g.sender_index(f"a{l}.h{h}")] for l in range(m.cfg.n_layers)
                       for h in range(m.cfg.n_heads)]).view_as(heads.effect)
    torch.testing.assert_close(got, heads.effect, atol=1e-4, rtol=0)


def test_path_patching_finds_the_planted_path(planted):
    model, task = planted
    into_logits = path_patching(model, task, "logits", progress=False)
    assert into_logits.top(1)[0] == ("a1.h0", pytest.approx(0.0, abs=1e-5))  # noising: the whole effect
    joint = path_patching(model, task, "a1.h0.v", senders=["m0"], direction="denoising", progress=False)
    assert joint.senders == ["m0"] and 0.2 < float(joint.effect[0]) <= 1.0 + 1e-5
    q_only = path_patching(model, task, "a1.h0.q", senders=["a0.h0", "m0"], progress=False)
    assert float(q_only.effect[0]) == pytest.approx(1.0, abs=1e-6)  # the query reads neither
    with pytest.raises(ValueError, match="writes after every receiver"):
        path_patching(model, task, "a0.h0.q", senders=["a1.h0"], progress=False)
    assert "path patching into a1.h0.q" in q_only.summary()
    assert into_logits.png_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------
# Causal scrubbing on a model trained for it


def _first(toks):
    """the first token"""
    return toks[0]


def _last(toks):
    """the last token"""
    return toks[-1]


@pytest.fixture(scope="module")
def recall():
    from mechscope.toy.recall import recall_data, train_first_token

    model = train_first_token()
    inputs, targets = recall_data(160, seed=5)
    return model, inputs, targets


def test_scrubbing_accepts_the_true_hypothesis_and_rejects_false_ones(recall):
    from mechscope.circuits.scrubbing import causal_scrubbing

    model, inputs, targets = recall
    result = causal_scrubbing(model, inputs, targets, {
        "heads send the first token": {"a0.h0->logits": _first, "a0.h1->logits": _first},
        "heads send the last token": {"a0.h0->logits": _last, "a0.h1->logits": _last},
        "the direct path does it": {"embed": None},
        "only head 0 matters": {"a0.h0": _first},
    })
    assert result.loss_model < 0.05 and result.loss_random > 5  # trained, and chance is far worse
    true, last, direct, head0 = result.recovered
    assert true > 0.97
    assert abs(last) < 0.05 and abs(direct) < 0.05
    assert 0.1 < head0 < 0.97  # one head alone carries part of it
    assert result.hypotheses["heads send the first token"]["a0.h0->logits"] == "the first token"
    assert "recovered" in result.summary() and result.png_bytes()[:4] == b"\x89PNG"


def test_scrubbing_errors_name_the_bad_claim(recall):
    from mechscope.circuits.scrubbing import causal_scrubbing

    model, inputs, targets = recall
    with pytest.raises(ValueError, match="hypothesis 'bad': unknown sender 'a3.h0'"):
        causal_scrubbing(model, inputs, targets, {"bad": {"a3.h0": _first}})
    with pytest.raises(ValueError, match="rows of one length"):
        causal_scrubbing(model, [[1, 2], [1, 2, 3]], [1, 1], {"h": {"embed": None}})


def test_discover_returns_the_circuit_and_holds_its_edge_scores(planted, tmp_path):
    """discover returns a Result (the circuit); the EAP-IG scores it chose by stay with it in this
    process and are not saved — a circuit read back says so by name."""
    from mechscope.circuits import discover
    from mechscope.results import load_result

    model, task = planted
    circuit = discover(model, task, "eap-ig", faithfulness=0.99, progress=False)
    assert isinstance(circuit, Circuit) and circuit.faithfulness >= 0.99
    scores = circuit.edge_scores
    g = Graph.of(model)
    assert scores.method == "eap-ig" and tuple(scores.scores.shape) == (len(g.senders), len(g.receivers))
    assert discover(model, task, "acdc", threshold=0.5, progress=False).edge_scores is None
    circuit.save(tmp_path / "c")
    with pytest.raises(AttributeError, match="holds no edge_scores: a live object .* not saved"):
        load_result(tmp_path / "c").edge_scores
    with pytest.raises(TypeError, match="non-iterable Circuit"):
        _, _ = circuit


def test_bad_components_and_counts_name_themselves(planted, llama):
    """A bad head in path_patching raised a bare KeyError (printed as a quoted key); a task with n=-1
    pairs read "has no prompt pairs"."""
    from mechscope.tasks import make_task

    model, task = planted
    with pytest.raises(ValueError, match="unknown receiver 'a1.h99'; give a head") as err:
        path_patching(model, task, "a1.h99", progress=False)
    assert str(err.value).startswith("unknown receiver 'a1.h99'")  # the message, not a quoted key
    with pytest.raises(KeyError):  # still a lookup error for code that catches KeyError
        path_patching(model, task, "a0.h0", senders=["a9.h0"], progress=False)
    for name in ("ioi", "induction", "greater-than"):
        with pytest.raises(ValueError, match=r"n=-1: prompt pairs must be an integer ≥ 1"):
            make_task(name, llama, n=-1)
