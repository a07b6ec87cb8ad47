"""Circuit methods against the truth: compiled programs, whose circuits are known by construction.

`.venv/bin/python benchmarks/compiled_circuits.py [--sizes]` (one torch thread, ~3 min; --sizes: only the
table of compile times and model sizes). The last rows: the same on
a SIIT-trained stand-in for reverse (`compile.siit`; its weights are not hand-clean, its circuit is known). For every example
program and ablation (zero, corrupted, mean): the true edges that matter on the task's inputs (the
compiler's circuit minus the edges whose ablation alone changes nothing there, counted apart), and
per method the ROC AUC over edges — EAP and EAP-IG (|score|; their scores come from the corrupted
run whatever the ablation), ACDC (a sweep of thresholds, as the ACDC paper draws its ROC) — and over
nodes — activation patching (the metric's change when a node's outputs are ablated) and attribution
patching (a node's EAP score summed over its out-edges) —, the faithfulness of the circuit each
returns at its default setting (EAP-IG: the smallest reaching 0.8; ACDC: threshold 0.01) and the
time taken. Metric: minus the L2 distance of the output logits from the clean run's, every position.
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, write_section  # noqa: E402

from mechscope.circuits.discovery import acdc, discover, eap, eap_ig, faithfulness  # noqa: E402
from mechscope.circuits.graph import Graph  # noqa: E402
from mechscope.compile import PROGRAMS, compile_program  # noqa: E402
from mechscope.compile.siit import train_siit  # noqa: E402
from mechscope.compile.task import compiled_task, inert_edges  # noqa: E402

ABLATIONS = ("zero", "corrupted", "mean")
THRESHOLDS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
PAIRS = 32


def auc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """ROC AUC: the chance a true item outscores a false one (ties count half); NaN without both."""
    pos, neg = scores[truth], scores[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None]).float().mean()
    ties = (pos[:, None] == neg[None]).float().mean()
    return float(greater + 0.5 * ties)


def roc_auc_of_points(points: list[tuple[float, float]]) -> float:
    """Area under (FPR, TPR) points joined by straight lines, from (0, 0) to (1, 1)."""
    pts = sorted(set(points) | {(0.0, 0.0), (1.0, 1.0)})
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))


def run_program(name: str, siit: bool = False) -> list[dict]:
    make, vocab, max_len, non_causal = PROGRAMS[name]
    compiled = compile_program(make(), vocab, max_len, causal=not non_causal)
    if siit:  # a trained stand-in with the same true circuit (InterpBench's realistic variant)
        record = train_siit(compiled, progress=False)
        compiled = record.stand_in
        print(record.summary(), flush=True)
        name = f"{name} (SIIT{'' if record.accepted else ', not accepted'})"
    model, g = compiled.model, Graph.of(compiled.model)
    task = compiled_task(compiled, PAIRS)
    allowed = g.allowed
    truth_all = g.mask_of(compiled.circuit().edges).bool()
    t = time.perf_counter()
    eap_scores = eap(model, task, progress=False).scores.abs()
    t_eap = time.perf_counter() - t
    t = time.perf_counter()
    ig_scores = eap_ig(model, task, progress=False).scores.abs()
    t_ig = time.perf_counter() - t
    rows = []
    for ablation in ABLATIONS:
        inert = inert_edges(compiled, task, ablation)
        truth = truth_all & ~g.mask_of(inert).bool()
        senders_true = truth.any(1)
        # nodes: ablate every out-edge of one sender at a time
        masks = allowed.float().repeat(len(g.senders), 1, 1)
        for s in range(len(g.senders)):
            masks[s, s] = 0.0
        t = time.perf_counter()
        node_effect = 1.0 - faithfulness(model, task, masks, ablation=ablation)
        t_nodes = time.perf_counter() - t
        points, points_all, t_acdc, default = [], [], 0.0, None
        for threshold in THRESHOLDS:
            found = acdc(model, task, threshold=threshold, measure="task", ablation=ablation, progress=False)
            t_acdc += found.extra["seconds"]
            kept = g.mask_of(found.edges).bool() & allowed
            tp = int((kept & truth).sum())
            fp = int((kept & ~truth & allowed).sum())
            points.append((fp / max(1, int((~truth & allowed).sum())), tp / max(1, int(truth.sum()))))
            tp, fp = int((kept & truth_all).sum()), int((kept & ~truth_all & allowed).sum())
            points_all.append((fp / max(1, int((~truth_all & allowed).sum())), tp / max(1, int(truth_all.sum()))))
            if threshold == 1e-2:
                default = found
        t = time.perf_counter()
        ig_circuit = discover(model, task, "eap-ig", faithfulness=0.8, ablation=ablation, progress=False)
        t_ig_c = time.perf_counter() - t
        rows.append({
            "program": name, "ablation": ablation, "true": int(truth_all.sum()), "inert": len(inert),
            "eap": auc(eap_scores[allowed], truth[allowed]), "eap_ig": auc(ig_scores[allowed], truth[allowed]),
            "acdc": roc_auc_of_points(points) if truth.any() else float("nan"),
            "acdc_all": roc_auc_of_points(points_all), "eap_ig_all": auc(ig_scores[allowed], truth_all[allowed]),
            "nodes_patching": auc(node_effect.abs(), senders_true),
            "nodes_attribution": auc((eap_scores * allowed).sum(1), senders_true),
            "faith_ig": ig_circuit.faithfulness, "edges_ig": len(ig_circuit.edges),
            "faith_acdc": default.faithfulness, "edges_acdc": len(default.edges),
            "s_eap": t_eap, "s_ig": t_ig + t_ig_c, "s_acdc": t_acdc, "s_nodes": t_nodes,
        })
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    fmt = lambda x: "—" if x != x else f"{x:.2f}"  # noqa: E731
    md = [f"Compiled programs (`compile.PROGRAMS`), {PAIRS} clean/corrupted pairs of the longest length each, metric "
          f"−L2 of the output logits over every position; {machine(1, 'cpu')}.",
          "True edges: the compiler's circuit; inert: true edges whose ablation alone changes nothing on these inputs "
          "(left out of the truth the AUCs score against). EAP / EAP-IG / ACDC: ROC AUC over edges (ACDC: thresholds "
          f"{', '.join(map(str, THRESHOLDS))}); in brackets, against every true edge, inert ones included (as the ACDC "
          "paper scored). Nodes: ROC AUC of activation patching and attribution patching over senders (— where every "
          "sender is true). Faithfulness (edges) of EAP-IG's smallest circuit reaching 0.8 and of ACDC at 0.01.", "",
          "| program | ablation | true (inert) | EAP | EAP-IG (all true) | ACDC (all true) | nodes: patching | "
          "nodes: attribution | EAP-IG circuit | ACDC circuit | s: EAP / EAP-IG / ACDC sweep |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['program']} | {r['ablation']} | {r['true']} ({r['inert']}) | {fmt(r['eap'])} | "
                  f"{fmt(r['eap_ig'])} ({fmt(r['eap_ig_all'])}) | {fmt(r['acdc'])} ({fmt(r['acdc_all'])}) | "
                  f"{fmt(r['nodes_patching'])} | {fmt(r['nodes_attribution'])} | "
                  f"{fmt(r['faith_ig'])} ({r['edges_ig']}) | {fmt(r['faith_acdc'])} ({r['edges_acdc']}) | "
                  f"{r['s_eap']:.2f} / {r['s_ig']:.2f} / {r['s_acdc']:.1f} |")
    return "\n".join(md)


def sizes() -> str:
    """Compile time, shape and parameters of every example program."""
    md = ["| program | vocab, max length | causal | compile s | layers | heads | d_model | d_mlp | parameters | "
          "inputs checked |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (make, vocab, max_len, non_causal) in PROGRAMS.items():
        t = time.perf_counter()
        compiled = compile_program(make(), vocab, max_len, causal=not non_causal)
        seconds = time.perf_counter() - t
        c = compiled.model.cfg
        n = sum(p.numel() for p in compiled.model.hf.parameters())
        md.append(f"| {name} | {len(vocab)}, {max_len} | {'no' if non_causal else 'yes'} | {seconds:.3f} | {c.n_layers} | "
                  f"{c.n_heads} | {c.d_model} | {c.d_mlp} | {n:,} | {compiled.verify()['checked']:,} (all) |")
    return "\n".join(md)


def main() -> None:
    torch.set_num_threads(1)
    size_table = sizes()
    write_section("compiled-sizes", f"## Compiled programs: size and compile time\n\n{machine(1, 'cpu')}.\n\n{size_table}")
    print(size_table)
    if "--sizes" in sys.argv:
        return
    rows = [r for name in ("reverse", "sort", "histogram", "frac_prevs", "paren_depth", "mirror_match")
            for r in run_program(name)] + run_program("reverse", siit=True)
    md = table(rows)
    write_section("compiled-circuits", "## Circuit methods against the truth (compiled programs)\n\n" + md)
    print(md)


if __name__ == "__main__":
    main()
