"""Circuit discovery on SmolLM2 IOI: EAP vs EAP-IG vs ACDC — wall time, forward/backward passes,
and faithfulness at equal circuit size (corrupted ablation, the same 16 held pairs for all).

The full graph has 70,651 edges. ACDC tests edges one by one (speculatively batched), which on
this CPU would take many hours over the full graph, so it prunes a candidate set instead: the
EAP-IG greedy circuit of ``ACDC_START`` edges. Its per-forward cost is reported so the full-graph
time can be estimated. Run alone: `python benchmarks/bench_circuits.py`."""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

import mechscope as ms  # noqa: E402
from mechscope.circuits import acdc, eap, eap_ig, faithfulness  # noqa: E402
from mechscope.tasks import make_task  # noqa: E402

THREADS = 2
PAIRS = 32  # scored
ACDC_PAIRS = 8
ACDC_START = 500
ACDC_THRESHOLD = 0.002  # of the normalised metric (clean − corrupted = 1)


def main() -> None:
    torch.set_num_threads(THREADS)
    model = ms.load("smollm2-135m")
    task = make_task("ioi", model, n=PAIRS, seed=0).solved_by(model)
    held = task.subset(range(16))
    rows = []
    scores = {}
    for name, fn in (("EAP", lambda: eap(model, task, progress=False)),
                     ("EAP-IG (5 steps)", lambda: eap_ig(model, task, steps=5, progress=False))):
        t = time.perf_counter()
        s = fn()
        scores[name] = s
        rows.append((name, time.perf_counter() - t, s.passes["forward"], s.passes["backward"], len(task)))
        print(rows[-1], flush=True)

    start = scores["EAP-IG (5 steps)"].top_mask(ACDC_START)
    t = time.perf_counter()
    found = acdc(model, task.subset(range(ACDC_PAIRS)), threshold=ACDC_THRESHOLD, measure="task", start=start,
                 speculate=8, progress=True)
    acdc_s = time.perf_counter() - t
    rows.append((f"ACDC (Δ metric < {ACDC_THRESHOLD}, from EAP-IG's best {ACDC_START})", acdc_s, found.extra["forwards"], 0,
                 ACDC_PAIRS))
    print(rows[-1], len(found.edges), flush=True)

    k = len(found.edges)
    g = ms.circuits.Graph.of(model)
    start_faith = faithfulness(model, held, start).item()
    sizes = sorted({k, 250, 500, 1000, 2500})
    columns = [(name, absolute) for name in scores for absolute in (False, True)]
    masks = [scores[name].top_mask(size, absolute) for name, absolute in columns for size in sizes]
    values = faithfulness(model, held, torch.stack(masks + [g.mask_of(found.edges)])).tolist()
    faith = {(col, size): values[i * len(sizes) + j] for i, col in enumerate(columns) for j, size in enumerate(sizes)}
    print(faith, values[-1], flush=True)

    per_forward = acdc_s / max(1, found.extra["forwards"])
    full_estimate_h = per_forward * (g.n_edges / 8) / 3600
    lines = [
        "## Circuit discovery: EAP vs EAP-IG vs ACDC (SmolLM2-135M, IOI)",
        "",
        f"`benchmarks/bench_circuits.py` · {machine(THREADS, 'cpu')} · graph of {g.n_edges:,} edges "
        f"(embedding, 270 heads with separate q/k/v inputs, 30 MLPs, logits) · corrupted ablation.",
        "",
        "| method | wall time | forwards | backwards | pairs |",
        "|---|---:|---:|---:|---:|",
        *[f"| {n} | {s:.1f} s | {f} | {b} | {p} |" for n, s, f, b, p in rows],
        "",
        f"Faithfulness on 16 of the scored pairs at equal size: greedy circuits grown from the logits, ranked by "
        f"signed score (the edges that carry the behaviour) or by |score| (also those that fight it). ACDC pruned "
        f"EAP-IG's best {ACDC_START} edges (faithfulness {start_faith:.3f}) to {k}: faithfulness {values[-1]:.3f}.",
        "",
        "| edges | EAP signed | EAP abs | EAP-IG signed | EAP-IG abs |",
        "|---:|---:|---:|---:|---:|",
        *["| " + " | ".join([str(size)] + [f"{faith[(col, size)]:.3f}" for col in columns]) + " |" for size in sizes],
        "",
        f"ACDC cost {per_forward:.1f} s per forward ({ACDC_PAIRS} pairs × up to 8 speculative copies); over the "
        f"full graph it needs at least {g.n_edges // 8:,} forwards, about {full_estimate_h:.0f} h here — why it "
        "prunes a candidate set.",
    ]
    write_section("circuits", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
