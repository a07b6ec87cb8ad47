"""Attention behind an attribution graph's edges: which heads carry an edge, and why they attend.

An edge whose source sits at position p and whose target at q ≠ p crosses positions, so attention
carries it. In the local replacement model everything but the patterns is linear, so:

* **head loading** of head (m, h) on edge s → t: the part of the edge that goes from the source's
  write, straight through the residual stream at p, into head h of layer m's value, and from its
  output on to t along any frozen path —
  Σ_q' pattern[m, h, q', p] · ∂pre_t/∂z[m, h, q'] · W_V^h N_{m,p}(v_s), with v_s the source's write
  and N_{m,p} layer m's attention norm frozen at p. ``rest`` is the part through no head directly
  (multi-hop paths, skips first).
* **QK attribution** of that head at its query position q' (the one carrying most of its loading):
  the pre-softmax score q·k (after rotary, before any soft-cap) split into the sources' shares of
  the query (q_a · k) and of the key (q · k_b) — each side sums to the score less its bias part.

circuit-tracer 0.5.0 has neither (its users ask for both: decoderesearch/circuit-tracer#53).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .. import names
from ..models.model import Model
from .attribute import backward_rows, Sources, logit_target
from .graph import AttributionGraph
from ..models.placement import qkv_rows, weight_rows
from .replacement import GraphError, LocalReplacement
from ..models.norms import frozen


def _index(graph: AttributionGraph, node_id: str, ids: list[str], receives: bool) -> int:
    """A node's index from its id; an id an error shares with a layer-0 feature means the feature
    when it receives the edge (errors receive none), else the error."""
    hits = [i for i, n in enumerate(ids) if n == node_id]
    if not hits:
        raise GraphError(f"{node_id!r} is not a node of this graph")
    if len(hits) > 1:
        hits.sort(key=lambda i: (graph.node_kind(i) == "error") == receives)
    return hits[0]


def _node(graph: AttributionGraph, i: int, rep: LocalReplacement):
    """(kind, layer it is written after (−1 for tokens) or read at, position, feature / target index,
    activation) of node ``i``."""
    kind = graph.node_kind(i)
    nf, P = graph.n_features, graph.n_pos
    if kind == "feature":
        layer, pos, f = graph.features[i].tolist()
        return kind, layer, pos, f, float(graph.activations[i])
    if kind == "error":
        layer, pos = divmod(i - nf, P)
        return kind, layer, pos, None, None
    if kind == "token":
        return kind, -1, i - nf - graph.n_layers * P, None, None
    return kind, graph.n_layers, P - 1, i - nf - (graph.n_layers + 1) * P, None


def _writes(graph: AttributionGraph, rep: LocalReplacement, src) -> dict[int, torch.Tensor]:
    """The source's residual writes: {layer after which it is written: vector [d]} (tokens: −1)."""
    kind, layer, pos, f, act = src
    if kind == "feature":
        rows = rep.stack.decoder_rows(layer, torch.tensor([f]))[0] * act  # [n_out, d]
        return {layer + j: rows[j] for j in range(rows.shape[0])}
    if kind == "error":
        return {layer: rep.errors[layer, pos].float()}
    if kind == "token":
        return {-1: rep.embed[pos].float()}
    raise GraphError("a target node is not a source")


def _value_dirs(model: Model, rep: LocalReplacement, run_x: dict[int, torch.Tensor], layer: int, pos: int,
                v: torch.Tensor) -> torch.Tensor:
    """[kv heads, d_head]: W_V^g N_{layer,pos}(v) — what v at position ``pos`` adds to each value."""
    a, c = model.adapter, model.cfg
    mods = dict(model.hf.named_modules())
    block = f"{a.blocks}.{layer}"
    if a.attn_norm is not None:
        norm = mods[f"{block}.{a.attn_norm}"]
        x = run_x[layer][pos].float()
        y = norm(x[None].to(next(norm.parameters()).dtype)).float()
        n = (frozen(norm, torch.stack([x, x + v]), torch.cat([y, y]), reference=True)[1] - y[0])
    else:
        n = v
    out = torch.zeros(c.n_kv_heads, c.d_head)
    for path, slices in qkv_rows(model):
        W = weight_rows(mods[f"{block}.{path}"]).detach().float()
        for local, rows in slices:
            if local >= c.n_heads + c.n_kv_heads:  # values: local H + K + g
                out[local - c.n_heads - c.n_kv_heads] = W[rows] @ n
    return out


