"""Explanations of units whose meaning is known by construction: can a scorer tell a true explanation from
another unit's? Token-identity units (each fires exactly on one word of the embedded Shakespeare corpus)
are scored with their true explanation ('the word "king"') and with the next unit's (shuffled), by the
detection and fuzzing scorers, with a local chat model as the scorer. Reports, per scorer: mean balanced
accuracy and mean AUC of P(1) for true and shuffled explanations, and the separation — the ROC AUC of true
vs shuffled explanations over units, scoring each by its AUC of P(1) (1.0: every true explanation beats
every shuffled one; 0.5: the scorer cannot tell them apart). The simulation scorer (log-probability
mode) is reported in its own section: mean correlation of predicted with true activations, true vs
shuffled, and the separation by that correlation (``--sim-n`` test windows and negatives per unit: each
window is a forward pass over ~1,000 prompt tokens).

    python benchmarks/explain_known.py [--scorer smollm2-135m] [--threads 2] [--n 12] [--sim-n 4]
        [--scorers detection,fuzz,simulation]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import machine, write_section

WORDS = [" king", " love", " lord", " good", " heart", " man", " death", " night", " father", " sweet"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scorer", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=12, help="test contexts and negatives per unit")
    p.add_argument("--blocks", type=int, default=512)
    p.add_argument("--sim-n", type=int, default=4, help="test windows and negatives per unit for simulation")
    p.add_argument("--scorers", default="detection,fuzz,simulation")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import mechscope as ms
    from mechscope.explain import ExampleConfig, LocalChat, examples as E, scoring
    from mechscope.data import token_blocks

    chat_model = ms.load(args.scorer)
    tok = chat_model.tokenizer
    ids = [tok.encode(w, add_special_tokens=False) for w in WORDS]
    assert all(len(i) == 1 for i in ids), ids
    ids = [i[0] for i in ids]
    blocks = token_blocks(tok, args.blocks, 64)
    acts = torch.stack([(blocks == t).float() for t in ids], -1)  # [blocks, pos, units]: exactly on its token
    acts[:, 0] = 0.0
    cfg = ExampleConfig(n_quantiles=1, n_test=args.n, n_train=2, n_negatives=args.n, min_windows=args.n)
    units = E.choose(acts.reshape(-1, 32, len(ids)), blocks.reshape(-1, 32), list(range(len(ids))), cfg,
                     lambda t: tok.decode([t]))
    units = [u for u in units if not u["skipped"]]
    true = [f'the word "{WORDS[u["unit"]].strip()}"' for u in units]
    shuffled = true[1:] + true[:1]
    chat = LocalChat(chat_model)
    t0 = time.perf_counter()
    rows, prompts = [], 0
    kinds = [k.strip() for k in args.scorers.split(",") if k.strip()]
    for kind in [k for k in scoring.SCORERS if k in kinds]:
        got = {name: [scoring.score(kind, chat, x, u, log_prob=True) for u, x in zip(units, xs)]
               for name, xs in (("true", true), ("shuffled", shuffled))}
        prompts += sum(s["prompts"] for ss in got.values() for s in ss)
        auc = {name: [s["metrics"]["auc"] for s in ss] for name, ss in got.items()}
        acc = {name: [s["metrics"]["balanced_accuracy"] for s in ss] for name, ss in got.items()}
        sep = scoring.roc_auc(auc["true"] + auc["shuffled"], [True] * len(units) + [False] * len(units))
        rows.append(f"| {kind} | {sum(acc['true']) / len(units):.3f} | {sum(acc['shuffled']) / len(units):.3f} | "
                    f"{sum(auc['true']) / len(units):.3f} | {sum(auc['shuffled']) / len(units):.3f} | {sep:.3f} |")
        print(rows[-1], flush=True)
    seconds = time.perf_counter() - t0
    if "simulation" in kinds:
        simulated(units, true, shuffled, chat, args)
    if not rows:
        return
    md = (f"## Explanations of known units: true vs shuffled ({args.scorer} as scorer)\n\n"
          f"`python benchmarks/explain_known.py --scorer {args.scorer} --threads {args.threads} --n {args.n}`: "
          f"{len(units)} token-identity units (each fires exactly on one word of the Shakespeare corpus: "
          f"{', '.join(repr(WORDS[u['unit']].strip()) for u in units)}), {args.n} test contexts and {args.n} random "
          f"negatives each, one context per prompt, answers held to the [0/1] form; {prompts} prompts in "
          f"{seconds:.0f} s ({prompts / seconds:.2f} prompts/s). {machine(args.threads, 'cpu')}.\n\n"
          "| scorer | balanced acc., true | balanced acc., shuffled | AUC of P(1), true | AUC of P(1), shuffled | "
          "separation (ROC AUC true vs shuffled) |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    write_section(f"explain_known-{args.scorer}", md)
    print(md)


def simulated(units, true, shuffled, chat, args) -> None:
    """The simulation scorer on ``--sim-n`` test windows and negatives per unit: its own section."""
    from mechscope.explain import scoring, simulation

    small = [{**u, "test": u["test"][:args.sim_n], "random_negatives": u["random_negatives"][:args.sim_n]}
             for u in units]
    t0 = time.perf_counter()
    got = {name: [simulation.simulate(chat, x, u) for u, x in zip(small, xs)]
           for name, xs in (("true", true), ("shuffled", shuffled))}
    seconds = time.perf_counter() - t0
    windows = sum(s["prompts"] for ss in got.values() for s in ss)
    r = {name: [s["correlation"] if s["correlation"] is not None else 0.0 for s in ss] for name, ss in got.items()}
    sep = scoring.roc_auc(r["true"] + r["shuffled"], [True] * len(units) + [False] * len(units))
    row = (f"| simulation (log-probabilities) | {sum(r['true']) / len(units):.3f} | "
           f"{sum(r['shuffled']) / len(units):.3f} | {sep:.3f} |")
    md = (f"## Simulation of known units: true vs shuffled ({args.scorer} as scorer)\n\n"
          f"`python benchmarks/explain_known.py --scorer {args.scorer} --threads {args.threads} --sim-n {args.sim_n} "
          f"--scorers simulation`: the same {len(units)} token-identity units, {args.sim_n} test windows and "
          f"{args.sim_n} random negatives each; the scorer predicts every token's activation (0–10) from the "
          f"explanation, read from its log-probabilities after each tab (delphi's log-probability mode); a "
          f"constant prediction counts as correlation 0. {windows} windows in {seconds:.0f} s "
          f"({windows / seconds:.2f} windows/s). {machine(args.threads, 'cpu')}.\n\n"
          "| scorer | mean correlation, true | mean correlation, shuffled | separation (ROC AUC true vs shuffled) |\n"
          "|---|---:|---:|---:|\n" + row + "\n")
    write_section(f"explain_known_simulation-{args.scorer}", md)
    print(md)


if __name__ == "__main__":
    main()
