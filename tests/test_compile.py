"""Compiled programs: the RASP interpreter, the compiler to HF weights, and the compiled models
agreeing with the interpreter on every input (exhaustive up to each program's max_len)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechscope as ms
from mechscope.compile import (PROGRAMS, Aggregate, Comparison, Map, RASPError, Select, SelectorWidth, SequenceMap,
                               compile_program, evaluate, indices, tokens)
from mechscope.compile.programs import make_frac_prevs, make_paren_depth, make_reverse, make_sort_unique


def test_interpreter_reproduces_the_programs_meaning():
    assert evaluate(make_reverse(), list("abc")) == list("cba")
    assert evaluate(make_sort_unique(), [3, 1, 2]) == [1, 2, 3]
    assert evaluate(make_frac_prevs(), list("xyxx")) == [1.0, 0.5, 2 / 3, 0.75]
    assert evaluate(make_paren_depth(8), list("(()(")) == [1, 2, 1, 2]
    assert evaluate(PROGRAMS["histogram"][0](), list("abca")) == [2, 1, 1, 2]
    shared = Aggregate(Select(tokens, tokens, Comparison.TRUE), tokens, label="all_tokens")
    assert evaluate(shared, list("aa")) == ["a", "a"]
    with pytest.raises(RASPError, match="categorical Aggregate 'all_tokens' selects differing values"):
        evaluate(shared, list("ab"))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_compiled_model_equals_the_program_on_every_input(name):
    make, vocab, max_len, non_causal = PROGRAMS[name]
    compiled = compile_program(make(), vocab, max_len, causal=not non_causal)
    report = compiled.verify()
    assert report["exhaustive"] and report["checked"] == sum(len(vocab) ** n for n in range(1, max_len + 1))
    assert report["n_mismatches"] == 0, report["mismatches"]
    assert compiled.model.cfg.family == "mechscope_compiled"


def test_verify_finds_a_broken_model():
    make, vocab, max_len, _ = PROGRAMS["reverse"]
    compiled = compile_program(make(), vocab, max_len)
    layer, head = compiled.steps["reverse"][1:]
    with torch.no_grad():
        compiled.model.hf.model.layers[layer].self_attn.o_proj.weight.zero_()  # the head that moves the tokens
    report = compiled.verify()
    assert report["n_mismatches"] == report["checked"] > 0 and report["mismatches"][0]["model"][0] is None


def test_steps_are_placed_after_their_inputs_and_heads_attend_as_the_selector_says():
    compiled = compile_program(make_sort_unique(), [1, 2, 3, 4, 5], 5)
    assert compiled.steps["target_pos"] == ("attn", 0, 0) and compiled.steps["target_pos:mlp"][:2] == ("mlp", 0)
    assert compiled.steps["sort"] == ("attn", 1, 0)
    xs = [4, 1, 5, 2]
    run = compiled.model.run([compiled.ids(xs)], cache=["blocks.1.attn.pattern"])
    pattern = run.cache["blocks.1.attn.pattern"][0, 0, 1:, 1:]  # without BOS
    rank = [sorted(xs).index(x) for x in xs]  # key k holds the token with rank[k] smaller ones
    assert pattern.argmax(-1).tolist() == [rank.index(i) for i in range(len(xs))]
    assert float(pattern.max(-1).values.min()) > 0.999


def test_causal_models_see_only_the_past():
    compiled = compile_program(make_paren_depth(8), ["(", ")"], 8, causal=True)
    full = compiled(list("(()(()"))
    assert [compiled(list("(()(()")[:n])[-1] for n in range(1, 7)] == full
    with pytest.raises(RASPError, match="Select 'all' picks later positions .* compile with causal=False"):
        compile_program(make_reverse(), ["a", "b"], 4, causal=True)  # its length reads every position


def test_the_compiler_refuses_what_it_cannot_compile():
    numeric = Map(lambda t: 1.0 if t == "a" else 0.0, tokens, numerical=True, label="num")
    with pytest.raises(RASPError, match="Select 'by_number': 'num' is numerical"):
        compile_program(SelectorWidth(Select(numeric, tokens, Comparison.EQ, label="by_number")), ["a", "b"], 3)
    twos = Map(lambda t: 2 if t == "a" else 0, tokens, numerical=True, label="twos")
    with pytest.raises(RASPError, match="Aggregate 'mean2': a numerical Aggregate averages 0/1 values only"):
        compile_program(Aggregate(Select(indices, indices, Comparison.LEQ), twos, numerical=True, label="mean2"),
                        ["a", "b"], 3)
    with pytest.raises(RASPError, match="Aggregate 'mixed': a categorical Aggregate of the numerical 'twos'"):
        compile_program(Aggregate(Select(indices, indices, Comparison.LEQ), twos, label="mixed"), ["a", "b"], 3)
    with pytest.raises(RASPError, match="fails on one of its input values"):
        compile_program(Map(lambda t: 1 / 0, tokens, label="boom"), ["a"], 2)
    twice = SequenceMap(lambda a, b: a, Map(lambda t: t, tokens, label="x"), Map(lambda t: t, tokens, label="x"))
    with pytest.raises(RASPError, match=r"labels \['x'\] name several steps"):
        compile_program(twice, ["a"], 2)
    with pytest.raises(RASPError, match="without spaces"):
        compile_program(make_reverse(), ["a b", "c"], 3)
    compiled = compile_program(make_reverse(), ["a", "b"], 3)
    with pytest.raises(ValueError, match=r"tokens \['z'\] are not in the program's vocabulary"):
        compiled(["a", "z"])
    with pytest.raises(ValueError, match="compiled for at most 3"):
        compiled(["a"] * 4)


def test_compiled_model_round_trips_and_runs_through_mechscope(tmp_path):
    compiled = compile_program(make_frac_prevs(), ["x", "y"], 6, causal=True)
    model = compiled.model
    model.hf.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    back = ms.load(str(tmp_path))
    ids = [compiled.ids(list("xyxxy")), compiled.ids(list("yx"))]  # a left-padded batch
    assert torch.equal(back.run(ids).logits, model.run(ids).logits)
    assert back.tokenizer("x y x")["input_ids"] == compiled.ids(list("xyx"))
    assert compiled([list("xyxxy"), list("yx")]) == [pytest.approx([1, .5, 2 / 3, .75, .6], abs=1e-4),
                                                     pytest.approx([0, .5], abs=1e-4)]
    # a sequence map of two categorical SOps, with one argument used twice
    double = SequenceMap(lambda a, b: a + b, indices, indices, label="double")
    assert compile_program(double, ["a"], 4)(["a"] * 4) == [0, 2, 4, 6]


@pytest.mark.parametrize("name", sorted(set(PROGRAMS) - {"length"}))  # length: one output per input length
@pytest.mark.parametrize("ablation", ["zero", "corrupted"])
def test_the_true_circuit_is_faithful_and_complete(name, ablation):
    """The circuit the compiler records carries the whole behaviour (faithfulness 1) and nothing is
    left outside it (its complement's faithfulness 0), on the all-positions L2 metric."""
    from mechscope.circuits.discovery import evaluate as evaluate_circuit
    from mechscope.compile.task import compiled_task

    make, vocab, max_len, non_causal = PROGRAMS[name]
    compiled = compile_program(make(), vocab, max_len, causal=not non_causal)
    task = compiled_task(compiled, 8)
    truth = compiled.circuit()
    assert truth.nodes[0] == "embed" and truth.nodes[-1] == "logits"
    checked = evaluate_circuit(compiled.model, task, truth, ablation=ablation)
    assert checked.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert checked.extra["complement_faithfulness"] == pytest.approx(0.0, abs=1e-4)
    assert checked.extra["metric_empty"] < -0.5  # the metric does see the behaviour go
    # without the edge into the logits nothing is left
    cut = type(truth)(provenance=truth.provenance, nodes=truth.nodes, edges=[e for e in truth.edges if e[1] != "logits"])
    assert evaluate_circuit(compiled.model, task, cut, ablation=ablation).faithfulness == pytest.approx(0.0, abs=1e-4)


def test_true_circuit_of_reverse_is_the_known_one():
    compiled = compile_program(make_reverse(), ["a", "b", "c"], 5)
    truth = compiled.circuit()
    # length (head a0.h0 + MLP m0), opp_index (m1), the flip head reading opp_index as its query
    assert {("a0.h0", "m0"), ("m0", "m1"), ("m1", "a2.h0.q"), ("embed", "a2.h0.k"), ("embed", "a2.h0.v"),
            ("a2.h0", "logits")} <= {(a, b) for a, b, _ in truth.edges}
    assert truth.nodes == ["embed", "a0.h0", "a2.h0", "m0", "m1", "logits"]
    assert truth.extra["steps"]["flip" if "flip" in truth.extra["steps"] else "reverse"][0] == "attn"


# ------------------------------------------------------------------------------------ tracr itself
TRACR_PYTHON = Path(__file__).resolve().parents[1] / ".venv-tracr" / "bin" / "python"


@pytest.mark.skipif(not TRACR_PYTHON.exists(), reason="tracr's environment (make tracr-env: jax, dm-haiku) is not installed")
def test_outputs_and_sizes_equal_tracrs(tmp_path):
    """tracr compiles its own library programs; ours compile ours. Same outputs on the same inputs
    (where the program is defined: sort's keys distinct, as tracr's make_sort_unique requires), and
    the same layers and heads where the programs are written alike. tracr's reverse takes one layer
    more: it computes length − index − 1 in two MLPs (a SequenceMap, then a Map), ours in one."""
    import json
    import os
    import random
    import subprocess

    rng = random.Random(0)
    request, ours = {}, {}
    for name in ("length", "reverse", "histogram", "sort", "frac_prevs"):
        make, vocab, max_len, _ = PROGRAMS[name]
        inputs = []
        while len(inputs) < 25:
            xs = [rng.choice(vocab) for _ in range(rng.randint(1, max_len))]
            if name != "sort" or len(set(xs)) == len(xs):
                inputs.append(xs)
        request[name] = {"vocab": vocab, "max_len": max_len, "inputs": inputs}
        ours[name] = compile_program(make(), vocab, max_len)
    (tmp_path / "request.json").write_text(json.dumps({"programs": request}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([str(TRACR_PYTHON), str(Path(__file__).parent / "oracles" / "tracr_programs.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = json.loads((tmp_path / "tracr.json").read_text())
    for name, spec in request.items():
        got = ours[name](spec["inputs"])
        want = theirs[name]["outputs"]
        if name == "frac_prevs":
            assert [pytest.approx(w, abs=1e-4) for w in want] == got
        else:
            assert got == want, name
        cfg = ours[name].model.cfg
        layers = theirs[name]["layers"] - (1 if name == "reverse" else 0)
        assert (cfg.n_layers, cfg.n_heads) == (layers, theirs[name]["heads"]), name
        assert cfg.d_mlp <= theirs[name]["mlp_hidden"] and cfg.d_model <= theirs[name]["d_model"], name


@pytest.mark.parametrize("name", ["reverse", "paren_depth", "mirror_match", "sort"])
def test_compiled_mlps_decode_every_input_near_a_code(name):
    """Proved over the whole L∞ box around each code (branch and bound with CROWN), not by trying
    the codes; a radius past the construction's margin is refuted with a counterexample."""
    from mechscope.compile.proofs import prove_mlps

    make, vocab, max_len, non_causal = PROGRAMS[name]
    compiled = compile_program(make(), vocab, max_len, causal=not non_causal)
    proofs = prove_mlps(compiled, 0.1)
    assert proofs and all(v.status == "verified" and v.margin > 0 for v in proofs.values()), \
        [v.summary() for v in proofs.values()]
    mlp_steps = {label for label, place in compiled.steps.items() if place[0] == "mlp"}
    assert set(proofs) == mlp_steps
    wide = prove_mlps(compiled, 0.6, method="crown")
    one_hot = [label for label in wide if not label.endswith(":mlp")]  # step decoders keep a quarter gap
    for label in one_hot:
        assert wide[label].status == "falsified" and wide[label].counterexample is not None, wide[label].summary()
    for label in set(wide) - set(one_hot):
        assert wide[label].status == "verified"


def test_inert_true_edges_are_those_the_inputs_cannot_show():
    """With clean and corrupted inputs of one length, reverse's length path computes the same on
    both: under corrupted ablation only the tokens' path is visible; zeroing still shows most of it."""
    from mechscope.compile.task import compiled_task, inert_edges

    compiled = compile_program(make_reverse(), ["a", "b", "c"], 5)
    task = compiled_task(compiled, 8)
    live = lambda ablation: {(a, b) for a, b, _ in compiled.circuit().edges} - {  # noqa: E731
        (a, b) for a, b, _ in inert_edges(compiled, task, ablation)}
    assert live("corrupted") == {("embed", "a2.h0.v"), ("a2.h0", "logits")}
    assert {("m1", "a2.h0.q"), ("m0", "m1"), ("a2.h0", "logits")} <= live("zero")


def test_attribution_graph_of_a_compiled_model_has_no_error_and_cannot_see_where_heads_look():
    """A compiled MLP's ReLU units are an exact transcoder: no error nodes, scores 1. On reverse the
    graph credits the token read by the flip head directly: with patterns frozen, the features that
    decide *where* it looks (length, opp_index) carry no influence — the QK half of the true circuit
    is invisible to attribution graphs."""
    from mechscope.tracing import attribution_graph

    compiled = compile_program(make_reverse(), ["a", "b", "c"], 5)
    ids = compiled.ids(list("abcab"))
    target = compiled.model.tokenizer.get_vocab()["a"]  # reverse puts the first token last
    g = attribution_graph(compiled.model, compiled.transcoders(), ids, targets=[target], progress=False)
    assert g.extra["max_error"] < 1e-5 and g.scores() == pytest.approx((1.0, 1.0))
    influence = g.influence()
    token = g.node_ids().index(f"E_{target}_1")
    assert int(influence.argmax()) == token and float(influence[:g.n_features].max()) < 1e-3 * float(influence[token])


def test_siit_checks_and_a_short_training_run():
    """The acceptance checks on the compiled model standing in for itself (exactly faithful: its
    nodes outside the circuit are empty) and a short SIIT run whose losses fall; the full runs
    (accepted over seeds) are `python benchmarks/reproduce.py siit`."""
    from mechscope.compile.siit import _checks, node_site, train_siit

    compiled = compile_program(make_reverse(), ["a", "b", "c"], 5)
    assert node_site("a2.h0") == ("blocks.2.attn.z", [0]) and node_site("m1") == ("blocks.1.mlp.out", None)
    inside = ["a0.h0", "a2.h0", "m0", "m1"]
    rows = [compiled.ids(list(x)) for x in ("abc", "cab", "bbca", "a")]
    sources = [compiled.ids(list(x)) for x in ("cca", "abb", "acab", "c")]
    assert _checks(compiled, compiled, inside, ["a1.h0", "m2"], rows, sources) == (1.0, 1.0, 0.0)
    record = train_siit(compiled, steps=150, log_every=10, progress=False)
    stand_in = record.stand_in  # seeds 0-2: each loss to 0.07-0.43 of its start
    assert sorted(record.circuit_nodes) == inside and record.other_nodes == ["a1.h0", "m2"]
    first, last = record.values[0, 1:], record.values[-1, 1:]
    assert bool((last < 0.6 * first).all()), record.values
    assert stand_in.model.cfg.d_model == 64 and not stand_in.exact and len(stand_in(list("abc"))) == 3


def test_mechscope_graph_runs_on_a_compiled_program_from_the_cli(tmp_path, capsys):
    """`mechscope graph compiled:NAME` (or a folder `mechscope compile --dir` wrote) needs no --transcoders: its
    MLPs are exact transcoders, so the graph has no error; another model without --transcoders is refused."""
    import json

    from mechscope.cli import main
    from mechscope.models.tiny import tiny_hf

    assert main(["graph", "compiled:reverse", "a b c a b", "--json", str(tmp_path / "g.json"), "-o",
                 str(tmp_path / "g.html"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "Replacement score 1.000, completeness 1.000" in out, out
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["metadata"]["prompt_tokens"][-5:] == ["a", "b", "c", "a", "b"]
    assert (tmp_path / "g.html").stat().st_size > 1000
    assert main(["compile", "reverse", "--dir", str(tmp_path / "rev"), "--pairs", "4", "-o", str(tmp_path / "c.html")]) == 0
    assert main(["graph", str(tmp_path / "rev"), "c b a", "-o", str(tmp_path / "g2.html"), "-q"]) == 0
    hf, tok = tiny_hf("llama")
    hf.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    capsys.readouterr()
    assert main(["graph", str(tmp_path / "llama"), "a b", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not a compiled program" in err and "--transcoders DIR" in err, err
