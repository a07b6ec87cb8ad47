"""Supernodes proposed automatically vs the ones named by hand, on the capital specimen
(docs/specimens/smollm2-capital-of-france.json and its .supernodes.json): pairwise precision, recall and F1
over the hand-grouped nodes the stored graph keeps, across merge thresholds, for

- mechscope's proposal: the features' texts (the specimen's node labels) + edge profiles, one token position
  per group (``tracing.supernodes.propose_supernodes``);
- the same from texts alone;
- the baseline, edge-profile clustering (an open Neuronpedia draft's idea), with and without the
  one-position rule.

The stored specimen carries card labels ("fires on …; promotes …"), not chat-model explanations: those need
the transcoders it was traced through (``make transcoders graph-specimen``, ~8 h on 2 cores), which stay out of git.

    python benchmarks/supernodes_capital.py
"""

from __future__ import annotations

import json
from pathlib import Path

from common import write_section

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def main() -> None:
    from mechscope.tracing.supernodes import edge_profile_supernodes, pair_agreement, propose_supernodes
    from mechscope.tracing.neuronpedia import from_neuronpedia

    doc = json.loads((ROOT / "docs/specimens/smollm2-capital-of-france.json").read_text())
    hand = json.loads((ROOT / "docs/specimens/smollm2-capital-of-france.supernodes.json").read_text())
    graph = from_neuronpedia(doc)
    kept = set(graph.node_ids()[:graph.n_features])
    reference = {k: [m for m in v if m in kept] for k, v in hand.items()}
    texts = {n["node_id"]: n.get("clerp", "") for n in doc["nodes"]}
    methods = {
        "labels + edge profiles, one position (mechscope)": lambda t: propose_supernodes(graph, texts, threshold=t),
        "labels alone, one position": lambda t: propose_supernodes(graph, texts, threshold=t, use_edges=False),
        "edge profiles (baseline)": lambda t: edge_profile_supernodes(graph, threshold=t),
        "edge profiles, one position (baseline + our position rule)":
            lambda t: edge_profile_supernodes(graph, threshold=t, same_position=True),
    }
    rows = []
    for name, propose in methods.items():
        got = [pair_agreement(propose(t), reference) for t in THRESHOLDS]
        cells = " | ".join(f"{a['precision']:.2f} / {a['recall']:.2f} / **{a['f1']:.2f}**" for a in got)
        mean_f1 = sum(a["f1"] for a in got) / len(got)
        rows.append(f"| {name} | {cells} | {max(a['f1'] for a in got):.2f} | {mean_f1:.2f} |")
        print(rows[-1], flush=True)
    n = sum(len(v) for v in reference.values())
    md = ("## Supernodes: proposed vs named by hand (capital specimen)\n\n"
          f"`python benchmarks/supernodes_capital.py`: the {graph.n_features} feature nodes of "
          f"docs/specimens/smollm2-capital-of-france.json clustered (average linkage); scored on the {n} nodes of "
          f"its {len(reference)} hand-named supernodes that the stored graph keeps ({sum(len(v) for v in hand.values())} "
          "named in all): pairwise precision / recall / **F1** of nodes grouped together, at each merge threshold. "
          "The specimen's texts are its card labels (\"fires on …; promotes …\"); chat-model explanations need the "
          "transcoders it was traced through, not in git.\n\n"
          "| method | " + " | ".join(f"t = {t}" for t in THRESHOLDS) + " | best F1 | mean F1 |\n"
          "|---|" + "---:|" * (len(THRESHOLDS) + 2) + "\n" + "\n".join(rows) + "\n")
    write_section("supernodes_capital", md)
    print(md)


if __name__ == "__main__":
    main()
