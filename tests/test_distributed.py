"""Sweeps split across processes (``mechscope.distributed``): two and three gloo processes return
what one returns, bit for bit — a sweep's chunks are the same whatever the number of ranks (each
rank computes whole chunks) and are gathered and summed in one order. A run whose rank is killed
resumes under ``torchrun --max-restarts`` from its progress records to the same result.
One launch per world size runs every analysis."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mechscope.tracing import attribution_graph
from mechscope.circuits.discovery import acdc, eap_ig
from mechscope.concepts.datasets import ProbeDataset
from mechscope.concepts.probes import probe_sweep
from mechscope.distributed import _range, gather, rank_world, share
from mechscope.models.tiny import tiny
from mechscope.components.neurons import neuron_cards
from mechscope.components.patching import activation_patching
from helpers import random_task
from test_attribution_graph import random_transcoders




def _analyses() -> dict[str, torch.Tensor]:
    """Every analysis that splits its work, on one tiny model and task: name -> result tensor."""
    model = tiny("llama")
    task = random_task(model)
    out = {f"patching {sweep}": activation_patching(model, task, sweep, batch_size=6, progress=False).effect
           for sweep in ("heads", "head_pos", "mlp")}
    out["eap-ig"] = eap_ig(model, task, steps=3, batch_size=3, progress=False).scores  # one pair per chunk
    found = acdc(model, task, threshold=0.02, batch_size=6, progress=False)  # its candidate batches divided
    g_edges = sorted((a, b) for a, b, _ in found.edges)
    out["acdc edges"] = torch.tensor([hash(e) % (1 << 40) for e in g_edges] + [len(g_edges)], dtype=torch.float64)
    out["acdc faithfulness"] = torch.tensor([found.faithfulness])
    coders = random_transcoders(model)  # attribution graphs: every backward batch, then capped rounds
    for cap in (None, 9):
        graph = attribution_graph(model, coders, "The cat sat on the mat", batch_size=4, max_feature_nodes=cap,
                                  update_interval=1, progress=False)
        out[f"graph {cap}"] = torch.cat([graph.edge_index.flatten().double(), graph.edge_weight.double()])
    gen = torch.Generator().manual_seed(1)  # a probe dataset (its forwards, then one probe per site) and neuron cards
    prompts = torch.randint(5, model.cfg.vocab, (24, 5), generator=gen).tolist()
    data = ProbeDataset("parity", prompts, [float(p[-1] % 2) for p in prompts], [str(i // 2) for i in range(24)])
    probes = probe_sweep(model, data, "blocks.*.resid_post", batch_size=5, progress=False)
    out["probes"] = torch.cat([torch.tensor([probes.train_score, probes.test_score, probes.control_score]).flatten(),
                               probes.directions.flatten().double()])
    cards = neuron_cards(model, 1, [0, 3, 7], blocks=torch.randint(5, model.cfg.vocab, (7, 9), generator=gen),
                         batch_size=2, progress=False)
    out["cards"] = torch.cat([cards.hist.flatten().double(), torch.tensor(cards.max_act + cards.density)])
    from mechscope.explain import ExampleConfig, explain_neurons  # units divided among ranks, then gathered
    from helpers import RuleChat

    explained = explain_neurons(model, 1, [0, 3, 7, 9], explainer=RuleChat(), cache=False, progress=False,
                                blocks=torch.randint(5, model.cfg.vocab, (12, 16), generator=gen),
                                config=ExampleConfig(ctx_len=8, n_quantiles=2, n_test=4, n_train=2, n_negatives=4,
                                                     min_windows=2))
    digest = hashlib.sha256(json.dumps(explained.units, sort_keys=True).encode())  # (usage is per rank's client)
    out["explanations"] = torch.tensor([int(digest.hexdigest()[:12], 16)], dtype=torch.float64)
    return out


def _same(got: dict, expected: dict) -> None:
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


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
    _same(got, _analyses())


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
    _same(got, _analyses())


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_a_killed_rank_resumes_from_the_progress_records(tmp_path):
    """torchrun --max-restarts 1 with two ranks keeping progress records (``distributed.records``): rank 1
    dies after writing three chunks; torchrun restarts both, which load every finished chunk rather than
    computing it again, and rank 0 writes the same results one process returns. Every record is whole."""
    import subprocess
    import sys
    from pathlib import Path

    job = Path(__file__).with_name("distributed_job.py")
    records = tmp_path / "records"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--max-restarts", "1", str(job), str(tmp_path), "--records", str(records), "--die-after", "3"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "nodes.pt")
    assert got.pop("world") == 2
    attempts = {f.name: int(f.read_text()) for f in tmp_path.glob("computed-*")}
    assert list(attempts) == ["computed-1"]  # the first attempt never finished: rank 1 died in it
    chunks = sum(1 for _ in records.rglob("*.pt"))
    assert 0 < attempts["computed-1"] <= chunks - 3  # the restart loaded what the first attempt had finished
    assert not list(records.rglob("*.tmp"))  # no half-written record
    torch.set_num_threads(1)
    _same(got, _analyses())


def test_progress_records_are_reused_and_a_bad_one_is_recomputed(tmp_path, recwarn):
    """Inside ``records(dir)`` a sweep writes each finished chunk whole and a rerun loads it: the same
    result, nothing computed again; a record that is not a tensor file is computed again (with a
    warning); another key (another task) is another folder; a sweep without a key is refused."""
    from mechscope import distributed

    calls = []

    def square(items: range) -> torch.Tensor:
        calls.append(items)
        return torch.tensor([float(i * i) for i in items])

    with distributed.records(tmp_path) as root:
        first = distributed.sweep(7, square, key="squares v1", per=3, desc="squares")
        assert len(calls) == 3 and torch.equal(first, torch.arange(7.0) ** 2)
        again = distributed.sweep(7, square, key="squares v1", per=3, desc="squares")
        assert len(calls) == 3 and torch.equal(again, first)
        [folder] = root.iterdir()
        (folder / f"{3:09d}-{6:09d}.pt").write_bytes(b"not a tensor")
        assert torch.equal(distributed.sweep(7, square, key="squares v1", per=3, desc="squares"), first)
        assert calls[-1] == range(3, 6) and len(calls) == 4 and "unreadable" in str(recwarn.pop().message)
        distributed.sweep(7, square, key="squares v2", per=3, desc="squares")
        assert len(list(root.iterdir())) == 2 and len(calls) == 7
        with pytest.raises(ValueError, match="has no key"):
            distributed.sweep(2, square, key="", desc="squares")
    assert not distributed.recording()
    model = tiny("llama")  # an analysis inside records: its second run loads every chunk
    task = random_task(model)
    with distributed.records(tmp_path / "patching"):
        a = activation_patching(model, task, "heads", batch_size=6, progress=False).effect
        stamps = {f: f.stat().st_mtime_ns for f in (tmp_path / "patching").rglob("*.pt")}
        b = activation_patching(model, task, "heads", batch_size=6, progress=False).effect
    assert torch.equal(a, b) and stamps == {f: f.stat().st_mtime_ns for f in (tmp_path / "patching").rglob("*.pt")}


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_cli_commands_under_torchrun_write_once_what_one_process_writes(tmp_path):
    """`torchrun --nproc-per-node 2 -m mechscope --records DIR circuit ...` divides the sweeps, and rank 0
    alone prints, writes the page and JSON and stores the specimen: the circuit one process finds."""
    import json
    import subprocess
    import sys

    from mechscope.cli import main

    common = ["circuit", "--task", "compiled:reverse", "--method", "eap-ig", "--quiet"]
    torch.set_num_threads(1)  # as each torchrun process (bit-equal results need the same kernels)
    assert main(common + ["--json", str(tmp_path / "one.json"), "--archive", str(tmp_path / "a1"),
                          "--out", str(tmp_path / "one.html")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "mechscope", "--records", str(tmp_path / "records"), *common,
                           "--json", str(tmp_path / "two.json"), "--archive", str(tmp_path / "a2"),
                           "--out", str(tmp_path / "two.html")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("stored specimen") == 1 and done.stdout.count("wrote") == 2  # rank 0 only
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for doc in (one, two):
        doc["provenance"].pop("created")
    assert one == two
    assert len(list((tmp_path / "a2").rglob("*.json"))) == len(list((tmp_path / "a1").rglob("*.json")))
    assert list((tmp_path / "records").iterdir())  # progress records were kept


def test_commands_that_do_not_divide_are_refused_under_torchrun(monkeypatch, capsys):
    """Under torchrun (WORLD_SIZE > 1) a command that would only repeat its work on every rank is
    refused by name, listing the commands that divide."""
    from mechscope.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["heads", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert "`mechscope heads` does not divide its work across torchrun's ranks" in err and "sae dashboard" in err


def test_a_resumed_sweep_verifies_what_it_loads(tmp_path, recwarn):
    """A record of the wrong shape, with altered values (NaN) or of another dtype was used as if valid;
    each is now recomputed with a warning that says why."""
    from mechscope import distributed

    calls = []

    def square(items: range) -> torch.Tensor:
        calls.append(items)
        return torch.tensor([[float(i * i), 1.0] for i in items])

    with distributed.records(tmp_path) as root:
        first = distributed.sweep(6, square, key="k", per=3, desc="squares")
        [folder] = root.iterdir()
        record = folder / f"{3:09d}-{6:09d}.pt"
        good = torch.load(record, weights_only=True)
        for bad, why in (({**good, "value": good["value"][:2]}, "has 2 rows; its chunk has 3"),
                         ({**good, "value": good["value"].clone().fill_(float("nan"))}, "does not match the digest"),
                         ({"value": good["value"].double(), "sha256": distributed._digest(good["value"].double())},
                          "is torch.float64 (2,) per row; the sweep's other chunks are torch.float32 (2,)"),
                         (good["value"], "holds no chunk")):
            torch.save(bad, record)
            recwarn.clear()
            assert torch.equal(distributed.sweep(6, square, key="k", per=3, desc="squares"), first)
            assert calls[-1] == range(3, 6) and why in str(recwarn.pop().message)
