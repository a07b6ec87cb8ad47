"""Attribution graphs as circuit-tracer / Neuronpedia graph JSON.

The document (what circuit-tracer's ``create_graph_files`` writes and Neuronpedia's graph viewer
reads): ``metadata`` (slug, scan, transcoder_list, prompt_tokens, prompt, node_threshold,
schema_version), ``qParams`` (pinnedIds, supernodes — each ``[name, id, id, ...]`` — linkType,
clickedId, sg_pos), ``nodes`` and ``links`` (source, target, weight) of the *pruned* graph.
Node ids: ``L_F_P`` features, ``0_L_P`` errors, ``E_{token}_{P}`` embeddings, ``{L+1}_{token}_{P}``
logits; a node's ``feature_type`` says which, because an error's id can equal a layer-0
feature's (``0_3_5`` is error (3, 5) or feature 3 of layer 0 at position 5). Inside mechscope an error
is ``err_L_P`` (``AttributionGraph.node_ids``): the writer and the reader translate.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import torch

from ..results import Provenance
from .graph import AttributionGraph

FEATURE_TYPES = {"cross layer transcoder": "feature", "transcoder": "feature", "mlp reconstruction error": "error",
                 "embedding": "token", "logit": "target"}


class GraphJSONError(ValueError):
    """A document that is not an attribution graph this reader can use."""


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def to_neuronpedia(graph: AttributionGraph, *, slug: str = "mechscope-graph", scan: str | None = None,
                   node_threshold: float = 0.8, edge_threshold: float = 0.98,
                   supernodes: list[list[str]] | None = None, clerps: dict[str, str] | None = None) -> dict:
    """The pruned ``graph`` as one JSON-ready dict (see the module docstring). A feature's ``clerp``
    (its label) comes from ``clerps`` by node id, else from its explanation (``explain.explain_graph``), else
    from its card (``graph_cards``) if it has one.
    ``supernodes`` default to the graph's own."""
    kept = graph.prune(node_threshold, edge_threshold)
    L, P, nf = graph.n_layers, graph.n_pos, graph.n_features
    own = graph.node_ids()
    ids = [f"0_{graph.place(i)[1]}_{graph.place(i)[0]}" if graph.node_kind(i) == "error" else n for i, n in enumerate(own)]
    exported = dict(zip(own, ids))  # mechscope's id -> the document's
    cards = graph.extra.get("cards") or {}
    explained = graph.extra.get("explanations") or {}
    labels = {k: c["label"] for k, c in cards.items()} | {k: e["explanation"] for k, e in explained.items()}
    clerps = {**graph.extra.get("clerps", {}), **{ids[i]: labels[f"{layer}_{f}"] for i, (layer, _, f) in enumerate(graph.features.tolist())
                 if f"{layer}_{f}" in labels}, **(clerps or {})}
    supernodes = graph.extra.get("supernodes") if supernodes is None else supernodes
    nodes, present = [], set()
    cum = kept.cumulative
    for i in kept.nodes.nonzero()[:, 0].tolist():
        kind = graph.node_kind(i)
        node: dict[str, Any] = {"node_id": ids[i], "run_idx": 0, "reverse_ctx_idx": 0, "token_prob": 0.0,
                                "is_target_logit": False, "influence": float(cum[i]), "clerp": clerps.get(ids[i], "")}
        if kind == "feature":
            layer, pos, f = graph.features[i].tolist()
            node.update(feature=_cantor(layer, f), layer=str(layer), ctx_idx=pos, feature_type="cross layer transcoder",
                        jsNodeId=f"{layer}_{f}-0", activation=float(graph.activations[i]))
        elif kind == "error":
            pos, layer = graph.place(i)
            node.update(feature=-1, layer=str(layer), ctx_idx=pos, feature_type="mlp reconstruction error",
                        jsNodeId=f"{layer}_{pos}-0", activation=None)
        elif kind == "token":
            pos = i - nf - L * P
            node.update(feature=pos, layer="E", ctx_idx=pos, feature_type="embedding",
                        jsNodeId=f"E_{graph.token_ids[pos]}-{pos}", activation=None)
        else:
            t = i - nf - (L + 1) * P
            vocab = graph.target_ids[t] if graph.target_ids[t] >= 0 else t
            prob = float(graph.target_weights[t])
            node.update(feature=vocab, layer=str(L + 1), ctx_idx=P - 1, feature_type="logit", token_prob=prob,
                        is_target_logit=t == 0, jsNodeId=f"L_{vocab}-{P - 1}", activation=None,
                        clerp=clerps.get(ids[i], f'Output "{graph.targets[t]}" (p={prob:.3f})'))
        nodes.append(node)
        present.add(i)
    adj = graph.adjacency()
    (r, c), v = adj.indices(), adj.values()
    links = [{"source": ids[int(c[e])], "target": ids[int(r[e])], "weight": float(v[e])}
             for e in kept.edges.nonzero()[:, 0].tolist() if int(c[e]) in present and int(r[e]) in present]
    linked = {x for link in links for x in (link["source"], link["target"])}
    nodes = [n for n in nodes if n["node_id"] in linked or n["feature_type"] in ("embedding", "logit")]
    kept_ids = {n["node_id"] for n in nodes}  # a supernode lists only the members the export keeps
    shown = [[s[0], *members] for s in (supernodes or [])
             if (members := [exported.get(m, m) for m in s[1:] if exported.get(m, m) in kept_ids])]
    return {
        "metadata": {"slug": slug, "scan": scan or graph.transcoders or "mechscope", "transcoder_list": [],
                     "prompt_tokens": list(graph.tokens), "prompt": graph.prompt, "node_threshold": node_threshold,
                     "schema_version": 1,
                     "mechscope": {"n_layers": L, "token_ids": list(graph.token_ids), "edge_threshold": edge_threshold,
                                   "target_labels": list(graph.targets)}},
        "qParams": {"pinnedIds": [], "supernodes": shown, "linkType": "both",
                    "clickedId": "", "sg_pos": ""},
        "nodes": nodes, "links": links,
    }


