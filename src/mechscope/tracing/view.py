"""What an attribution graph's viewer shows: feature cards for its nodes, supernodes, and the
data block the page's script draws (``report/static/mechscope.js``, cytoscape.js vendored).

Supernodes are Neuronpedia's ``[name, node_id, node_id, ...]`` lists. ``group_features`` proposes
them: features of the pruned graph whose decoder directions point the same way (average-linkage
clustering on their cosine, merged above ``similarity``: ``supernodes.propose_supernodes``; one feature
at several positions always joins itself), named by the token they most promote (with explanations,
``propose_supernodes`` groups by meaning and edge profiles instead); ``set_supernodes`` stores groups named by
hand (after reading the cards) in their place. ``collapse`` sums a graph's edges between groups (edges inside a group dropped).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .replacement import GraphError, TranscoderStack


def _coder(stack: TranscoderStack, layer: int):
    return stack.clt.layer_coder(layer) if stack.clt is not None else stack.coders[layer]


def graph_cards(graph: Any, model: Any, transcoders: Any, *, node_threshold: float = 0.8, edge_threshold: float = 0.98,
                blocks: torch.Tensor | None = None, n_blocks: int = 64, length: int = 64, k: int = 5, batch_size: int = 16,
                progress: bool = True) -> dict[str, dict]:
    """Cards of the features kept at these thresholds, keyed ``"L_F"`` (layer, feature) — top
    activating contexts over ``blocks`` (default: corpus blocks; one pass caches every layer needed)
    and logit effects — stored in ``graph.extra["cards"]`` and returned."""
    from tqdm.auto import tqdm

    from ..components.neurons import card_fields
    from ..results import Provenance
    from ..sae.dashboard import FeatureCards, logit_effect

    stack = TranscoderStack(transcoders, model)
    kept = graph.prune(node_threshold, edge_threshold).nodes[: graph.n_features]
    by_layer: dict[int, list[int]] = {}
    for layer, _, f in graph.features[kept].tolist():
        if f not in by_layer.setdefault(layer, []):
            by_layer[layer].append(f)
    if blocks is None:
        from ..data import token_blocks

        blocks = token_blocks(model.tokenizer, n_blocks, length)
    coders = {layer: _coder(stack, layer) for layer in by_layer}
    acts: dict[int, list[torch.Tensor]] = {layer: [] for layer in by_layer}
    sites = sorted({c.cfg.site for c in coders.values()})
    for start in tqdm(range(0, len(blocks), batch_size), desc="graph cards", disable=not progress, leave=False):
        with torch.no_grad():
            cache = model.run(blocks[start:start + batch_size], cache=sites).cache
            for layer, feats in by_layer.items():
                c = coders[layer]
                a = c.encode(cache[c.cfg.site].to(c.W_enc.device).float())[..., feats].cpu()
                a[:, 0] = 0.0  # the attention sink, as in feature_cards
                acts[layer].append(a)
    cards: dict[str, dict] = dict(graph.extra.get("cards", {}))
    for layer, feats in sorted(by_layer.items()):
        c = coders[layer]
        fields = card_fields(model, torch.cat(acts[layer]), blocks, logit_effect(c, model, feats), k=k, window=10)
        fc = FeatureCards(provenance=Provenance.of(model), layer=layer, neurons=feats, site=c.cfg.site, arch=c.cfg.arch,
                          **fields)
        for i, f in enumerate(feats):
            cards[f"{layer}_{f}"] = {
                "label": fc.label(i), "max_act": float(fc.max_act[i]), "density": float(fc.density[i]),
                "top": [{"tokens": ex["tokens"], "peak": int(ex["peak"]), "act": float(max(ex["acts"]))}
                        for ex in fc.top[i][:k]],
                "promoted": [[t, float(v)] for t, v in fc.promoted[i][:5]],
                "suppressed": [[t, float(v)] for t, v in fc.suppressed[i][:5]]}
    graph.extra["cards"] = cards
    return cards


def group_features(graph: Any, model: Any, transcoders: Any, *, similarity: float = 0.6,
                   node_threshold: float = 0.8, edge_threshold: float = 0.98) -> list[list[str]]:
    """Supernodes proposed from the kept features' decoder directions (see the module docstring); stored in
    ``graph.extra["supernodes"]`` and returned."""
    from .supernodes import propose_supernodes

    stack = TranscoderStack(transcoders, model)
    kept = graph.prune(node_threshold, edge_threshold).nodes[: graph.n_features].nonzero()[:, 0].tolist()
    if len(kept) < 2:
        return []
    ids = graph.node_ids()
    W_U = model.unembed.weight.detach().float()
    dirs, tops = {}, {}
    for i in kept:
        layer, _, f = graph.features[i].tolist()
        d = stack.decoder_rows(layer, torch.tensor([f]))[0, 0]
        dirs[ids[i]] = d
        tops[ids[i]] = int((W_U @ d).argmax())

    def promoted(members: list[str]) -> str:  # the token the group promotes most often (ties: the first member's)
        votes = [tops[m] for m in members]
        return f"→ {model.tokenizer.decode([max(dict.fromkeys(votes), key=votes.count)])!r}"

    out = propose_supernodes(graph, None, decoders=dirs, use_edges=False, same_position=False,
                             threshold=similarity, node_threshold=node_threshold, edge_threshold=edge_threshold,
                             namer=promoted)
    graph.extra["supernodes"] = out
    return out


def set_supernodes(graph: Any, groups: dict[str, Sequence[str]]) -> list[list[str]]:
    """Supernodes named by hand — {name: [node id, ...]} over the graph's feature and error nodes —
    stored in ``graph.extra["supernodes"]`` (replacing proposed ones) and returned."""
    ids = graph.node_ids()
    known = set(ids[:graph.n_features + graph.n_layers * graph.n_pos])  # features, then errors
    out = []
    for name, members in groups.items():
        if not isinstance(name, str) or not name.strip() or isinstance(members, str) or not members:
            raise GraphError(f"supernode {name!r}: want a non-empty name and a non-empty list of node ids")
        unknown = [m for m in members if m not in known]
        if unknown:
            raise GraphError(f"supernode {name!r}: {unknown[:5]} are no feature or error node of this graph "
                             f"(ids are layer_feature_position, e.g. {ids[0]!r})")
        out.append([name, *dict.fromkeys(members)])
    graph.extra["supernodes"] = out
    return out


def collapse(graph: Any, supernodes: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """(labels, A [groups, groups]): every node in a supernode merged into one (edges summed, edges
    inside a group dropped); nodes in no supernode stay themselves. Rows targets, columns sources."""
    ids = graph.node_ids()
    where = {n: i for i, n in enumerate(ids)}
    group_of = list(range(len(ids)))
    labels = graph.node_labels()
    names: dict[int, str] = {}
    for s in supernodes:
        if len(s) < 2:
            raise GraphError(f"supernode {list(s)!r}: give a name and at least one node id")
        missing = [n for n in s[1:] if n not in where]
        if missing:
            raise GraphError(f"supernode {s[0]!r}: {missing} are not nodes of this graph")
        head = where[s[1]]
        for n in s[1:]:
            group_of[where[n]] = head
        names[head] = str(s[0])
    order = sorted(set(group_of))
    index = {g: i for i, g in enumerate(order)}
    A = graph.adjacency()
    (r, c), v = A.indices(), A.values()
    gr = torch.tensor([index[group_of[x]] for x in r.tolist()], dtype=torch.long)
    gc = torch.tensor([index[group_of[x]] for x in c.tolist()], dtype=torch.long)
    keep = gr != gc
    out = torch.zeros(len(order), len(order)).index_put_((gr[keep], gc[keep]), v[keep], accumulate=True)
    return [names.get(g, labels[g]) for g in order], out


def supernode_figure(graph: Any, *, targets: int = 1, min_share: float = 0.03):
    """The supernodes as one diagram: each group a box at its members' mean (position, layer), the
    prompt's tokens below and the first ``targets`` targets above, arrows for the summed *direct*
    edges between them (``collapse``; paths through features in no supernode are not drawn) of at
    least ``min_share`` of the strongest, width by |weight|, blue positive and red negative."""
    import matplotlib.pyplot as plt

    groups = graph.extra.get("supernodes") or []
    if not groups:
        raise GraphError("the graph has no supernodes: name them (set_supernodes) or propose them (group_features)")
    labels, A = collapse(graph, groups)
    x, y = graph.layout()
    where = {n: i for i, n in enumerate(graph.node_ids())}
    names = [str(g[0]) for g in groups]
    at = {str(g[0]): (float(x[[where[n] for n in g[1:]]].mean()), float(y[[where[n] for n in g[1:]]].mean()))
          for g in groups}
    nt = len(graph.targets)
    for i in range(graph.token_slice.start, graph.token_slice.stop):
        at[labels[labels.index(graph.node_labels()[i])]] = (float(i - graph.token_slice.start), -1.0)
    for t, i in enumerate(range(graph.n_nodes - nt, graph.n_nodes)):
        if t < targets:
            at[graph.node_labels()[i]] = (float(graph.n_pos - 1) + 0.6 * t, float(graph.n_layers))
    index = {name: labels.index(name) for name in at}
    shown = list(at)
    sub = A[[index[n] for n in shown]][:, [index[n] for n in shown]]
    top = float(sub.abs().max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * graph.n_pos + 3), 7))
    for r, c in (sub.abs() >= min_share * top).nonzero().tolist():
        (x0, y0), (x1, y1), w = at[shown[c]], at[shown[r]], float(sub[r, c])
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="-|>", lw=0.4 + 4 * abs(w) / top, alpha=0.7,
                                                            color="#2b6cb0" if w > 0 else "#c53030", shrinkA=12, shrinkB=12))
    for name, (px, py) in at.items():
        kind = "supernode" if name in names else ("target" if py == graph.n_layers else "token")
        ax.text(px, py, name if kind == "supernode" else name.split(" @")[0], ha="center", va="center", fontsize=7,
                wrap=True, bbox=dict(boxstyle="round", fc={"supernode": "#fbd38d", "target": "#d6bcfa",
                                                          "token": "#c6f6d5"}[kind], ec="#4a5568", lw=0.6))
    ax.set_xlim(-0.8, graph.n_pos - 0.2 + 0.6 * max(0, targets - 1))
    ax.set_ylim(-2, graph.n_layers + 1.5)
    ax.set_xticks(range(graph.n_pos), [repr(t)[1:-1] for t in graph.tokens], rotation=30, ha="right", fontsize=7)
    ax.set(xlabel="position", ylabel="layer", title=f"{len(groups)} supernodes: direct edges ≥ {min_share:.0%} of the strongest")
    fig.tight_layout()
    return fig


MAX_EDGES = 4000  # a browser draws this many of the pruned graph's strongest edges (the JSON export has all)


def view_data(graph: Any, node_threshold: float = 0.8, edge_threshold: float = 0.98, max_edges: int = MAX_EDGES) -> dict:
    """The viewer's data: nodes with their place (position; layer: −1 for tokens, ``n_layers`` for targets —
    the viewer lays them out), the ``max_edges`` strongest edges, supernodes, cards and attention explanations
    of the pruned graph."""
    kept = graph.prune(node_threshold, edge_threshold)
    ids, labels = graph.node_ids(), graph.node_labels()
    cards = graph.extra.get("cards", {})
    explained = graph.extra.get("explanations", {})
    supernodes = [list(s) for s in graph.extra.get("supernodes", [])]
    parent = {n: s[0] for s in supernodes for n in s[1:]}
    shown = kept.nodes.nonzero()[:, 0].tolist()
    nodes = []
    for i in shown:
        kind = graph.node_kind(i)
        pos, layer = graph.place(i)
        node = {"id": ids[i], "label": labels[i], "kind": kind, "pos": pos, "layer": layer,
                "influence": round(float(kept.cumulative[i]), 4)}
        if kind == "feature":
            layer, _, f = graph.features[i].tolist()
            a = float(graph.activations[i])
            node["activation"] = round(a, 4) if math.isfinite(a) else None  # an imported graph may not carry it
            node["card"] = cards.get(f"{layer}_{f}")
            if f"{layer}_{f}" in explained:
                node["explanation"] = explained[f"{layer}_{f}"]
        if ids[i] in parent:
            node["parent"] = parent[ids[i]]
        nodes.append(node)
    A = graph.adjacency()
    (r, c), v = A.indices(), A.values()
    chosen = kept.edges.nonzero()[:, 0]
    if len(chosen) > max_edges:
        chosen = chosen[torch.argsort(v[chosen].abs(), descending=True)[:max_edges]]
    edges = [{"s": ids[int(c[e])], "t": ids[int(r[e])], "w": round(float(v[e]), 5)} for e in chosen.tolist()]
    present = {n["id"] for n in nodes}
    supernodes = [[s[0], *[n for n in s[1:] if n in present]] for s in supernodes]
    return {"tokens": list(graph.tokens), "n_layers": graph.n_layers, "nodes": nodes, "edges": edges,
            "edges_total": int(kept.edges.sum()),
            "supernodes": [s for s in supernodes if len(s) > 1], "attention": graph.extra.get("attention", {}),
            "targets": list(graph.targets)}
