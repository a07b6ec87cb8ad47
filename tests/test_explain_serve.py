"""Explaining through a real OpenAI-compatible server on the loopback address: `transformers serve`, started
once for the test run, serving a tiny random chat llama saved as a directory (requests name that path; the
server is pinned to it). The answers are random; what is tested is the transport: replies and token counts,
concurrency, the reply cache (a rerun asks the server nothing), clear errors for a wrong model name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("openai")
SERVE = Path(sys.executable).parent / "transformers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """(base_url, model path) of a running `transformers serve` of a tiny random chat llama; stopped at the end
    of the session."""
    from mechscope.models.tiny import tiny_chat

    if not SERVE.exists():
        pytest.skip("no `transformers` command in this environment")
    folder = tmp_path_factory.mktemp("served") / "tiny-chat"
    model = tiny_chat()
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    yield from serving(folder, folder.parent / "serve.log")


def serving(folder, log_path):
    """Serve ``folder`` until the generator is closed: yields (base_url, model path)."""
    from mechscope.explain.clients import ChatError, OpenAIChat

    port = free_port()
    log = open(log_path, "w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(SERVE), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    client = OpenAIChat(url, str(folder), retries=0, timeout=30)
    deadline = time.monotonic() + 240
    while True:  # health check with a chat request (/v1/models needs a hub cache folder)
        try:
            client.chat([[{"role": "user", "content": "hi"}]], max_tokens=1)
            break
        except ChatError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("transformers serve did not answer: " + open(log_path).read()[-2000:])
            time.sleep(1.0)
    try:
        yield url, str(folder)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_endpoint_answers_and_counts_tokens(served):
    from mechscope.explain.clients import OpenAIChat

    url, name = served
    client = OpenAIChat(url, name, concurrency=3, retries=0, timeout=60)
    replies = client.chat([[{"role": "user", "content": f"Say {i}"}] for i in range(4)], max_tokens=3)
    assert len(replies) == 4 and all(isinstance(r.text, str) for r in replies)
    assert all(0 < r.completion_tokens <= 3 and r.prompt_tokens > 0 for r in replies)
    assert client.usage.requests == 4 and client.usage.completion_tokens == sum(r.completion_tokens for r in replies)


def test_wrong_model_name_is_named(served):
    from mechscope.explain.clients import ChatError, OpenAIChat

    url, _ = served
    with pytest.raises(ChatError, match="'not/this-model'"):
        OpenAIChat(url, "not/this-model", retries=0).chat([[{"role": "user", "content": "x"}]], max_tokens=2)


def test_explaining_through_the_endpoint_resumes_from_the_cache(served, tmp_path):
    """A whole run against the endpoint; the rerun is answered from the reply cache alone. Random answers
    are mostly malformed: they are counted and retried, and the run completes."""
    from mechscope.explain import ExampleConfig, examples as E
    from mechscope.explain.run import explain_units
    from mechscope.models.tiny import tiny

    url, name = served
    model = tiny("llama")
    units = E.neuron_units(model, 1, [0, 1])
    blocks = torch.randint(3, 300, (16, 32), generator=torch.Generator().manual_seed(0))
    cfg = ExampleConfig(ctx_len=16, n_quantiles=2, n_test=2, n_train=2, n_negatives=2, min_windows=2)
    examples = E.unit_examples(units, model, config=cfg, blocks=blocks, progress=False)
    kw = dict(explainer=url, endpoint_model=name, examples=examples, config=cfg, cache=tmp_path / "replies.sqlite",
              baselines=(), retries=0, progress=False)
    first = explain_units(units, model, **kw)
    asked = first.usage["explainer"]
    assert asked["requests"] > 0 and asked["cache_hits"] < asked["requests"] and asked["completion_tokens"] > 0
    again = explain_units(units, model, **kw)
    assert again.usage["explainer"]["cache_hits"] == again.usage["explainer"]["requests"] == asked["requests"]
    assert again.summary() == first.summary()
    assert first.explainer == f"openai:{name}"


def test_simulation_through_the_endpoint_reads_json_answers(served):
    """The simulation scorer asks an endpoint in delphi's JSON mode (it gives no prompt log-probabilities): a
    tiny random model's answers are not JSON, so each window predicts 0 and counts as malformed."""
    from mechscope.explain.clients import OpenAIChat
    from mechscope.explain.simulation import simulate

    url, name = served
    window = {"ids": [1, 2, 3], "tokens": ["the", " cat", " sat"], "acts": [0.0, 1.0, 0.0], "quantile": 0}
    unit = {"unit": 0, "max_act": 1.0, "line": 0.0, "test": [window],
            "random_negatives": [{**window, "acts": [0.0, 0.0, 0.0], "quantile": -1}], "hard_negatives": []}
    client = OpenAIChat(url, name, retries=0, timeout=120)
    got = simulate(client, "cats", unit, mode="json")
    assert got["mode"] == "json" and got["prompts"] == 2 and client.usage.requests == 2
    assert got["malformed"] == 2 and got["correlation"] is None  # all-zero predictions: no correlation
    with pytest.raises(ValueError, match="mode='json'"):
        simulate(client, "cats", unit, mode="logprobs")


@pytest.mark.slow
def test_the_embedded_model_served_explains_and_scores(tmp_path):
    """The embedded SmolLM2's dequantised cache directory, served (the ``DIR:file.gguf`` form fails in
    transformers 5.23): a neuron explained and scored through the endpoint; a rerun from the cache asks
    nothing."""
    from mechscope.explain import ExampleConfig, examples as E
    from mechscope.explain.run import explain_units
    from mechscope.models.load import embedded_dir, load

    if not SERVE.exists():
        pytest.skip("no `transformers` command in this environment")
    folder = embedded_dir("smollm2-135m")
    model = load("smollm2-135m")
    server = serving(folder, tmp_path / "serve.log")
    url, name = next(server)
    try:
        units = E.neuron_units(model, 3, [2])
        cfg = ExampleConfig(n_quantiles=2, n_test=2, n_train=2, n_negatives=2, min_windows=2, ctx_len=16)
        examples = E.unit_examples(units, model, config=cfg, n_blocks=16, length=32, progress=False)
        kw = dict(explainer=url, endpoint_model=name, examples=examples, config=cfg, cache=tmp_path / "r.sqlite",
                  baselines=(), scorers=("detection",), retries=0, progress=False)
        first = explain_units(units, model, **kw)
        used = first.usage["explainer"]
        line = first.units[0]
        assert not line["skipped"] and used["completion_tokens"] > 0 and used["cache_hits"] == 0
        if line["explanation"] is None:  # every answer unreadable: counted, and nothing to score
            assert line["malformed"] == used["requests"] == 2
        else:
            shown = len(examples[0]["test"]) + len(examples[0]["random_negatives"])
            assert len(line["scores"]["detection"]["predictions"]) == shown > 0
        again = explain_units(units, model, **kw)
        assert again.usage["explainer"]["cache_hits"] == again.usage["explainer"]["requests"] == used["requests"]
    finally:
        server.close()