def _own_supernodes(supernodes: Any, index: dict[str, list[tuple[int, int, str]]], nf: int, P: int) -> list:
    """A document's supernodes in mechscope's ids: a member the document names ``0_L_P`` is the feature where it
    has one of that id, else error (L, P) — ``err_L_P``."""
    out = []
    for s in supernodes if isinstance(supernodes, list) else []:
        if isinstance(s, list) and s and all(isinstance(m, str) for m in s):
            members = []
            for m in s[1:]:
                kinds = {kind: i for i, _, kind in index.get(m, [])}
                if "error" in kinds and "feature" not in kinds:
                    i = kinds["error"] - nf
                    m = f"err_{i // P}_{i % P}"
                members.append(m)
            out.append([s[0], *members])
    return out


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise GraphJSONError(msg)


def from_neuronpedia(doc: str | bytes | dict) -> AttributionGraph:
    """An ``AttributionGraph`` of the nodes and links in a circuit-tracer / Neuronpedia graph JSON.

    Only what the document holds comes back: its (pruned) features, edges and targets; node values
    it does not carry (pre-activations, biases) are NaN. Ids are resolved by ``feature_type``; a link
    from an id two nodes share goes to the one that can feed its target (a feature of layer 0 or
    the error of that layer), else to the feature, and ``extra["ambiguous_links"]`` counts them."""
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as err:
            raise GraphJSONError(f"not a graph JSON document: {err}") from None
    _need(isinstance(doc, dict), f"not a graph JSON document: the top level is a {type(doc).__name__}, not an object")
    missing = [k for k in ("metadata", "nodes", "links") if k not in doc]
    _need(not missing, f"not a graph JSON document: missing {missing} (have {sorted(doc)})")
    meta, nodes, links = doc["metadata"], doc["nodes"], doc["links"]
    _need(isinstance(nodes, list) and isinstance(links, list), "'nodes' and 'links' must be lists")
    _need(isinstance(meta, dict) and isinstance(meta.get("prompt_tokens"), list),
          "metadata.prompt_tokens (the prompt's tokens) is missing")
    tokens = [str(t) for t in meta["prompt_tokens"]]
    P = len(tokens)
    parsed = []
    for k, n in enumerate(nodes):
        _need(isinstance(n, dict) and isinstance(n.get("node_id"), str), f"node {k} has no node_id")
        ftype = n.get("feature_type")
        _need(ftype in FEATURE_TYPES, f"node {n['node_id']!r}: feature_type {ftype!r}; valid: {sorted(FEATURE_TYPES)}")
        kind = FEATURE_TYPES[ftype]
        parts = n["node_id"].split("_")
        try:
            if kind == "feature":
                layer, f, pos = int(parts[0]), int(parts[1]), int(parts[2])
                parsed.append((kind, (layer, pos, f), n))
            elif kind == "error":
                layer, pos = int(parts[1]), int(parts[2])
                parsed.append((kind, (layer, pos), n))
            elif kind == "token":
                _need(parts[0] == "E", f"node {n['node_id']!r}: an embedding's id is E_{{token}}_{{pos}}")
                parsed.append((kind, (int(parts[1]), int(parts[2])), n))
            else:
                parsed.append((kind, (int(parts[0]), int(parts[1]), int(parts[2])), n))
        except (ValueError, IndexError):
            raise GraphJSONError(f"node id {n['node_id']!r} does not match its feature_type {ftype!r}") from None
    mech = meta.get("mechscope") if isinstance(meta.get("mechscope"), dict) else {}
    layers = [key[0] for kind, key, _ in parsed if kind == "target"]
    L = int(mech.get("n_layers", layers[0] - 1 if layers else 1 + max([k[0] for kd, k, _ in parsed if kd != "token"],
                                                                         default=0)))
    token_ids = list(mech.get("token_ids", [0] * P))
    for kind, key, _ in parsed:
        if kind == "token":
            _need(0 <= key[1] < P, f"embedding E_{key[0]}_{key[1]}: position outside the {P} prompt tokens")
            token_ids[key[1]] = key[0]
    feats = sorted({key for kind, key, _ in parsed if kind == "feature"})
    for layer, pos, _ in feats:
        _need(0 <= layer < L and 0 <= pos < P, f"feature at layer {layer}, position {pos}: outside {L} layers × {P} positions")
    targets = [(key, n) for kind, key, n in parsed if kind == "target"]
    nf, T = len(feats), len(targets)
    index: dict[str, list[tuple[int, int, str]]] = {}  # id -> [(node index, layer it sits at, kind)]
    acts = torch.full((nf,), float("nan"))
    fpos = {f: i for i, f in enumerate(feats)}
    for kind, key, n in parsed:
        if kind == "feature":
            i, lay = fpos[key], key[0]
            if n.get("activation") is not None:
                acts[i] = float(n["activation"])
        elif kind == "error":
            i, lay = nf + key[0] * P + key[1], key[0]
        elif kind == "token":
            i, lay = nf + L * P + key[1], -1
        else:
            i, lay = nf + (L + 1) * P + [t[0] for t in targets].index(key), L
        index.setdefault(n["node_id"], []).append((i, lay, kind))
    rows, cols, weights, ambiguous = [], [], [], 0
    for k, link in enumerate(links):
        _need(isinstance(link, dict) and {"source", "target", "weight"} <= set(link), f"link {k} needs source, target, weight")
        w = link["weight"]
        _need(isinstance(w, (int, float)) and math.isfinite(w), f"link {k}: weight {w!r} is not a finite number")
        for end in ("source", "target"):
            _need(link[end] in index, f"link {k}: {end} {link[end]!r} is not a node of the document")
        t_idx, t_layer, _ = min(index[link["target"]], key=lambda c: c[2] == "error")  # errors receive nothing
        cands = index[link["source"]]
        if len(cands) > 1:
            feeding = [c for c in cands if c[1] < t_layer]
            ambiguous += len(feeding) != 1
            cands = feeding or cands
        rows.append(t_idx)
        cols.append(cands[0][0])
        weights.append(float(w))
    labels = [str(n.get("clerp", "")) for _, n in targets]
    quoted = [re.match(r'Output "(.*)" \(p=', s) for s in labels]
    target_labels = mech.get("target_labels") or [q.group(1) if q else s for q, s in zip(quoted, labels)]
    n_nodes = nf + (L + 1) * P + T
    order = torch.tensor(rows, dtype=torch.long) * n_nodes + torch.tensor(cols, dtype=torch.long)
    edge_index = torch.stack([torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)]).reshape(2, -1)
    weight = torch.tensor(weights, dtype=torch.float32)
    sort = torch.argsort(order) if len(order) else torch.zeros(0, dtype=torch.long)
    g = AttributionGraph(
        provenance=Provenance(model=str(meta.get("scan", "")), fingerprint="", params={"slug": meta.get("slug", "")}),
        prompt=str(meta.get("prompt", "")), tokens=tokens, token_ids=[int(t) for t in token_ids], n_layers=L,
        features=torch.tensor(feats, dtype=torch.long).reshape(-1, 3), activations=acts, pre=torch.full((nf,), float("nan")),
        targets=[str(t) for t in target_labels], target_ids=[key[1] for key, _ in targets],
        target_weights=torch.tensor([float(n.get("token_prob", 0.0)) for _, n in targets]),
        target_values=torch.full((T,), float("nan")), biases=torch.full((nf + T,), float("nan")),
        edge_index=edge_index[:, sort], edge_weight=weight[sort], n_active=nf, transcoders=str(meta.get("scan", "")),
        extra={"imported": True, "ambiguous_links": ambiguous,
               "supernodes": _own_supernodes((doc.get("qParams") or {}).get("supernodes", []), index, nf, P),
               "clerps": {n["node_id"]: str(n["clerp"]) for kind, _, n in parsed if kind == "feature" and n.get("clerp")}})
    return g
