"""Explanations of units whose meaning is known by construction: can a scorer tell a true explanation from
another unit's? Token-identity units (each fires exactly on one word of the embedded Shakespeare corpus)
are scored with their true explanation ('the word "king"') and with the next unit's (shuffled), by the
detection and fuzzing scorers, with a local chat model as the scorer. Reports, per scorer: mean balanced
accuracy and mean AUC of P(1) for true and shuffled explanations, and the separation — the ROC AUC of true
vs shuffled explanations over units, scoring each by its AUC of P(1) (1.0: every true explanation beats
every shuffled one; 0.5: the scorer cannot tell them apart).

    python benchmarks/explain_known.py [--scorer smollm2-135m] [--threads 2] [--n 12]
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
    for kind in scoring.SCORERS:
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


if __name__ == "__main__":
    main()
