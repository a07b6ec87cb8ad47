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
