"""Data-parallel SAE training and harvesting under torch.distributed: two gloo processes on CPU
give the same dictionary as one process on the same data and seed, and the same store.

Tolerance: 1e-4 on the weights after 30 Adam steps. Each rank sums its half of the batch and the
gradients are all-reduced, so the two runs differ only in float32 summation order (~1e-7 per
step), which Adam's normalisation can amplify a little; a TopK selection flip would show as O(0.1)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mechscope.models.tiny import tiny
from mechscope.sae import ActivationStore, SAEConfig, SparseCoder, harvest, load_sae, planted

ARCHS = {"topk": {"k": 4}, "relu": {}}
SITE = "blocks.1.resid_post"


def _tokens(model):
    return torch.randint(3, model.cfg.vocab, (8, 12), generator=torch.Generator().manual_seed(0))


def _fit(arch, x, checkpoint=None):
    sae = SparseCoder(SAEConfig(arch, 32, 128, **ARCHS[arch]), seed=0)
    return sae.fit(x, batch_size=512, steps=30, progress=False, checkpoint=checkpoint)


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        x, _ = planted(128, 32, 0.03, 8192, seed=0)
        for arch in ARCHS:
            sae = _fit(arch, x, checkpoint=os.path.join(out, arch))
            if rank == 0:
                torch.save({"state": sae.state_dict(), "log": sae.log_.values}, os.path.join(out, f"{arch}.pt"))
        model = tiny("llama")
        harvest(model, SITE, os.path.join(out, "store"), tokens=_tokens(model), batch_size=2, progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x, _ = planted(128, 32, 0.03, 8192, seed=0)
    for arch in ARCHS:
        sae = _fit(arch, x)
        single = sae.state_dict()
        saved = torch.load(tmp_path / f"{arch}.pt")
        both = saved["state"]
        # the logged loss, FVU and L0 are global sums over the batch: a rank that saw more than its
        # half (or a sum counted twice) would show here even where Adam hides a gradient's scale
        assert torch.allclose(saved["log"][:, 2:5], sae.log_.values[:, 2:5], rtol=1e-4)
        for name, p in single.items():
            assert torch.allclose(both[name], p, atol=1e-4), f"{arch} {name}: {float((both[name] - p).abs().max())}"
        assert torch.allclose(load_sae(tmp_path / arch).W_dec, single["W_dec"], atol=1e-4)  # one checkpoint, rank 0's
    model = tiny("llama")
    tokens = _tokens(model)
    merged = ActivationStore(tmp_path / "store")
    assert merged.manifest["ranks"] == 2 and len(merged.manifest["shards"]) >= 2
    one = harvest(model, SITE, tmp_path / "one", tokens=tokens, batch_size=2, progress=False).tensor()
    assert torch.allclose(merged.tensor(), one, atol=1e-6)  # rank 0's blocks 0-3, then rank 1's 4-7: one process's order


def test_torchrun_cli_training_equals_one_process(tmp_path):
    """The documented command, `torchrun --nproc_per_node 2 -m mechscope sae train ...` (gloo on CPU),
    gives the dictionary one process gives."""
    import subprocess
    import sys

    from mechscope.cli import main

    model = tiny("llama")
    harvest(model, SITE, tmp_path / "store", tokens=torch.randint(3, model.cfg.vocab, (40, 16),
                                                                  generator=torch.Generator().manual_seed(0)),
            progress=False)
    args = ["sae", "train", str(tmp_path / "store"), "--arch", "topk", "--k", "4", "--width", "64",
            "--batch-size", "100", "--steps", "12", "--quiet"]
    assert main(args + ["--dir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mechscope",
                          *args, "--dir", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    one, two = load_sae(tmp_path / "one"), load_sae(tmp_path / "two")
    for (name, p), q in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-4), name
