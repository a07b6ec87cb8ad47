"""Sweeps split across processes (``mechscope.distributed``): two and three gloo processes return
what one returns — each rank computes its share of the items and the parts are gathered in order.
Tolerance 1e-6: a rank's forwards carry fewer patched copies than one process's, and a matrix
product over fewer rows may sum in another order on some CPUs (patching agrees bit for bit here);
EAP-IG's per-rank partial sums are added in another order (~1e-7).
One launch per world size runs every analysis."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mechscope.circuits.discovery import eap_ig
from mechscope.distributed import _range, gather, rank_world, share
from mechscope.models.tiny import tiny
from mechscope.patching import activation_patching
from helpers import random_task




def _analyses() -> dict[str, torch.Tensor]:
    """Every analysis that splits its work, on one tiny model and task: name -> result tensor."""
    model = tiny("llama")
    task = random_task(model)
    out = {f"patching {sweep}": activation_patching(model, task, sweep, batch_size=6, progress=False).effect
           for sweep in ("heads", "head_pos", "mlp")}
    out["eap-ig"] = eap_ig(model, task, steps=3, batch_rows=3, progress=False).scores  # one pair per chunk
    return out


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        assert rank_world() == (rank, world)
        parts = gather(torch.arange(len(share(10)))[:, None] + share(10).start, 10)
        results = _analyses()
        if rank == 0:
            torch.save({"parts": parts, **results}, os.path.join(out, f"world{world}.pt"))
    finally:
        dist.destroy_process_group()


def test_shares_cover_the_items_in_order():
    for world in (1, 2, 3, 4):
        for n in (0, 1, 5, 10, 11):
            ranges = [_range(r, world, n) for r in range(world)]
            assert [i for r in ranges for i in r] == list(range(n))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    assert share(7) == range(7) and torch.equal(gather(torch.ones(3), 3), torch.ones(3))  # no group: identities


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("world", [2, 3])
def test_processes_return_what_one_returns(tmp_path, world):
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    got = torch.load(tmp_path / f"world{world}.pt")
    assert torch.equal(got.pop("parts")[:, 0], torch.arange(10))
    torch.set_num_threads(1)
    for name, expected in _analyses().items():
        assert torch.allclose(got[name], expected, rtol=1e-5, atol=1e-6), name


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_nodes_under_torchrun(tmp_path):
    """Two `torchrun --nnodes 2 --node-rank {0,1}` launches (gloo, one process each, both on this
    machine): each joins through `distributed.group`, only rank 0 writes, and the results are one
    process's."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = Path(__file__).with_name("distributed_job.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launches = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                                  "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                                  str(job), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for rank in (0, 1)]
    for p in launches:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["nodes.pt"]  # rank 1 wrote nothing
    got = torch.load(tmp_path / "nodes.pt")
    assert got.pop("world") == 2
    torch.set_num_threads(1)
    for name, expected in _analyses().items():
        assert torch.allclose(got[name], expected, rtol=1e-5, atol=1e-6), name
