"""Loading local HF directories and wrapping built models."""

import torch

import mechscope as ms
from mechscope.models.tiny import tiny_hf


import pytest


@pytest.mark.parametrize("family", ["qwen2", "gemma2", "gemma3"])
def test_load_a_local_hf_directory(tmp_path, family):
    hf, tok = tiny_hf(family, seed=4)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = ms.load(tmp_path)
    assert model.cfg.family == hf.config.model_type and model.name == str(tmp_path)
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
