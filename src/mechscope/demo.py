"""`mechscope demo`: study the embedded SmolLM2 with the analyses that exist so far.

Loads the model, predicts next tokens, scans every head and layer by ablation for a factual
recall, steers a generation with an activation-difference vector, and writes every result
(JSON + tensors) and an HTML page to the output directory.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import torch

from .interventions import Add
from .models.load import DEFAULT_MODEL, load
from .patching import ablation_scan
from .results import NextTokens

PROMPTS = ["The capital of France is", "The Eiffel Tower is located in the city of", "1, 2, 3, 4,"]
STEER_PROMPT = "I think that my neighbour is"


def steering_vector(model, layer: int, positive: str = "I love you", negative: str = "I hate you") -> torch.Tensor:
    """ActAdd-style vector: residual at ``layer`` of ``positive`` minus ``negative`` (last token).

    Single-word prompts make poor vectors: the first token's residual has a huge norm (attention sink)."""
    site = f"blocks.{layer}.resid_pre"
    runs = model.run([positive, negative], cache=site, cache_positions=[-1])
    acts = runs.cache[site][:, 0]
    return acts[0] - acts[1]


def run_demo(model_name: str = DEFAULT_MODEL, out: str | Path = "mechscope-demo", progress: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load(model_name)
    print(f"Loaded {model!r} in {time.perf_counter() - t0:.1f}s")
    print(f"  fingerprint {model.fingerprint}, {len(model.sites)} sites")

    results = []
    preds = NextTokens.of(model.run(PROMPTS), PROMPTS, k=5)
    results.append(("next_tokens", preds))
    print("\n" + preds.summary())

    target = preds.tokens[0][0]
    for components in ("layers", "heads"):
        t = time.perf_counter()
        scan = ablation_scan(model, PROMPTS[0], target, components=components, progress=progress)
        print(f"\n{scan.summary()}  [{time.perf_counter() - t:.1f}s, batched]")
        results.append((f"ablation_{components}", scan))

    layer = max(1, model.cfg.n_layers // 3)
    vec = steering_vector(model, layer)
    plain = model.generate(STEER_PROMPT, max_new_tokens=20)
    steered = model.generate(STEER_PROMPT, max_new_tokens=20, interventions=[Add(f"blocks.{layer}.resid_pre", vec, coef=2.0)])
    print(f"\nSteering at blocks.{layer}.resid_pre with 'I love you' - 'I hate you' (coef 2):")
    print(f"  plain:   {STEER_PROMPT}{plain!r}")
    print(f"  steered: {STEER_PROMPT}{steered!r}")

    sections = []
    for name, result in results:
        result.save(out / name)
        sections.append(result.html())
    sections.append(
        "<section class='result'><h2>Steering</h2>"
        f"<p>Add at blocks.{layer}.resid_pre: 'I love you' − 'I hate you', coef 2</p>"
        f"<pre>plain:   {html.escape(STEER_PROMPT + plain)}\nsteered: {html.escape(STEER_PROMPT + steered)}</pre></section>"
    )
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>mechscope demo</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{background:#f4f4f4;padding:.6em;"
        "white-space:pre-wrap}img{max-width:100%}</style>"
        f"<h1>mechscope demo: {html.escape(model.name)}</h1><p>{html.escape(model.cfg.summary())}</p>"
        + "".join(sections)
    )
    print(f"\nResults in {out}/ ; open {page} in a browser. Total {time.perf_counter() - t0:.1f}s")
    return page
