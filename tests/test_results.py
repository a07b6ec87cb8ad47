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
