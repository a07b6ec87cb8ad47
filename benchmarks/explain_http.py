"""Scoring explanations through an OpenAI-compatible server: mechscope's client vs delphi's, against the same
``transformers serve`` on the loopback address, in one run; then mechscope's rerun from its reply cache.

Both score the same token-identity units (each fires on one word of the Shakespeare corpus; its true
explanation) with detection and fuzzing (``--n`` activating and ``--n`` random contexts, one per prompt,
``max_tokens`` per answer) and the simulator in JSON mode (``--sim-n`` windows of each kind: each answer
may run to delphi's 1,000 tokens). delphi runs in its own environment (.venv-delphi, `make delphi-env`)
through its ``OpenRouter`` HTTP client with ``base_url`` set to the server; mechscope through
``OpenAIChat`` (``--concurrency`` requests in flight) wrapped in its SQLite reply cache. Reports features
scored per minute by each, their ratio, and the rerun's cache hit rate and time. The served model is a
tiny random chat model by default (the transport, not the model, is measured: its answers are noise) or
``--serve-model NAME``, a model mechscope loads, saved as a directory for the server.

    python benchmarks/explain_http.py [--units 4] [--n 8] [--sim-n 2] [--concurrency 8] [--serve-model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
DELPHI = ROOT / ".venv-delphi" / "bin" / "python"
WORDS = [" king", " love", " lord", " good", " heart", " man", " death", " night"]


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    from mechscope.explain.clients import ChatError, OpenAIChat

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder.parent / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", str(folder), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    probe = OpenAIChat(url, str(folder), retries=0, timeout=30)
    deadline = time.monotonic() + 300
    while True:
        try:
            probe.chat([[{"role": "user", "content": "hi"}]], max_tokens=1)
            return proc, url
        except ChatError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("transformers serve did not answer: " + (folder.parent / "serve.log").read_text()[-2000:])
            time.sleep(1.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--units", type=int, default=4)
    p.add_argument("--n", type=int, default=8, help="activating and random contexts per unit (detection, fuzzing)")
    p.add_argument("--sim-n", type=int, default=2, help="activating and random windows per unit (simulation)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=12)
    p.add_argument("--serve-model", help="a model mechscope loads (default: a tiny random chat model)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not DELPHI.exists():
        raise SystemExit("delphi's environment is missing: make delphi-env")
    import mechscope as ms
    from mechscope.data import token_blocks
    from mechscope.explain import ExampleConfig, examples as E, scoring
    from mechscope.explain.clients import CachedChat, OpenAIChat
    from mechscope.explain.simulation import simulate
    from mechscope.models.tiny import tiny_chat

    reader = ms.load("smollm2-135m")  # the units' windows: SmolLM2's tokens of the Shakespeare corpus
    tok = reader.tokenizer
    ids = [tok.encode(w, add_special_tokens=False)[0] for w in WORDS[:args.units]]
    blocks = token_blocks(tok, 256, 64)
    acts = torch.stack([(blocks == t).float() for t in ids], -1)
    acts[:, 0] = 0.0
    cfg = ExampleConfig(n_quantiles=1, n_test=args.n, n_train=2, n_negatives=args.n, min_windows=args.n)
    units = [u for u in E.choose(acts.reshape(-1, 32, len(ids)), blocks.reshape(-1, 32), list(range(len(ids))), cfg,
                                 lambda t: tok.decode([t])) if not u["skipped"]]
    texts = [f'the word "{WORDS[u["unit"]].strip()}"' for u in units]
    work = Path(tempfile.mkdtemp())
    folder = work / "served"
    served = ms.load(args.serve_model) if args.serve_model else tiny_chat()
    served.hf.save_pretrained(folder)
    served.tokenizer.save_pretrained(folder)
    name = args.serve_model or "a tiny random chat llama"
    proc, url = serve(folder)
    try:
        src = {"url": url + "/chat/completions", "model": str(folder), "max_tokens": args.max_tokens, "sim_n": args.sim_n,
               "units": [{"test": [{k: c[k] for k in ("tokens", "acts", "quantile")} for c in u["test"]],
                          "negatives": [{"tokens": c["tokens"], "acts": c["acts"]} for c in u["random_negatives"]],
                          "explanation": x, "max_act": u["max_act"]} for u, x in zip(units, texts)]}
        (work / "in.json").write_text(json.dumps(src))
        done = subprocess.run([str(DELPHI), str(ROOT / "benchmarks" / "delphi_http_driver.py"), str(work / "in.json"),
                               str(work / "out.json")], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit("delphi's run failed: " + done.stderr[-3000:])
        theirs = json.loads((work / "out.json").read_text())

        def ours() -> tuple[float, CachedChat]:
            client = CachedChat(OpenAIChat(url, str(folder), concurrency=args.concurrency, retries=1, timeout=300),
                                work / "replies.sqlite")
            t0 = time.perf_counter()
            for u, x in zip(units, texts):
                for kind in scoring.SCORERS:
                    scoring.score(kind, client, x, u, retries=0, free_answers=True)
                small = {**u, "test": u["test"][:args.sim_n], "random_negatives": u["random_negatives"][:args.sim_n]}
                simulate(client, x, small, mode="json")
            return time.perf_counter() - t0, client

        first, client = ours()
        again, cached = ours()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    n = len(units)
    per_min = {"mechscope": 60 * n / first, "delphi": 60 * n / theirs["seconds"]}
    hit = cached.usage.cache_hits / max(1, cached.usage.requests)
    md = (f"## Scoring through an OpenAI-compatible server: mechscope vs delphi ({name} served)\n\n"
          f"`python benchmarks/explain_http.py --units {args.units} --n {args.n} --sim-n {args.sim_n} --concurrency "
          f"{args.concurrency}" + (f" --serve-model {args.serve_model}" if args.serve_model else "") + "`: one "
          f"`transformers serve` on the loopback address; {n} token-identity units, each scored by detection and "
          f"fuzzing ({args.n} activating + {args.n} random contexts, one per prompt, ≤ {args.max_tokens} answer tokens) "
          f"and by the JSON-mode simulator ({args.sim_n} + {args.sim_n} windows, ≤ 1,000 answer tokens each). delphi: "
          f"its `OpenRouter` client with `base_url` at the server, each unit's scorers concurrently, "
          f"{theirs['requests']} requests. mechscope: `OpenAIChat` with {args.concurrency} requests in flight, "
          f"{client.usage.requests} requests. {machine(args.threads, 'cpu')}.\n\n"
          "| | seconds | features per minute |\n|---|---:|---:|\n"
          f"| delphi (eai-delphi 0.1.3) | {theirs['seconds']:.1f} | {per_min['delphi']:.2f} |\n"
          f"| mechscope | {first:.1f} | {per_min['mechscope']:.2f} |\n"
          f"| mechscope, rerun from its reply cache ({hit:.0%} hits) | {again:.2f} | {60 * n / again:.0f} |\n\n"
          f"mechscope / delphi: **{per_min['mechscope'] / per_min['delphi']:.2f}×** features per minute on the first run.\n")
    write_section("explain_http", md)
    print(md)


if __name__ == "__main__":
    main()
