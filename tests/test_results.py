"""Results summarise, draw, serialise and carry provenance; the ablation scan is batched and exact."""

import json

import pytest
import torch

import mechscope as ms
from mechscope.components.patching import AblationScan, ablation_scan
from mechscope.results import NextTokens, ResultFormatError, load_result


def test_next_tokens_round_trip(llama, tmp_path):
    prompts = ["The cat", "Paris is in"]
    result = NextTokens.of(llama.run(prompts), prompts, k=3)
    assert result.provenance.fingerprint == llama.fingerprint
    assert result.provenance.params == {"k": 3} and result.provenance.version == ms.__version__
    assert "'The cat' ->" in result.summary()
    back = load_result(result.save(tmp_path / "nt"))
    assert isinstance(back, NextTokens) and back.tokens == result.tokens
    assert torch.equal(back.probs, result.probs) and back.provenance == result.provenance
    assert "<img" in result.html() and "Next-token predictions" in result.html()


def page_of(cell: str) -> str:
    """The page a notebook output's script puts in its frame: the head and tail strings around the fallback."""
    import json
    import re

    fallback = cell.split('<div class="mechscope-fallback">', 1)[1].rsplit('</div><iframe', 1)[0]
    head, tail = re.search(r'frame\.srcdoc = ("(?:[^"\\]|\\.)*") \+ fallback\.innerHTML \+ ("(?:[^"\\]|\\.)*");', cell).groups()
    return json.loads(head) + fallback + json.loads(tail)


def test_a_result_displays_itself_in_a_notebook(llama):
    """``_repr_mimebundle_``: the summary as plain text; as HTML the page fragment (escaped as pages are, no
    script of its own), once: a script builds the frame's standalone page from the page's head and tail around it."""
    import re

    from markupsafe import Markup

    from mechscope.report.page import page

    prompts = ["<b>The</b> cat", "Paris is in"]
    result = NextTokens.of(llama.run(prompts), prompts, k=3)
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"} and bundle["text/plain"] == result.summary()
    out = bundle["text/html"]
    fallback = out.split('<div class="mechscope-fallback">', 1)[1].split("<iframe", 1)[0]
    assert "&lt;b&gt;The&lt;/b&gt;" in fallback and "<b>" not in fallback and "<script" not in fallback
    assert "<img" in fallback  # the static figure
    doc = page_of(out)
    assert doc.startswith("<!doctype html>") and "Content-Security-Policy" in doc and "&lt;b&gt;The" in doc
    assert out.count("<script>") == 1 and 'sandbox="allow-scripts"' in out and "srcdoc=" not in out
    assert out.count("&lt;b&gt;The&lt;/b&gt;") == 1  # the fragment is stored once
    assert doc == page(result.title, Markup(result.html()))  # the standalone page, to the byte
    ids = re.findall(r'id="(mechscope-[0-9a-f]+)"', out)
    assert len(ids) == 1 and ids[0] != re.findall(r'id="(mechscope-[0-9a-f]+)"', result._repr_mimebundle_()["text/html"])[0]


def test_saving_over_a_result_replaces_it_whole(llama, tmp_path):
    first = NextTokens.of(llama.run(["The cat"]), ["The cat"], k=2)
    second = NextTokens.of(llama.run(["Paris"]), ["Paris"], k=4)
    first.save(tmp_path / "r")
    second.save(tmp_path / "r")
    assert load_result(tmp_path / "r").prompts == ["Paris"]
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary leftovers


def test_bad_saved_results_are_refused(llama, tmp_path):
    d = NextTokens.of(llama.run(["The cat"]), ["The cat"]).save(tmp_path / "r")
    data = json.loads((d / "result.json").read_text())
    (d / "result.json").write_text(json.dumps({**data, "type": "Nope"}))
    with pytest.raises(ResultFormatError, match="unknown result type 'Nope'"):
        load_result(d)
    (d / "result.json").write_text("{not json")
    with pytest.raises(ResultFormatError, match="not valid JSON"):
        load_result(d)
    with pytest.raises(ResultFormatError, match="no result.json"):
        load_result(tmp_path / "missing")