def explain_edges(graph: AttributionGraph, model: Model, transcoders: Any, edges: Sequence[tuple[str, str]] | None = None,
                  *, top_edges: int = 20, heads: int = 3, terms: int = 6, node_threshold: float = 0.8,
                  edge_threshold: float = 0.98, batch_size: int = 16) -> dict[str, dict]:
    """Head loadings and QK attributions of ``edges`` ((source id, target id) pairs; default: the
    ``top_edges`` strongest edges of the pruned graph that cross positions) — stored in
    ``graph.extra["attention"]`` under ``"source→target"`` (what the viewer shows on an edge click)."""
    c = model.cfg
    rep = LocalReplacement(model, transcoders, graph.token_ids, prepend=False)
    ids = graph.node_ids()
    A = graph.adjacency()
    (r, col), v = A.indices(), A.values()
    weight = {(int(cc), int(rr)): float(vv) for rr, cc, vv in zip(r.tolist(), col.tolist(), v.tolist())}
    if edges is None:
        kept = graph.prune(node_threshold, edge_threshold)
        cand = [(abs(float(v[e])), int(col[e]), int(r[e])) for e in kept.edges.nonzero()[:, 0].tolist()]
        pairs = []
        for _, s, t in sorted(cand, reverse=True):
            if _node(graph, s, rep)[2] != _node(graph, t, rep)[2]:
                pairs.append((s, t))
            if len(pairs) >= top_edges:
                break
    else:
        pairs = [(_index(graph, s, ids, False), _index(graph, t, ids, True)) for s, t in edges]
    lin = rep.linear_run(max(1, batch_size), attention=True)
    x_attn = _attention_inputs(model, rep)
    index, acts = rep.active()
    src_cols = Sources(rep, index, acts)
    col_ids = [f"{l}_{f}_{p}" for l, p, f in index.tolist()] + ids[graph.n_features:graph.n_features
                                                                      + (graph.n_layers + 1) * graph.n_pos]
    out: dict[str, dict] = dict(graph.extra.get("attention", {}))
    for start in range(0, len(pairs), lin.rows):
        batch = pairs[start:start + lin.rows]
        grads_z = _target_grads_at_z(graph, model, rep, lin, [t for _, t in batch])
        qk_rows: list[tuple[int, int, int, int, int, str]] = []  # (edge, layer, head, query pos, key pos, label)
        for e, (s, t) in enumerate(batch):
            src, tgt = _node(graph, s, rep), _node(graph, t, rep)
            p = src[2]
            loads = []
            for written, vec in _writes(graph, rep, src).items():
                for m in range(written + 1, min(tgt[1] + (0 if tgt[0] == "target" else 1), c.n_layers)):
                    V = _value_dirs(model, rep, x_attn, m, p, vec)  # [K, d_head]
                    pat = lin.attention[("pattern", m)][0, :, :, p].T.float()  # kept as [1, q, H, k]: → [H, q]
                    G = grads_z[m][e].float()  # [q, H, d_head]
                    kv = torch.arange(c.n_heads) // (c.n_heads // c.n_kv_heads)
                    per_q = torch.einsum("hq,qhd,hd->hq", pat, G, V[kv])  # [H, q']
                    for h in range(c.n_heads):
                        loads.append((float(per_q[h].sum().detach()), m, h, int(per_q[h].abs().argmax())))
            merged: dict[tuple[int, int], list] = {}
            for val, m, h, q in loads:
                entry = merged.setdefault((m, h), [0.0, q])
                entry[0] += val
            ranked = sorted(merged.items(), key=lambda kv_: -abs(kv_[1][0]))
            edge_w = weight.get((s, t), 0.0)
            label = lambda m, h: names.head(m, h).label  # noqa: E731
            info = {"heads": [[label(m, h), round(v_[0], 6)] for (m, h), v_ in ranked[:max(heads, 8)]],
                    "rest": round(edge_w - sum(v_[0] for v_ in merged.values()), 6), "edge": edge_w, "qk": {}}
            out[f"{ids[s]}→{ids[t]}"] = info
            for (m, h), (val, q) in ranked[:heads]:
                qk_rows.append((e, m, h, q, p, label(m, h)))
        _qk(model, rep, lin, src_cols, col_ids, qk_rows, [f"{ids[s]}→{ids[t]}" for s, t in batch], out, terms)
    graph.extra["attention"] = out
    return out


