"""The activation store: exact round trip, resuming an interrupted harvest gives the same store,
shuffled streaming covers every row once, clear errors."""

import json

import pytest
import torch

from conftest import assert_no_hooks
from mechscope.models.tiny import tiny
from mechscope.sae import ActivationStore, StoreError, harvest

SITE = "blocks.1.resid_post"


def _tokens(model, n=12, length=10):
    return torch.randint(3, model.cfg.vocab, (n, length), generator=torch.Generator().manual_seed(0))


def test_round_trip_is_exact(tmp_path):
    model = tiny("llama")
    tokens = _tokens(model)
    store = harvest(model, SITE, tmp_path / "s", tokens=tokens, shard_tokens=25, batch_size=2, progress=False)
    full = model.run(tokens, cache=SITE).cache[SITE]
    ref = full[:, 1:].reshape(-1, model.cfg.d_model)  # the first position of each block (the sink) is dropped
    assert len(store) == 108 and store.d == model.cfg.d_model and len(store.manifest["shards"]) == 3  # whole batches of 18 rows, ≥ 25 per shard
    assert torch.equal(store.tensor(), ref.float())
    rows = torch.cat(list(store.batches(16, seed=3)))  # shuffled across shards, every row once
    assert rows.shape == ref.shape and not torch.equal(rows, ref)
    assert torch.equal(rows[torch.argsort(rows[:, 0])], ref[torch.argsort(ref[:, 0])])
    assert [len(b) for b in store.batches(16, shuffle=False, drop_last=True)] == [16] * 6
    assert "108 tokens" in repr(store)
    assert_no_hooks(model)  # the forward stopped early at the site, and cleaned up after itself
    every = harvest(model, SITE, tmp_path / "all", tokens=tokens, drop_first=False, progress=False)
    assert torch.equal(every.tensor(), full.reshape(-1, model.cfg.d_model).float())


def test_an_interrupted_harvest_resumes_to_the_same_store(tmp_path):
    model = tiny("llama")
    tokens = _tokens(model)
    full = harvest(model, SITE, tmp_path / "full", tokens=tokens, shard_tokens=25, batch_size=2, progress=False)
    part = harvest(model, SITE, tmp_path / "part", tokens=tokens, shard_tokens=25, batch_size=2, progress=False,
                   _stop_after_shards=2)
    assert not part.manifest["complete"] and len(part.manifest["shards"]) == 2
    with pytest.raises(StoreError, match="stopped after 8 of 12 blocks; run harvest again"):
        ActivationStore(tmp_path / "part")
    (tmp_path / "part" / "shard_00002.safetensors").write_bytes(b"half a shard")  # a crash mid-write: unlisted
    resumed = harvest(model, SITE, tmp_path / "part", tokens=tokens, shard_tokens=25, batch_size=2, progress=False)
    assert resumed.manifest == {**full.manifest}
    for i in range(len(full.manifest["shards"])):
        assert torch.equal(resumed.shard(i), full.shard(i))


def test_several_sites_come_from_one_forward_and_resume_together(tmp_path):
    """A transcoder's input and target: one forward per batch (stopped at the later site) fills a
    store per site, equal to harvesting each alone. A crash can leave one store a shard ahead; the
    resumed harvest (here with another batch size) fills each from where it stopped."""
    model = tiny("llama")
    tokens = _tokens(model)
    mid, out = "blocks.0.resid_mid", "blocks.1.mlp.out"
    alone = [harvest(model, s, tmp_path / f"alone{i}", tokens=tokens, progress=False).tensor() for i, s in enumerate((mid, out))]
    calls = []
    last = model.hf.get_submodule(f"{model.adapter.blocks}.1")
    handle = last.register_forward_pre_hook(lambda *_: calls.append(1))
    both = harvest(model, [mid, out], [tmp_path / "a", tmp_path / "b"], tokens=tokens, batch_size=4, progress=False)
    handle.remove()
    assert len(calls) == 3 and [s.site for s in both] == [mid, out]  # 12 blocks / 4: one forward per batch
    assert all(torch.equal(s.tensor(), ref) for s, ref in zip(both, alone))

    ahead = harvest(model, out, tmp_path / "d", tokens=tokens, shard_tokens=25, batch_size=2, progress=False,
                    _stop_after_shards=2)  # the target store holds 8 blocks, the input store none
    assert ahead.manifest["blocks_done"] == 8
    resumed = harvest(model, [mid, out], [tmp_path / "c", tmp_path / "d"], tokens=tokens, shard_tokens=25, batch_size=3,
                      progress=False)
    assert all(torch.equal(s.tensor(), ref) for s, ref in zip(resumed, alone))
    with pytest.raises(ValueError, match="2 sites need as many directories"):
        harvest(model, [mid, out], tmp_path / "e", tokens=tokens, progress=False)
    assert_no_hooks(model)


def test_store_errors(tmp_path):
    model = tiny("llama")
    tokens = _tokens(model, n=4)
    harvest(model, SITE, tmp_path / "s", tokens=tokens, progress=False)
    with pytest.raises(StoreError, match="different site"):
        harvest(model, "blocks.0.resid_post", tmp_path / "s", tokens=tokens, progress=False)
    with pytest.raises(StoreError, match="holds no manifest.json"):
        ActivationStore(tmp_path / "nothing")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "s" / manifest["shards"][0]["file"]).unlink()
    with pytest.raises(StoreError, match="listed shard\\(s\\) missing"):
        ActivationStore(tmp_path / "s")
    with pytest.raises(ValueError, match="tokens must be \\[blocks, context\\]"):
        harvest(model, SITE, tmp_path / "t", tokens=tokens[0], progress=False)
    (tmp_path / "secret.safetensors").write_bytes(b"not yours")
    for outside in ("../secret.safetensors", str(tmp_path / "secret.safetensors"), None):
        manifest["shards"][0]["file"] = outside
        (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(StoreError, match="outside the store"):
            ActivationStore(tmp_path / "s")
