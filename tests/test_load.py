"""Loading local HF directories and wrapping built models."""

import json

import pytest
import torch

import mechscope as ms
from mechscope.cli import main
from mechscope.models.tiny import FAMILIES, tiny_hf


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gpt_neox_sequential"])
def test_load_a_local_hf_directory(tmp_path, family, capsys):
    """The path a user with downloaded weights takes: save_pretrained, then ms.load and `mechscope info`."""
    hf, tok = tiny_hf(family, seed=4)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = ms.load(tmp_path)
    assert model.cfg.family == hf.config.model_type and model.name == str(tmp_path)
    assert main(["info", str(tmp_path), "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == hf.config.model_type and info["fingerprint"] == model.fingerprint
    assert model.fingerprint == ms.Model(hf, tok).fingerprint
    ids, mask = model.tokenize("The cat")
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(model.run("The cat").logits, expected)


def test_wrap_a_built_model():
    hf, tok = tiny_hf("gpt2")
    model = ms.Model(hf, tok, name="mine")
    assert repr(model).startswith("Model('mine', gpt2: 3 layers")
    assert "blocks.2.attn.pattern" in model.sites


def _hub_cache(root, repo_id: str, revisions: dict[str, tuple[str, object, object]]):
    """A Hugging Face cache as the hub client lays it out: models--ORG--NAME/ with blobs/ named by content,
    snapshots/COMMIT/ whose files link to the blobs, and refs/BRANCH holding the commit."""
    import hashlib
    import os

    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    for ref, (commit, hf, tok) in revisions.items():
        staged = root / f"staged-{commit}"
        hf.save_pretrained(staged)
        tok.save_pretrained(staged)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in staged.iterdir():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
        (repo / "refs" / ref).write_text(commit)


def test_hub_ids_load_from_the_hugging_face_cache_offline(tmp_path):
    """A hub id is read from the hub client's cache through transformers (HF_HUB_OFFLINE honoured): the model
    is the cached one, named by its id, a revision picks its snapshot; a missing id says how to get it, and
    download=True under HF_HUB_OFFLINE is refused. Run in a fresh process: the hub client reads its cache
    location and offline flag when imported."""
    import os
    import subprocess
    import sys

    main_hf, tok = tiny_hf("llama", seed=4)
    other_hf, _ = tiny_hf("llama", seed=5)
    _hub_cache(tmp_path / "hub", "mechscope-test/tiny-llama",
               {"main": ("a" * 40, main_hf, tok), "other": ("b" * 40, other_hf, tok)})
    script = """
import json, sys, torch, mechscope as ms
out = {}
m = ms.load("mechscope-test/tiny-llama")
out["name"] = m.name
out["logits"] = m.run("The cat").logits.flatten()[:50].tolist()
out["other"] = ms.load("mechscope-test/tiny-llama", revision="other").run("The cat").logits.flatten()[:50].tolist()
for call in ('ms.load("mechscope-test/absent")', 'ms.load("mechscope-test/tiny-llama", download=True)'):
    try:
        eval(call)
    except ValueError as err:
        out[call] = str(err)
json.dump(out, sys.stdout)
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    env.pop("MECHSCOPE_DOWNLOAD", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    model = ms.Model(main_hf, tok)
    other = ms.Model(other_hf, tok)
    assert out["name"] == "mechscope-test/tiny-llama"
    assert torch.equal(torch.tensor(out["logits"]), model.run("The cat").logits.flatten()[:50])
    assert torch.equal(torch.tensor(out["other"]), other.run("The cat").logits.flatten()[:50])
    missing = out['ms.load("mechscope-test/absent")']
    assert "'mechscope-test/absent'" in missing and "not in the Hugging Face cache" in missing
    assert str(tmp_path / "hub") in missing and "download=True" in missing and "--download" in missing
    assert "HF_HUB_OFFLINE" in out['ms.load("mechscope-test/tiny-llama", download=True)']
    # the CLI reads the same cache
    done = subprocess.run([sys.executable, "-m", "mechscope", "info", "mechscope-test/tiny-llama", "--json", "-"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fingerprint"] == model.fingerprint


def test_what_load_refuses_says_what_would_do():
    with pytest.raises(ValueError, match="not an embedded model.*hub id"):
        ms.load("no such model")
    with pytest.raises(TypeError, match="unknown keyword 'cache'"):
        ms.load("smollm2-135m", cache=True)