def _attention_inputs(model: Model, rep: LocalReplacement) -> dict[int, torch.Tensor]:
    """Each layer's attention-norm input [pos, d] on the clean prompt (where N_{m,p} is frozen)."""
    a = model.adapter
    if a.attn_norm is None:
        return {}
    sites = [f"{a.blocks}.{m}.{a.attn_norm}.input" for m in range(model.cfg.n_layers)]
    with torch.no_grad():
        run = model.run(rep.prompt, cache=sites)
    return {m: run.cache[s][0] for m, s in enumerate(sites)}


def _target_grads_at_z(graph: AttributionGraph, model: Model, rep: LocalReplacement, lin, targets: list[int]):
    """∂pre_t/∂z for each target t (row i of the linear run): {layer: [rows, pos, H, d_head]}."""
    inject = []
    for t in targets:
        kind, layer, pos, extra, _ = _node(graph, t, rep)
        if kind == "feature":
            inject.append((layer, pos, rep.stack.encoder_rows(layer, torch.tensor([extra]))[0]))
        elif kind == "target":
            tid = graph.target_ids[extra]
            if tid < 0:
                raise GraphError(f"{graph.node_ids()[t]}: a custom-direction target cannot be explained (its direction "
                                 "is not stored)")
            inject.append((None, pos, logit_target(model, tid, 1.0).vector))
        else:
            raise GraphError(f"{graph.node_ids()[t]} is a {kind}: only features and targets receive edges")
    zs = [lin.attention[("z", m)] for m in range(model.cfg.n_layers)]
    return dict(enumerate(backward_rows(lin, inject, zs)))


def _qk(model: Model, rep: LocalReplacement, lin, src_cols: Sources, col_ids: list[str], rows, keys, out, terms):
    """Query- and key-side shares of each chosen head's score, one row per (edge, head) and side."""
    c = model.cfg
    mods = dict(model.hf.named_modules())
    group = c.n_heads // c.n_kv_heads
    for side in ("query", "key"):
        for start in range(0, len(rows), lin.rows):
            chunk = rows[start:start + lin.rows]
            total = 0.0
            scores = []
            for r, (e, m, h, q, p, label) in enumerate(chunk):
                attn = mods[f"{model.adapter.blocks}.{m}.{model.adapter.attn}"]
                scale = float(getattr(attn, "scaling", c.d_head ** -0.5))
                qv, kv = lin.attention[("q", m)][r, q, h], lin.attention[("k", m)][r, p, h // group]
                score = scale * ((qv * kv.detach()) if side == "query" else (qv.detach() * kv)).sum()
                scores.append(float(score.detach()))
                total = total + score
            got = torch.autograd.grad(total, [lin.embed_leaf, *lin.out_leaves], retain_graph=True, allow_unused=True)
            got = [g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(got, [lin.embed_leaf, *lin.out_leaves])]
            k = len(chunk)
            contrib = src_cols.rows(got[0][:k], [g[:k] for g in got[1:]])
            for r, (e, m, h, q, p, label) in enumerate(chunk):
                top = torch.argsort(contrib[r].abs(), descending=True)[:terms].tolist()
                entry = out[f"{keys[e]}"]["qk"].setdefault(label, {"score": round(scores[r], 5), "query_pos": q, "key_pos": p})
                entry[side] = [[col_ids[j], round(float(contrib[r, j]), 5)] for j in top if float(contrib[r, j]) != 0]
                entry[f"{side}_total"] = round(float(contrib[r].sum()), 5)