def test_every_result_declares_the_type_of_every_field():
    """The schemas that check saved results come from the dataclasses' type hints: a bare ``list``
    or ``dict`` would let anything through, so each field names its element types (free-form
    details are ``dict[str, Any]``)."""
    import dataclasses
    import typing

    from mechscope.results import result_schema, result_types

    for name, cls in result_types().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            assert hint not in (list, dict, tuple, typing.Any), f"{name}.{f.name}: {hint}"
            assert typing.get_args(hint) or not typing.get_origin(hint), f"{name}.{f.name}: {hint}"
        schema = result_schema(cls)
        assert set(schema["required"]) == {"type", "format", *(f.name for f in dataclasses.fields(cls))}, name


def test_saved_results_are_checked_field_by_field(llama, tmp_path):
    d = NextTokens.of(llama.run(["The cat"]), ["The cat"]).save(tmp_path / "r")
    data = json.loads((d / "result.json").read_text())
    for bad, match in [({"prompts": "The cat"}, r"NextTokens.prompts: input should be a valid array, got 'The cat'"),
                       ({"tokens": [["a", 1]]}, r"NextTokens.tokens.0.1: input should be a valid string, got 1"),
                       ({"probs": [0.5]}, r"NextTokens.probs: input should be an object, got \[0.5\]"),
                       ({"extra": 1}, r"NextTokens.extra: extra inputs are not permitted"),
                       ({"provenance": {**data["provenance"], "seed": "1"}},
                        r"NextTokens.provenance.seed: input should be a valid integer, got '1'")]:
        (d / "result.json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(ResultFormatError, match=match):
            load_result(d)


def test_ablation_scan_is_batched_and_matches_single_runs(llama, tmp_path):
    prompt, target = "When Mary and John went to the store", " the"
    scan = ablation_scan(llama, prompt, target, components="heads", batch_size=5, progress=False)
    assert scan.effect.shape == (3, 4)
    tid = llama.tokenizer(target, add_special_tokens=False)["input_ids"][0]
    clean = llama.run(prompt).logits[0, -1].log_softmax(-1)[tid]
    for layer, head in [(0, 0), (2, 3)]:
        alone = llama.run(prompt, interventions=[ms.Ablate(f"blocks.{layer}.attn.z", heads=[head])])
        expected = alone.logits[0, -1].log_softmax(-1)[tid] - clean
        assert float(scan.effect[layer, head]) == pytest.approx(float(expected), abs=1e-4)
    layers = ablation_scan(llama, prompt, target, components="layers", how="mean", progress=False)
    assert layers.effect.shape == (2, 3)
    assert "Largest drops" in layers.summary() and layers.top(2)[0][0][:3] in ("att", "mlp")
    back = load_result(scan.save(tmp_path / "scan"))
    assert isinstance(back, AblationScan) and torch.equal(back.effect, scan.effect)
    assert "<img" in layers.html()
    with pytest.raises(ValueError, match="single-token target"):
        ablation_scan(llama, prompt, " Mary and John", progress=False)


def test_every_result_round_trips_through_one_json_document(llama):
    """``to_json`` inlines the tensors (dtype, shape, values): every result type reads back bit for bit,
    and a document of another type or with a bad tensor is refused by name."""
    from samples import same_result, sample_results

    from mechscope.results import Result

    for result in sample_results(llama):
        text = result.to_json()
        back = Result.from_json(text)
        assert type(back) is type(result) and same_result(back, result), type(result).__name__
        assert type(result).from_json(text) is not None
    other = next(r for r in sample_results(llama) if not isinstance(r, NextTokens))
    with pytest.raises(ResultFormatError, match=f"a '{type(other).__name__}' JSON document, expected 'NextTokens'"):
        NextTokens.from_json(other.to_json())
    with pytest.raises(ResultFormatError, match="not a result JSON document"):
        Result.from_json("[1, 2]")
    nt = json.loads(NextTokens.of(llama.run(["The cat"]), ["The cat"], k=2).to_json())
    nt["__tensors__"]["probs"]["shape"] = [7, 7]
    with pytest.raises(ResultFormatError, match="__tensors__.probs: shape"):
        Result.from_json(json.dumps(nt))
    nt["__tensors__"]["probs"]["dtype"] = "complex64"
    with pytest.raises(ResultFormatError, match="__tensors__.probs: expected {dtype: one of float64"):
        Result.from_json(json.dumps(nt))


def _leaves(value, path=()):
    """Paths of the JSON data's numbers (floats, or ints where `ints`), first three items of each list."""
    if isinstance(value, dict) and "__tensor__" not in value:
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from _leaves(v, path + (i,))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path


def _set(data, path, value):
    for k in path[:-1]:
        data = data[k]
    data[path[-1]] = value


def test_non_finite_numbers_in_any_float_field_are_rendered(llama):
    """The decision, for every float field of every result type: NaN (undefined — a faithfulness with
    M(model) = M(∅)) and ±inf (unbounded) are meaningful values, so they are stored and drawn, never a
    500. A result with every float non-finite draws its figure; each float alone set to NaN, inf or −inf
    gives a summary, a page fragment and its JSON (which spells them out: JSON has no NaN)."""
    import itertools

    from samples import sample_results

    from mechscope.jsontext import loads
    from mechscope.results import check_result_data

    values = itertools.cycle([float("nan"), float("inf"), -float("inf")])
    for result in sample_results(llama):
        cls = type(result)
        data, tensors = result.to_dict()
        floats = [p for p in _leaves(data) if isinstance(_get(data, p), float)]
        everything = json.loads(json.dumps(data))
        for path in floats:
            _set(everything, path, float("nan"))
        for mutated in [everything] + [_mutated(data, path, next(values)) for path in floats]:
            check_result_data(cls, mutated)  # accepted: so it must render
            back = cls.from_dict(mutated, tensors)
            back.summary()
            assert loads(back.to_json()) is not None
            back.html(draw=mutated is everything)


def _get(data, path):
    for k in path:
        data = data[k]
    return data


def _mutated(data, path, value):
    out = json.loads(json.dumps(data))
    _set(out, path, value)
    return out


def test_a_field_that_sizes_an_allocation_must_agree_with_the_tensors(llama):
    """An import whose EdgeScores claimed 10⁹ layers made drawing it allocate without bound (the probe's
    std::bad_alloc); a shape that does not describe the scores is refused when the result is read back."""
    import time

    from samples import sample_results

    from mechscope.circuits.discovery import EdgeScores
    from mechscope.results import Result

    scores = next(r for r in sample_results(llama) if isinstance(r, EdgeScores))
    data, tensors = scores.to_dict()
    for shape in ([10**9, 4, 2, True, False], [2**62, 2**62, 1, True, False], [3, 4, 0, True, False],
                  [2, 4, 2, True, False]):
        t0 = time.perf_counter()
        with pytest.raises(ResultFormatError, match="EdgeScores.graph_shape"):
            Result.from_dict({**data, "graph_shape": shape}, tensors)
        assert time.perf_counter() - t0 < 1.0
    assert Result.from_dict(data, tensors).graph().shape == scores.graph().shape


def test_dictionaries_and_specimens_display_themselves_in_a_notebook(llama, tmp_path):
    """A model and a dictionary show their fields as a table; a specimen its report, framed like a result."""
    import mechscope.archive
    from mechscope.sae import SAEConfig, SparseCoder

    shown = llama._repr_mimebundle_()
    assert shown["text/plain"] == repr(llama) and f"<td>{llama.fingerprint}</td>" in shown["text/html"]
    assert f"{sum(p.numel() for p in llama.hf.parameters()):,}" in shown["text/html"]
    run = llama.run(["<b>The</b> cat"], cache=["blocks.0.resid_post"])
    shown = run._repr_mimebundle_()
    assert shown["text/plain"] == repr(run) and "&lt;b&gt;The&lt;/b&gt; cat" in shown["text/html"]
    assert f"<th>cache blocks.0.resid_post</th><td>{tuple(run.cache['blocks.0.resid_post'].shape)}" in shown["text/html"]
    assert "blocks.0.resid_post" in run.cache._repr_mimebundle_()["text/html"]
    sae = SparseCoder(SAEConfig("topk", llama.cfg.d_model, 32, k=4, site="blocks.0.resid_post"))
    bundle = sae._repr_mimebundle_()
    assert bundle["text/plain"] == f"topk dictionary, {llama.cfg.d_model} → 32 at blocks.0.resid_post"
    assert "<th>k</th><td>4</td>" in bundle["text/html"] and "<script" not in bundle["text/html"]
    from mechscope.sae.transcoder_sets import TranscoderSet

    tset = TranscoderSet([sae, sae], "mlp.in", "mlp.out", model="tiny")
    assert tset._repr_mimebundle_()["text/plain"] == "2 transcoders mlp.in → mlp.out of tiny"
    assert f"<th>layer 1</th><td>topk {llama.cfg.d_model} → 32</td>" in tset._repr_mimebundle_()["text/html"]
    archive = mechscope.archive.open(tmp_path / "archive")
    spec = archive.create("<i>probe</i>", model=llama, task="next tokens")
    prompts = ["The cat", "Paris is in"]
    spec.add(NextTokens.of(llama.run(prompts), prompts, k=3))
    out = spec._repr_mimebundle_()
    assert out["text/plain"] == repr(spec)
    fallback = out["text/html"].split('<div class="mechscope-fallback">', 1)[1].split("<iframe", 1)[0]
    assert "&lt;i&gt;probe&lt;/i&gt;" in fallback and "Next-token predictions" in fallback and "<script" not in fallback
    doc = page_of(out["text/html"])
    assert doc.startswith("<!doctype html>") and "Next-token predictions" in doc


def test_an_archive_and_a_cross_layer_transcoder_display_themselves_in_a_notebook(llama, tmp_path):
    """An archive lists its specimens (newest first, escaped); a cross-layer transcoder its layers' sites."""
    import torch

    import mechscope.archive
    from mechscope.sae.transcoder_sets import CrossLayerTranscoder

    archive = mechscope.archive.open(tmp_path / "archive")
    assert archive._repr_mimebundle_()["text/plain"].endswith(": 0 specimen(s)")
    archive.create("<b>first</b>", model=llama, task="ioi", tags=["heads"])
    archive.create("second", model=llama)
    shown = archive._repr_mimebundle_()
    assert shown["text/plain"].endswith(": 2 specimen(s)")
    html = shown["text/html"]
    assert html.index("second") < html.index("&lt;b&gt;first&lt;/b&gt;") and "<b>first" not in html
    assert "<td>ioi</td><td>v1</td><td>heads</td>" in html and "<script" not in html
    L, d = llama.cfg.n_layers, llama.cfg.d_model
    clt = CrossLayerTranscoder(torch.zeros(L, 8, d), torch.zeros(L, 8), [torch.zeros(8, L - i, d) for i in range(L)],
                               torch.zeros(L, d), None, [f"blocks.{i}.ln2.out" for i in range(L)],
                               [f"blocks.{i}.mlp.out" for i in range(L)], model="tiny")
    shown = clt._repr_mimebundle_()
    assert shown["text/plain"] == f"ReLU cross-layer transcoder: {L} layers × 8 features, {d} → {d} of tiny"
    assert (f"<th>layer 0</th><td>reads blocks.0.ln2.out; writes blocks.0.mlp.out … blocks.{L - 1}.mlp.out</td>"
            in shown["text/html"])
