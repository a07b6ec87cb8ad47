"""Explanations: examples chosen as delphi chooses them, prompts in delphi's layout, answers read robustly,
metrics as delphi and scikit-learn compute them, a local chat model decoding exactly what HF computes, the
reply cache, and a whole run on a tiny model; the simulation scorer's arithmetic and a local model's prompt
log-probabilities; supernodes proposed from explanations and edge profiles. (delphi itself: tests/test_explain_delphi.py; a served
endpoint: tests/test_explain_serve.py.)"""

from __future__ import annotations

import random

import pytest
import torch

from mechscope.explain import ExampleConfig, Explanations, LocalChat, examples as E, prompts, scoring
from mechscope.explain.clients import CachedChat, ChatError, OpenAIChat
from mechscope.explain.run import explain_units, top_tokens_label

from helpers import RuleChat


def ctx(tokens, acts, q=0):
    return {"ids": list(range(len(tokens))), "tokens": list(tokens), "acts": list(acts), "quantile": q}


# -- prompts ------------------------------------------------------------------------------------------

def test_scorer_prompt_layout():
    msgs = prompts.scorer_messages("detection", "cats", ["the cat", "a dog"])
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1]["content"] == "Latent explanation: cats\n\nText examples:\n\nExample 0: the cat\nExample 1: a dog\n"
    assert "ĊĊ" in msgs[1]["content"]  # delphi's few-shot GPT-2 byte artefacts are kept
    fuzz = prompts.scorer_messages("fuzz", "cats", ["x"])
    assert "<<" in fuzz[0]["content"] and fuzz[2]["content"] == "[1,0,0,1,1]"


def test_explainer_prompt_marks_and_scales():
    c = ctx(["a", " big", " cat", " sat"], [0.0, 4.0, 10.0, 0.5])
    assert prompts.explainer_context(c, 10.0, activations=False) == "a<< big cat>> sat"
    assert prompts.explainer_context(c, 10.0, activations=True) == 'a<< big cat>> sat\nActivations: (" big" : 4), (" cat" : 10), '
    msgs = prompts.explainer_messages([c, c], 10.0)
    assert msgs[-1]["content"].startswith("\na<< big cat>> sat\nActivations:") and msgs[-1]["content"].endswith("\n")
    assert msgs[0]["content"].endswith("[EXPLANATION]:\n\n\n")  # the system prompt without chain of thought
    assert prompts.normalized([0.0, 0.1, 5.0, 10.0, 11.0], 10.0) == [0, 1, 5, 10, 10]


def test_fuzz_marks_follow_delphi():
    tokens = [f"t{i}" for i in range(8)]
    assert prompts.fuzz_text(ctx(tokens, [0, 0, 3, 1, 0, 10, 0, 0]), 0) == "t0t1<<t2>>t3t4<<t5>>t6t7"
    wrong = prompts.fuzz_text(ctx(tokens, [0] * 8), 2)
    assert wrong.count("<<") == 2 and "<<t6>>" in wrong  # 8 − 8 // 4 = 6 is always one of them
    assert wrong == prompts.fuzz_text(ctx(tokens, [0] * 8), 2)  # drawn from random.Random(22): repeatable
    assert prompts.fuzz_text(ctx(["x"], [0]), 1).startswith("<<NNsight>>")  # delphi's fallback for one token


def test_answers_are_read_or_refused():
    assert prompts.parse_predictions("Sure: [1, 0,1] ok", 3) == [True, False, True]
    for bad in ["yes", "[1,0", "[yes]", "[1,0]"]:
        with pytest.raises(ValueError):
            prompts.parse_predictions(bad, 3)
    assert prompts.parse_explanation("blah\n[EXPLANATION]:  Dogs.\nmore") == "Dogs."
    assert prompts.parse_explanation("[EXPLANATION]:   ") is None and prompts.parse_explanation("Dogs") is None
    steps = [{"token": "[", "logprob": 0.0, "top": [["[", 0.0]]},
             {"token": "1", "logprob": -0.2, "top": [["1", -0.2], ["0", -1.8], ["The", -4.0]]},
             {"token": "]", "logprob": 0.0, "top": [["]", 0.0]]}]
    p1, p0 = torch.tensor(-0.2).exp(), torch.tensor(-1.8).exp()
    assert prompts.prediction_probabilities(steps, 1) == pytest.approx([float(p1 / (p0 + p1))])
    assert prompts.prediction_probabilities(steps, 2) is None


# -- metrics ------------------------------------------------------------------------------------------

def test_metrics_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    preds = [{"text": "", "quantile": 0, "activating": rng.random() < 0.5, "prediction": rng.random() < 0.6,
              "probability": round(rng.random(), 1)} for _ in range(300)]
    preds[3]["prediction"] = preds[3]["probability"] = None  # a malformed answer
    m = scoring.metrics(preds)
    ok = [p for p in preds if p["prediction"] is not None]
    y, yhat = [p["activating"] for p in ok], [p["prediction"] for p in ok]
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, yhat), abs=1e-12)
    assert m["precision"] == pytest.approx(sk.precision_score(y, yhat), abs=1e-12)
    assert m["recall"] == pytest.approx(sk.recall_score(y, yhat), abs=1e-12)
    assert m["f1"] == pytest.approx(sk.f1_score(y, yhat), abs=1e-12)
    assert m["auc"] == pytest.approx(sk.roc_auc_score(y, [p["probability"] for p in ok]), abs=1e-12)  # ties included
    assert m["n_unanswered"] == 1 and m["n"] == 299
    assert scoring.roc_auc([0.3, 0.4], [True, True]) is None


# -- examples -----------------------------------------------------------------------------------------

def synthetic(n_windows=200, ctx_len=8, seed=0):
    """Activations of 3 units over random windows: unit 0 fires on token 7 in even windows (odd windows holding
    a 7 are its look-alikes), with strength by window; unit 1 never fires; unit 2 fires in 3 windows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n_windows, ctx_len), generator=g)
    ids[::2, 3] = 7
    acts = torch.zeros(n_windows, ctx_len, 3)
    acts[..., 0] = (ids == 7).float() * torch.rand(n_windows, 1, generator=g)
    acts[1::2, :, 0] = 0.0
    acts[:3, 0, 2] = 1.0
    return acts, ids


def test_examples_by_quantile_with_negatives():
    acts, ids = synthetic()
    cfg = ExampleConfig(ctx_len=8, n_quantiles=5, n_test=20, n_train=10, n_negatives=10, min_windows=5)
    got = E.choose(acts, ids, [10, 11, 12], cfg, lambda t: f"<{t}>")
    firing = got[0]
    assert firing["unit"] == 10 and firing["skipped"] == "" and len(firing["test"]) == 20 and len(firing["train"]) == 10
    peaks = {tuple(c["ids"]): max(c["acts"]) for c in firing["test"]}
    by_q = [[max(c["acts"]) for c in firing["test"] if c["quantile"] == q] for q in range(5)]
    assert all(len(b) == 4 for b in by_q) and all(min(by_q[q]) >= max(by_q[q + 1]) for q in range(4))  # slice 0 strongest
    assert not {tuple(c["ids"]) for c in firing["train"]} & peaks.keys()  # train never repeats a test window
    assert len(firing["random_negatives"]) == 10 and all(max(c["acts"]) == 0 for c in firing["random_negatives"])
    assert firing["hard_negatives"] and all(7 in c["ids"] and max(c["acts"]) == 0 for c in firing["hard_negatives"])
    assert firing["test"][0]["tokens"][0].startswith("<")
    assert got[1]["skipped"].startswith("never fires") and got[2]["skipped"].startswith("fires in 3 of 200 windows")
    assert E.choose(acts, ids, [10, 11, 12], cfg, str) == E.choose(acts, ids, [10, 11, 12], cfg, str)  # seeded


def test_example_config_refuses_nonsense():
    for bad in [dict(ctx_len=0), dict(n_test=-1), dict(train_type="best"), dict(ratio_top=2.0)]:
        with pytest.raises(ValueError):
            ExampleConfig(**bad)


# -- scoring with a scripted client ---------------------------------------------------------------------

def unit(n=10):
    test = [ctx(["the", " cat", " sat"], [0, 1.0, 0], q) for q in range(n)]
    neg = [ctx(["a", " dog", " ran"], [0, 0, 0], -1) for _ in range(n)]
    neg[0] = ctx(["one", " cat", " here"], [0, 0, 0], -1)  # a negative the rule calls positive
    return {"unit": 0, "max_act": 1.0, "line": 0.0, "n_windows": n, "density": 0.1, "train": test[:3], "test": test,
            "random_negatives": neg, "hard_negatives": [], "skipped": ""}


def test_detection_arithmetic_and_malformed_answers():
    client = RuleChat(garbage={2, 5})
    s = scoring.score("detection", client, "'cat'", unit(), retries=0)
    m = s["metrics"]
    assert s["malformed"] == 2 and m["n_unanswered"] == 2 and m["n"] == 18 and s["prompts"] == 20
    # every answered positive is right; the one false positive is the "cat" negative, unless it went unanswered
    cat = next(p for p in s["predictions"] if "one cat" in p["text"])
    fp = 0 if cat["prediction"] is None else 1
    assert m["recall"] == 1.0 and m["tnr"] == (m["n_negative"] - fp) / m["n_negative"]
    retried = scoring.score("detection", RuleChat(garbage={2, 5}), "'cat'", unit(), retries=1)
    assert retried["malformed"] == 2 and retried["metrics"]["n_unanswered"] == 0  # asked again, answered
    assert retried["metrics"]["balanced_accuracy"] == pytest.approx((1.0 + 0.9) / 2)
    assert retried["recall_by_quantile"] == [1.0] * 10


def test_fuzz_shows_marks():
    s = scoring.score("fuzz", RuleChat(), "'<< cat>>'", unit(), n_shown=3)
    assert s["prompts"] == 7 and s["metrics"]["recall"] == 1.0  # 20 contexts, 3 per prompt
    assert all("<<" in p["text"] for p in s["predictions"])


def test_cached_chat_asks_nothing_twice(tmp_path):
    inner = RuleChat()
    cached = CachedChat(inner, tmp_path / "replies.sqlite")
    first = scoring.score("detection", cached, "'cat'", unit())
    calls = inner.calls
    again = scoring.score("detection", CachedChat(inner, tmp_path / "replies.sqlite"), "'cat'", unit())
    assert inner.calls == calls and again["predictions"] == first["predictions"]
    assert cached.usage.requests == 20 and cached.usage.cache_hits == 0


# -- a local chat model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_chat():
    from mechscope.models.tiny import tiny_chat

    return tiny_chat()


def test_local_chat_decodes_what_hf_computes(tiny_chat):
    """Batched decoding with the shared prefix's cache reused and ragged prompts padded inside: every
    generated token's log-probability equals a plain forward of the whole sequence's, and it is the argmax."""
    chat = LocalChat(tiny_chat, batch_size=3)
    convs = [prompts.scorer_messages("detection", "cats", [t]) for t in ["the cat", "a much longer dog text here", "x"]]
    convs.append([{"role": "user", "content": "something else entirely"}])
    replies = chat.chat(convs, max_tokens=5, top_logprobs=3)
    for conv, r in zip(convs, replies):
        ids = chat.ids(conv)
        assert r.prompt_tokens == len(ids) and r.completion_tokens == len(r.logprobs) <= 5 and r.logprobs
        full = torch.tensor([ids + [s["id"] for s in r.logprobs]])
        with torch.no_grad():
            lp = torch.log_softmax(tiny_chat.hf(full).logits[0].float(), -1)
        for k, step in enumerate(r.logprobs):
            row = lp[len(ids) + k - 1]
            assert step["logprob"] == pytest.approx(float(row[step["id"]]), abs=1e-4)
            assert float(row.max()) - step["logprob"] < 1e-4  # greedy: the likeliest token
            assert [t for t, _ in step["top"]] == [tiny_chat.tokenizer.decode([int(j)]) for j in row.topk(3).indices]
    again = chat.chat(convs, max_tokens=5, top_logprobs=3)  # prefixes kept from the first call: the same answers
    assert [r.text for r in again] == [r.text for r in replies]


def test_local_chat_holds_answers_to_the_form(tiny_chat):
    chat = LocalChat(tiny_chat)
    convs = [prompts.scorer_messages("fuzz", "cats", ["a <<cat>>", "b", "c"])] * 2
    replies = chat.chat(convs, max_tokens=20, binary_answers=3, top_logprobs=2)
    for r in replies:
        assert len(prompts.parse_predictions(r.text, 3)) == 3
        probs = prompts.prediction_probabilities(r.logprobs, 3)
        assert probs is not None and all(0 <= p <= 1 for p in probs)
        digits = [dict((t, lp) for t, lp in step["top"] if t in ("0", "1")) for step in r.logprobs[1::2]]
        assert [d["1"] > d["0"] for d in digits] == prompts.parse_predictions(r.text, 3)  # the likelier digit
    free = chat.chat(convs[:1], max_tokens=4)  # a random model, left free, rambles
    assert free[0].completion_tokens <= 4


def test_chat_errors_are_clear(tiny_chat):
    from mechscope.models.tiny import tiny

    with pytest.raises(ChatError, match="no chat template"):
        LocalChat(tiny("llama"))
    with pytest.raises(ChatError, match="context"):
        LocalChat(tiny_chat).chat([[{"role": "user", "content": "word " * 9000}]], max_tokens=4)
    with pytest.raises(ValueError, match="max_tokens"):
        LocalChat(tiny_chat).chat([[{"role": "user", "content": "x"}]], max_tokens=0)
    pytest.importorskip("openai")
    with pytest.raises(ChatError, match="cannot reach http://127.0.0.1:9/v1"):
        OpenAIChat("http://127.0.0.1:9/v1", "m", retries=0, timeout=5).chat([[{"role": "user", "content": "x"}]],
                                                                            max_tokens=2)
    with pytest.raises(ChatError, match="which model"):
        OpenAIChat("http://127.0.0.1:9/v1", "")


# -- a whole run ----------------------------------------------------------------------------------------

def test_explain_run_end_to_end(tiny_chat, tmp_path):
    """Neurons of a tiny model explained by a scripted client: each explanation is scored with both scorers
    and both baselines, the result reads back whole and draws itself."""
    from mechscope.models.tiny import tiny
    from mechscope.results import load_result

    model = tiny("llama")
    units = E.neuron_units(model, 1, [0, 1, 2, 3])
    blocks = torch.randint(3, 300, (24, 32), generator=torch.Generator().manual_seed(0))
    cfg = ExampleConfig(ctx_len=16, n_quantiles=2, n_test=6, n_train=4, n_negatives=6, min_windows=2)
    client = RuleChat()
    examples = E.unit_examples(units, model, config=cfg, blocks=blocks, progress=False)
    r = explain_units(units, model, explainer=client, examples=examples, config=cfg, cache=tmp_path / "c.sqlite",
                      progress=False)
    assert isinstance(r, Explanations) and r.kind == "neuron" and r.site == "blocks.1.mlp.post"
    explained = [u for u in r.units if u["explanation"] is not None]
    assert explained and all(set(u["scores"]) == {"detection", "fuzz"} for u in explained)
    assert all(u["intruder"] is None for u in r.units)
    assert all(set(u["baselines"]) == {"top_tokens", "shuffled"} for u in explained) or len(explained) < 2
    assert r.usage["explainer"]["requests"] > 0 and r.malformed()["explainer"] == 0
    assert "explained by rule" in r.summary() and r.name(0) == "L1 N0"
    r.save(tmp_path / "res")
    back = load_result(tmp_path / "res")
    assert back.summary() == r.summary() and back.pooled("detection") == r.pooled("detection")
    html = r.html(draw=False)
    assert "<table class=\"explanations\">" in html and "&#39;" in html  # explanations are escaped
    assert r.png_bytes()[:4] == b"\x89PNG"
    rerun = explain_units(units, model, explainer=client, examples=examples, config=cfg, cache=tmp_path / "c.sqlite",
                          progress=False)
    assert rerun.usage["explainer"]["cache_hits"] == rerun.usage["explainer"]["requests"]  # nothing asked twice
    assert top_tokens_label(["a", " b"]) == "the tokens 'a', ' b'"
    with pytest.raises(ValueError, match="scorers"):
        explain_units(units, model, explainer=client, examples=examples, scorers=["simulation!"], cache=False)
    sim = explain_units(units, model, explainer=client, examples=examples, config=cfg, scorers=["simulation"],
                        baselines=("shuffled",), cache=False, progress=False)
    done = [u for u in sim.units if u["explanation"] is not None]
    assert done and all(u["simulation"]["explanation"]["mode"] == "json" for u in done)  # an endpoint-like client
    assert all(set(u["simulation"]) == {"explanation", "shuffled"} for u in done) or len(done) < 2
    assert "simulation (json): mean correlation" in sim.summary() and "simulation (correlation)" in sim.html(draw=False)
    assert sim.png_bytes()[:4] == b"\x89PNG" and "simulation" in sim.evidence()


def test_explanations_travel_with_their_dictionary(tmp_path):
    """The sidecar beside a dictionary's weights: read back for the same weights, refused (with a warning) for
    others, and a later run adds to it."""
    from mechscope.explain import explain_features
    from mechscope.explain.sidecar import SIDECAR, dictionary_fingerprint, read_sidecar, write_sidecar
    from mechscope.models.tiny import tiny
    from mechscope.sae import SAEConfig, SparseCoder

    model = tiny("llama")
    site = "blocks.1.resid_post"
    tokens = torch.randint(3, 300, (24, 32), generator=torch.Generator().manual_seed(0))
    x = model.run(tokens[:4], cache=site).cache[site].reshape(-1, model.cfg.d_model)
    sae = SparseCoder(SAEConfig("topk", model.cfg.d_model, 16, k=4, site=site)).fit(x, batch_size=16, steps=4,
                                                                                   progress=False)
    cfg = ExampleConfig(ctx_len=16, n_quantiles=2, n_test=4, n_train=2, n_negatives=4, min_windows=2)
    r = explain_features(sae, model, range(8), explainer=RuleChat(), blocks=tokens, config=cfg, cache=False,
                         baselines=(), progress=False)
    fp = dictionary_fingerprint(sae)
    write_sidecar(r, tmp_path, fp)
    got = read_sidecar(tmp_path, fp)
    explained = {u["unit"]: u["explanation"] for u in r.units if u["explanation"] is not None}
    assert explained and {k: v["explanation"] for k, v in got.items()} == explained
    assert set(next(iter(got.values()))["scores"]) == {"detection", "fuzz"}
    with pytest.warns(UserWarning, match="explains other weights"):
        assert read_sidecar(tmp_path, "0" * 32) == {}
    more = explain_features(sae, model, range(8, 16), explainer=RuleChat(), blocks=tokens, config=cfg, cache=False,
                            baselines=(), progress=False)
    write_sidecar(more, tmp_path, fp)
    assert set(read_sidecar(tmp_path, fp)) == set(explained) | {u["unit"] for u in more.units if u["explanation"]}
    (tmp_path / SIDECAR).write_text("{not json")
    with pytest.warns(UserWarning, match="cannot be read"):
        assert read_sidecar(tmp_path, fp) == {}


def test_a_graphs_nodes_carry_their_explanations(tmp_path):
    """The kept features of an attribution graph, explained layer by layer from one pass over the blocks: the
    explanations land on the viewer's nodes and become the Neuronpedia export's clerps."""
    from mechscope.explain.graph import explain_graph
    from mechscope.models.tiny import tiny
    from mechscope.tracing import attribution_graph, to_neuronpedia
    from mechscope.tracing.view import view_data
    from test_attribution_graph import random_transcoders

    model = tiny("llama")
    coders = random_transcoders(model)
    graph = attribution_graph(model, coders, "The cat sat on the mat", batch_size=8, progress=False)
    blocks = torch.randint(3, 300, (24, 32), generator=torch.Generator().manual_seed(0))
    cfg = ExampleConfig(ctx_len=16, n_quantiles=2, n_test=4, n_train=2, n_negatives=4, min_windows=2)
    results = explain_graph(graph, model, coders, node_threshold=1.0, edge_threshold=1.0, max_features=6,
                            explainer=RuleChat(), blocks=blocks, config=cfg, cache=False, baselines=(), progress=False)
    assert results and all(isinstance(r, Explanations) for r in results)
    assert sum(len(r.units) for r in results) <= 6 and len({r.site for r in results}) == len(results)
    found = graph.extra["explanations"]
    assert found and all(set(v["scores"]) <= {"detection", "fuzz"} for v in found.values())
    for r in results:  # the one-pass examples equal each layer's own
        layer = int(r.site.split(".")[1])
        own = E.unit_examples(E.dictionary_units(coders[layer], model, [u["unit"] for u in r.units]), model,
                              config=cfg, blocks=blocks, progress=False)
        assert [u["max_act"] for u in own] == pytest.approx([u["max_act"] for u in r.units], abs=1e-5)
    shown = {n["id"]: n for n in view_data(graph, 1.0, 1.0)["nodes"]}
    with_text = [n for n in shown.values() if "explanation" in n]
    assert len(with_text) >= len(found) and with_text[0]["explanation"]["explanation"] in \
        {v["explanation"] for v in found.values()}
    clerps = {n["node_id"]: n["clerp"] for n in to_neuronpedia(graph, node_threshold=1.0, edge_threshold=1.0)["nodes"]}
    assert {with_text[0]["explanation"]["explanation"]} <= set(clerps.values())
    from mechscope.tracing.supernodes import graph_texts, propose_supernodes
    from mechscope.tracing import from_neuronpedia

    texts = graph_texts(graph)
    assert {texts[i] for i, n in shown.items() if "explanation" in n} <= {v["explanation"] for v in found.values()}
    groups = propose_supernodes(graph, texts, node_threshold=1.0, edge_threshold=1.0, threshold=0.0)
    assert groups and all(m in texts for g in groups for m in g[1:])
    back = from_neuronpedia(to_neuronpedia(graph, node_threshold=1.0, edge_threshold=1.0))
    assert {k: v for k, v in graph_texts(back).items() if v} == {k: clerps[k] for k in graph_texts(back) if clerps.get(k)}


def test_intruder_prompts_and_score():
    from mechscope.explain.intruder import intruder_prompts, intruder_score, parse_intruder

    ex = unit()
    ex["test"] = [ctx(["the", " cat", " sat"], [0, 1.0, 0], q) for q in range(3) for _ in range(4)]
    prompts_ = intruder_prompts(ex, n_shown=4)
    assert len(prompts_) == 10 and all(len(p["shown"]) == 4 and 0 <= p["intruder"] < 4 for p in prompts_)
    assert [p["quantile"] for p in prompts_] == [0, 1, 2] * 3 + [0]  # quantiles in turn, one prompt per negative
    for p in prompts_:  # the activating contexts show their active token; the intruder is marked at random
        assert all("<< cat>>" in t for i, t in enumerate(p["shown"]) if i != p["intruder"])
    assert prompts_ == intruder_prompts(ex, n_shown=4)  # seeded
    assert parse_intruder("Hmm. [RESPONSE]: 2", 4) == 2
    for bad in ["2", "[RESPONSE]: two", "[RESPONSE]: 4", "[RESPONSE]: 1."]:
        with pytest.raises(ValueError):
            parse_intruder(bad, 4)
    s = intruder_score(RuleChat(garbage={1}), ex, n_shown=4, retries=0)
    answered = [p for p in s["prompts"] if p["prediction"] is not None]
    assert s["malformed"] == 1 and s["n_unanswered"] == 1 and s["n"] == 9 and s["chance"] == 0.25
    assert s["accuracy"] == sum(p["prediction"] == p["intruder"] for p in answered) / 9
    assert s["accuracy_by_quantile"][1] == sum(p["prediction"] == p["intruder"] for p in answered
                                               if p["quantile"] == 1) / len([p for p in answered if p["quantile"] == 1])
    with pytest.raises(ValueError, match="at least 2"):
        intruder_prompts(ex, n_shown=1)


def test_local_model_names_an_intruder(tiny_chat):
    from mechscope.explain.intruder import intruder_score

    s = intruder_score(LocalChat(tiny_chat), unit(4), n_shown=3, retries=0)
    assert s["malformed"] == 0 and s["n"] == 4  # held to an index: every answer counts


def test_explanations_export_as_neuronpedia_rows(tmp_path):
    import gzip
    import json

    from mechscope.explain.neuronpedia import explanation_rows, write_explanations
    from mechscope.models.tiny import tiny

    model = tiny("llama")
    units = E.neuron_units(model, 1, [0, 1, 2, 3])
    blocks = torch.randint(3, 300, (24, 32), generator=torch.Generator().manual_seed(0))
    cfg = ExampleConfig(ctx_len=16, n_quantiles=2, n_test=4, n_train=2, n_negatives=4, min_windows=2)
    r = explain_units(units, model, explainer=RuleChat(), blocks=blocks, config=cfg, cache=False, baselines=(),
                      progress=False)
    rows = explanation_rows(r, "tiny-llama", "1-mlp-mechscope")
    explained = [u for u in r.units if u["explanation"] is not None]
    assert len(rows) == len(explained) and rows[0]["description"] == explained[0]["explanation"]
    assert rows[0]["layer"] == "1-mlp-mechscope" and rows[0]["index"] == str(explained[0]["unit"])
    names = {s["explanationScoreTypeName"]: s for s in rows[0]["scores"]}
    assert set(names) == {"eleuther_recall", "eleuther_fuzz"}
    assert names["eleuther_recall"]["value"] == explained[0]["scores"]["detection"]["metrics"]["balanced_accuracy"]
    details = json.loads(names["eleuther_fuzz"]["jsonDetails"])
    assert {d["distance"] for d in details if not d["activating"]} == {-1} and min(d["distance"] for d in details
                                                                                   if d["activating"]) == 1
    paths = write_explanations(r, tmp_path, "tiny-llama", "1-mlp-mechscope", batch_size=1)
    assert [p.name for p in paths] == [f"batch-{i}.jsonl.gz" for i in range(len(rows))]
    assert json.loads(gzip.decompress(paths[0].read_bytes()))["id"] == rows[0]["id"]
    assert explanation_rows(r, "tiny-llama", "1-mlp-mechscope") == rows  # ids and times are stable


def test_hard_negatives_are_look_alikes_and_scored():
    """negatives="hard": the scorer judges the unit's test contexts against silent contexts that hold the
    tokens it fires on; a unit without any is skipped with the reason."""
    from mechscope.models.tiny import tiny

    model = tiny("llama")
    neurons = E.neuron_units(model, 1, [0, 1, 2, 3])
    blocks = torch.randint(3, 300, (24, 32), generator=torch.Generator().manual_seed(0))
    cfg = ExampleConfig(ctx_len=16, n_quantiles=2, n_test=4, n_train=2, n_negatives=4, min_windows=2)
    examples = E.unit_examples(neurons, model, config=cfg, blocks=blocks, progress=False)
    r = explain_units(neurons, model, explainer=RuleChat(), examples=examples, config=cfg, negatives="hard",
                      baselines=(), cache=False, progress=False)
    assert r.negatives == "hard" and "hard negatives" in r.summary()
    for ex, u in zip(examples, r.units):
        if u["scores"]:
            shown = {p["text"] for p in u["scores"]["detection"]["predictions"] if not p["activating"]}
            assert shown == {"".join(c["tokens"]) for c in ex["hard_negatives"]}
        elif not ex["skipped"] and not ex["hard_negatives"]:
            assert u["skipped"].startswith("no look-alike context")


# -- simulation -----------------------------------------------------------------------------------------

def test_simulation_arithmetic():
    """delphi's reading of a step's alternatives (int() of the text, 0–10, renormalised, a later duplicate
    text replacing an earlier one), of a JSON answer, and the correlations by window, quantile and all."""
    from mechscope.explain import simulation as S

    assert S.expected_value([["3", 0.0], ["word", -1.0], [" 5", -0.5], ["11", -0.1]]) == pytest.approx(
        (3 * 1 + 5 * torch.tensor(-0.5).exp().item()) / (1 + torch.tensor(-0.5).exp().item()))
    assert S.expected_value([["2", -9.0], ["2", 0.0], ["10", 0.0]]) == pytest.approx(6.0)
    assert S.expected_value([["a", 0.0]]) == 0.0
    assert S.parse_json_activations('{"activations": [{"token": "a", "activation": 3}, {"token": "b", '
                                    '"activation": 12}, {"token": "c", "activation": "x"}, {"token": "d"}]}', 4) == \
        [3.0, 0.0, 0.0, 0.0]
    assert S.parse_json_activations('{"activations": []}', 2) is None and S.parse_json_activations("[1,", 1) is None
    assert S.correlation([0, 1, 2], [1, 1, 1]) is None and S.correlation([0, 1, 2], [0, 2, 4]) == pytest.approx(1)
    u = unit(4)
    u["test"][1]["acts"] = [0, 0.5, 0]
    msgs = S.logprob_messages(" a cat ", ["the", " cat"])
    assert msgs[-1] == {"role": "assistant", "content": "\nActivations: \n<start>\nthe\tunknown\n cat\tunknown\n<end>\n"}
    assert msgs[-2]["content"].endswith("behavior: the main thing this neuron does is find a cat")
    right = S.simulate(RuleChat(), "'cat'", u, mode="json")
    assert right["correlation"] == pytest.approx(S.correlation(
        [v for w in right["windows"] for v in w["true"]], [10 * (t == " cat") for c in u["test"] + u["random_negatives"]
                                                           for t in c["tokens"]]))
    assert right["windows"][1]["true"] == [0, 5, 0] and right["windows"][0]["correlation"] == pytest.approx(1)
    assert len(right["correlation_by_quantile"]) == 4 and right["malformed"] == 0 and right["prompts"] == 8
    wrong = S.simulate(RuleChat(), "'dog'", u, mode="json")
    assert wrong["correlation"] < 0 < right["correlation"]
    assert S.simulate(RuleChat(garbage=[1, 2]), "'cat'", u, mode="json")["malformed"] == 2
    with pytest.raises(ValueError, match="mode='json'"):
        S.simulate(RuleChat(), "'cat'", u, mode="logprobs")
    with pytest.raises(ValueError, match="simulation mode"):
        S.simulate(RuleChat(), "'cat'", u, mode="both")


def test_prompt_logprobs_read_what_hf_computes(tiny_chat, tmp_path):
    """A local model's prompt log-probabilities after each tab of the last message equal a plain HF forward
    pass over the whole prompt (the shared prefix's cache reused), and are kept in the reply cache."""
    from mechscope.explain import simulation as S

    chat = LocalChat(tiny_chat)
    convs = [S.logprob_messages("cats", ["a", " b", " c"]), S.logprob_messages("cats", ["x", " yz"])]
    replies = chat.prompt_logprobs(convs, after="\t", top=5)
    assert [len(r.logprobs) for r in replies] == [3, 2]
    tab = tiny_chat.tokenizer.encode("\t", add_special_tokens=False)[0]
    for c, r in zip(convs, replies):
        ids = chat.ids(c)
        with torch.no_grad():
            logp = torch.log_softmax(tiny_chat.hf(torch.tensor([ids])).logits[0].float(), -1)
        at = [i for i in range(len(ids) - 1) if ids[i] == tab][-len(r.logprobs):]
        for i, step in zip(at, r.logprobs):  # each listed token's log-probability is HF's, and among its top 5
            vals = logp[i].topk(6).values  # (up to float ties: the 5th and 6th may swap on another CPU)
            ids = [t[2] for t in step["top"]]
            assert len(set(ids)) == 5 and [t[1] for t in step["top"]] == pytest.approx(logp[i, ids].tolist(), abs=1e-4)
            assert [t[1] for t in step["top"]] == pytest.approx(vals[:5].tolist(), abs=1e-4)
            assert step["top"][0][0] == tiny_chat.tokenizer.decode([ids[0]])
    cached = CachedChat(LocalChat(tiny_chat), tmp_path / "c.sqlite")
    first = cached.prompt_logprobs(convs, after="\t", top=5)
    again = cached.prompt_logprobs(convs, after="\t", top=5)
    assert cached.usage.cache_hits == 2 and [r.logprobs for r in again] == [r.logprobs for r in first]
    sim = S.simulate(chat, "cats", unit(3))
    assert sim["mode"] == "logprobs" and sim["malformed"] == 0 and len(sim["windows"]) == 6
    with pytest.raises(ValueError, match="mode='json'"):
        S.simulate(CachedChat(OpenAIChat("http://127.0.0.1:9/v1", "m"), tmp_path / "d.sqlite"), "cats", unit(3))


# -- supernodes -----------------------------------------------------------------------------------------

def test_supernode_clustering_and_agreement():
    """TF-IDF text similarity as scikit-learn computes it; average-linkage clustering that honours its
    threshold and forbidden pairs; pairwise agreement counted by hand."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    from mechscope.tracing.supernodes import cluster, pair_agreement, text_similarity

    texts = ["French words: France, French", "the word France", "capital cities, Paris", "Paris and Lyon", ""]
    ours = text_similarity(texts)
    X = TfidfVectorizer(token_pattern=r"[a-z0-9]+").fit_transform(texts)
    assert torch.allclose(ours[:4, :4], torch.tensor(cosine_similarity(X))[:4, :4], atol=1e-12)
    assert float(ours[4].abs().sum()) == 0.0  # an empty text is similar to nothing
    S = torch.tensor([[1, .9, .1, .1], [.9, 1, .2, .1], [.1, .2, 1, .8], [.1, .1, .8, 1.]])
    assert cluster(S, 0.5) == [[0, 1], [2, 3]]
    assert cluster(S, 0.85) == [[0, 1], [2], [3]]
    assert cluster(S, 0.0) == [[0, 1, 2, 3]]  # average linkage: (0.1+0.2+0.1+0.1)/4 = 0.125 > 0
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[0, 1] = allowed[1, 0] = False
    assert cluster(S, 0.5, allowed) == [[2, 3], [0], [1]]
    reference = {"a": ["x", "y", "z"], "b": ["u", "v"]}
    got = pair_agreement([["p", "x", "y", "u"], ["q", "v", "w"]], reference)
    # reference pairs: xy xz yz uv (4); proposed over the reference's nodes: xy xu yu (3); shared: xy
    assert (got["reference_pairs"], got["proposed_pairs"], got["shared_pairs"]) == (4, 3, 1)
    assert got["precision"] == pytest.approx(1 / 3) and got["recall"] == pytest.approx(1 / 4)
    assert pair_agreement(reference, reference)["f1"] == 1.0


def test_supernodes_proposed_on_the_capital_specimen():
    """On the stored capital graph: groups hold one position each and are named by words, layers and token;
    edge profiles alone group across positions; the agreement with the hand-named supernodes is measured
    over the nodes the graph keeps."""
    import json
    from pathlib import Path

    from mechscope.tracing.supernodes import edge_profile_supernodes, pair_agreement, propose_supernodes
    from mechscope.tracing.neuronpedia import from_neuronpedia

    docs = Path(__file__).resolve().parents[1] / "docs" / "specimens"
    doc = json.loads((docs / "smollm2-capital-of-france.json").read_text())
    hand = json.loads((docs / "smollm2-capital-of-france.supernodes.json").read_text())
    graph = from_neuronpedia(doc)
    texts = {n["node_id"]: n.get("clerp", "") for n in doc["nodes"]}
    groups = propose_supernodes(graph, texts, threshold=0.3)
    position = {i: i.split("_")[-1] for i in graph.node_ids()[:graph.n_features]}
    assert groups and all(len({position[m] for m in g[1:]}) == 1 for g in groups)
    assert all(len(g) >= 3 and " at " in g[0] and g[0].count("(L") == 1 for g in groups)
    assert len({g[0] for g in groups}) == len(groups)
    france = next(g for g in groups if "0_1441_4" in g)
    assert "france" in france[0] or "french" in france[0]
    baseline = edge_profile_supernodes(graph, threshold=0.3)
    assert any(len({position[m] for m in g[1:]}) > 1 for g in baseline)
    a = pair_agreement(groups, hand)
    assert a["n_nodes"] == sum(len(v) for v in hand.values()) and 0 < a["shared_pairs"] <= a["reference_pairs"]
    with pytest.raises(ValueError, match="nothing to compare"):
        propose_supernodes(graph, None, use_edges=False)
