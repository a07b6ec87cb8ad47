"""Attribution: a prompt traced through transcoder features across layers into an ``AttributionGraph``.

Nodes (circuit-tracer's order): the active features (layer, position, feature) by layer, then
position, then feature — none at the first position when it is a special token; an error node per
(layer, position), layer-major; a token node per position; the output targets. Rows of the
adjacency are targets and columns sources; an edge is the direct effect of the source on the
target's pre-activation in the local replacement model (``tracing/replacement.py``):
a_s · decoder_s · ∂pre_t/∂(residual write), with attention patterns and norm scales frozen.

Edges come from batched backward passes: one forward of ``batch_size`` copies of the prompt
through the linearised model, then per batch of targets one backward that injects each target's
input vector (its encoder row at its layer's input; a logit's demeaned unembedding row at the
final norm's output) in its own copy. Batches are independent: under torchrun the ranks divide
them (``distributed.sweep``; each rank runs the linearised forward once), and inside
``distributed.records`` finished batches are kept and reused. With ``max_feature_nodes`` the
features are visited in order of their influence on the targets, refreshed every
``update_interval`` batches (circuit-tracer's rule): each refresh's batches are one divided sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed
from ..models.model import Model
from ..results import Provenance
from .graph import AttributionGraph
from .replacement import GraphError, LinearRun, LocalReplacement


@dataclass
class Target:
    """An output target: a direction at the final norm's output at the last position."""

    label: str
    weight: float
    vector: torch.Tensor  # [d_model]
    token: int = -1  # vocabulary id, or −1 for a custom direction
    bias: float = 0.0  # the constant the unembedding adds along the direction


def logit_target(model: Model, token: int | str, weight: float) -> Target:
    """The logit of ``token`` less the mean logit over the vocabulary (unembedding demeaned)."""
    t = model.token_id(token)
    w = model.unembed.weight.detach().float()
    m = model.multiplier("logit")
    b = model.unembed.bias
    bias = float(b[t] - b.mean()) * m if b is not None else 0.0
    label = model.tokenizer.decode([t])
    return Target(label, float(weight), (w[t] - w.mean(0)) * m, t, bias)


def logit_difference(model: Model, a: int | str, b: int | str, weight: float = 1.0) -> Target:
    """logit(a) − logit(b) as a target."""
    ta, tb = logit_target(model, a, weight), logit_target(model, b, weight)
    return Target(f"logit({ta.label})−logit({tb.label})", float(weight), ta.vector - tb.vector, -1, ta.bias - tb.bias)


def salient_targets(model: Model, logits: torch.Tensor, max_logits: int = 10, probability: float = 0.95) -> list[Target]:
    """The most likely next tokens until their probabilities sum to ``probability`` (at most ``max_logits``)."""
    p = torch.softmax(logits.float(), -1)
    top_p, top_i = p.topk(min(max_logits, p.shape[-1]))
    keep = int(torch.searchsorted(torch.cumsum(top_p, 0), torch.tensor(probability))) + 1
    return [logit_target(model, int(i), float(q)) for q, i in zip(top_p[:keep], top_i[:keep])]


def _targets(model: Model, rep: LocalReplacement, targets: Any, max_logits: int, probability: float) -> list[Target]:
    if targets is None:
        return salient_targets(model, rep.logits, max_logits, probability)
    if isinstance(targets, (str, int, Target)):
        targets = [targets]
    p = torch.softmax(rep.logits, -1)
    out = []
    for t in targets:
        if isinstance(t, Target):
            out.append(t)
        elif isinstance(t, (str, int)):
            out.append(logit_target(model, t, float(p[model.token_id(t)])))
        elif isinstance(t, tuple) and len(t) in (2, 3) and isinstance(t[-1], torch.Tensor):
            vec = t[-1].detach().float().flatten()
            if vec.shape[0] != model.cfg.d_model or not torch.isfinite(vec).all():
                raise GraphError(f"target {t[0]!r}: a direction must be {model.cfg.d_model} finite numbers; "
                                 f"got shape {tuple(t[-1].shape)}")
            out.append(Target(str(t[0]), float(t[1]) if len(t) == 3 else 1.0, vec))
        else:
            raise GraphError(f"target {t!r}: give a token (string or id), (label, direction), "
                             "(label, weight, direction) or a Target")
    return out


@dataclass
class Sources:
    """Every source column's vectors, for contracting gradients into edge rows."""

    rep: LocalReplacement
    index: torch.Tensor  # [n, 3] active features
    acts: torch.Tensor  # [n]

    def __post_init__(self):
        self.by_layer = []  # (layer, column indices, positions, scaled decoder rows [k, n_out, d])
        self.segments = []  # (layer, position, first column, end column, scaled decoder rows [k, n_out, d])
        for layer in range(self.rep.model.cfg.n_layers):
            cols = (self.index[:, 0] == layer).nonzero()[:, 0]
            if not len(cols):
                continue
            dec = self.rep.stack.decoder_rows(layer, self.index[cols, 2]) * self.acts[cols, None, None]
            pos = self.index[cols, 1]
            self.by_layer.append((layer, cols, pos, dec))
            bounds = torch.cat([torch.tensor([0]), (pos[1:] != pos[:-1]).nonzero()[:, 0] + 1, torch.tensor([len(pos)])])
            for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):  # features are sorted by (layer, position)
                self.segments.append((layer, int(pos[s]), int(cols[s]), int(cols[e - 1]) + 1, dec[s:e]))

    @property
    def n_features(self) -> int:
        return len(self.index)

    def rows(self, grads_embed: torch.Tensor, grads_out: list[torch.Tensor]) -> torch.Tensor:
        """Edge rows [k, n_features + L·pos + pos] from gradients at the embedding [k, pos, d] and at
        each layer's MLP output [k, pos, d]: one matrix product per (layer, position) of features."""
        rep = self.rep
        L, P = rep.model.cfg.n_layers, rep.n_pos
        k = grads_embed.shape[0]
        out = torch.empty(k, self.n_features + L * P + P)
        grads = [g.float() for g in grads_out]
        for layer, pos, start, end, dec in self.segments:
            acc = grads[layer][:, pos] @ dec[:, 0].T
            for j in range(1, dec.shape[1]):  # a cross-layer transcoder's writes to later layers
                acc += grads[layer + j][:, pos] @ dec[:, j].T
            out[:, start:end] = acc
        errs = torch.einsum("lkpd,lpd->klp", torch.stack(grads), rep.errors.float())
        out[:, self.n_features:self.n_features + L * P] = errs.reshape(k, L * P)
        out[:, self.n_features + L * P:] = torch.einsum("kpd,pd->kp", grads_embed.float(), rep.embed)
        return out


def backward_rows(lin: LinearRun, inject: list[tuple[int | None, int, torch.Tensor]],
              wrt: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """One backward pass: copy i gets ``inject[i]`` = (layer or None for the final norm, position,
    vector) as its gradient at that layer's transcoder input; returns the gradients [k, ...] at
    ``wrt`` (default: the embedding, then every MLP output — what edges are read from)."""
    k = len(inject)
    grads: dict[int | None, torch.Tensor] = {}
    for i, (layer, pos, vec) in enumerate(inject):
        where = lin.final if layer is None else lin.inputs[layer]
        g = grads.setdefault(layer, torch.zeros_like(where))
        g[i, pos] = vec.to(g.dtype)
    outs = [lin.final if layer is None else lin.inputs[layer] for layer in grads]
    wrt = [lin.embed_leaf, *lin.out_leaves] if wrt is None else wrt
    got = torch.autograd.grad(outs, wrt, list(grads.values()), retain_graph=True, allow_unused=True)
    return [(g if g is not None else torch.zeros_like(x))[:k].detach() for g, x in zip(got, wrt)]


ROW_BUDGET = 4 * 2**30  # bytes of dense edge rows held while a graph is computed
COPY_BUDGET = 3 * 2**30  # bytes of saved activations of the copies of the prompt (long prompts get fewer copies)


def attribution_graph(model: Model, transcoders: Any, prompt: str | list[int], *, targets: Any = None,
                      max_logits: int = 10, logit_probability: float = 0.95, max_feature_nodes: int | None = None,
                      batch_size: int = 32, update_interval: int = 4, prepend: bool = True,
                      progress: bool = True) -> AttributionGraph:
    """The attribution graph of ``prompt`` through ``transcoders`` (per-layer transcoders — a list,
    a dict by layer, a ``TranscoderSet`` — or a ``CrossLayerTranscoder``).

    targets: None (the most likely next tokens up to ``logit_probability``, at most ``max_logits``),
    tokens, ``logit_difference(model, a, b)``, or (label, [weight,] direction [d_model]).
    max_feature_nodes: visit at most this many features, most influential first (None: all).
    batch_size: targets per backward pass (copies of the prompt), fewer for a long prompt so that the
    copies' saved activations stay within ``COPY_BUDGET``.
    """
    from tqdm.auto import tqdm

    from ..checks import positive_int

    positive_int(batch_size, "batch_size")
    positive_int(update_interval, "update_interval")
    if max_feature_nodes is not None:
        positive_int(max_feature_nodes, "max_feature_nodes")
    t0 = time.perf_counter()
    rep = LocalReplacement(model, transcoders, prompt, prepend=prepend)
    tg = _targets(model, rep, targets, max_logits, logit_probability)
    index, acts = rep.active()
    src = Sources(rep, index, acts)
    n_feat, L, P = len(index), model.cfg.n_layers, rep.n_pos
    n_cols = n_feat + (L + 1) * P
    cap = n_feat if max_feature_nodes is None else min(max_feature_nodes, n_feat)
    rows_needed = len(tg) + cap
    c = model.cfg  # each copy keeps every layer's pattern for the backward: copies × L × H × pos² floats
    per_copy = 4 * c.n_layers * c.n_heads * P * P + 4 * 12 * c.n_layers * P * c.d_model
    rows = max(1, min(batch_size, rows_needed, COPY_BUDGET // per_copy))
    lin = rep.linear_run(rows)
    enc = torch.zeros(0, model.cfg.d_model)
    if n_feat:
        enc = torch.cat([rep.stack.encoder_rows(layer, index[cols, 2]) for layer, cols, _, _ in src.by_layer])
    n_rows = len(tg) + cap
    need = n_rows * n_cols * 4
    if need > ROW_BUDGET:
        raise GraphError(f"{n_rows} rows × {n_cols} columns of edges need {need / 2**30:.1f} GiB while they are "
                         f"computed (the budget is {ROW_BUDGET / 2**30:.0f} GiB): give max_feature_nodes (this prompt "
                         f"has {n_feat} active features)")
    rows = torch.zeros(n_rows, n_cols)  # edge rows in visit order: targets first, then features
    row_node = torch.zeros(n_rows, dtype=torch.long)  # each row's node (features' index; targets n_cols + i)
    filled = 0

    def inject(node: int) -> tuple[int | None, int, torch.Tensor]:  # a target (n_cols + i) or feature f's input
        if node >= n_cols:
            return None, P - 1, tg[node - n_cols].vector
        return int(index[node, 0]), int(index[node, 1]), enc[node]

    base_key = _sweep_key(model, rep, tg, index) if distributed.recording() else ""

    def run_rows(nodes: list[int]) -> None:  # one row of edges per node, its backward batches divided among ranks
        nonlocal filled

        def compute(items: range) -> torch.Tensor:
            got = backward_rows(lin, [inject(nodes[i]) for i in items])
            return src.rows(got[0], got[1:])

        key = f"{base_key} {lin.rows} {nodes}" if base_key else ""
        rows[filled:filled + len(nodes)] = distributed.sweep(len(nodes), compute, key=key, per=lin.rows,
                                                             desc="attribution graph")
        row_node[filled:filled + len(nodes)] = torch.as_tensor(nodes)
        filled += len(nodes)
        bar.update(len(nodes))

    bar = tqdm(total=len(tg) + cap, desc="attribution graph", disable=not progress, leave=False)
    run_rows([n_cols + i for i in range(len(tg))])
    visited = torch.zeros(n_feat, dtype=torch.bool)
    target_w = torch.tensor([t.weight for t in tg])
    while int(visited.sum()) < cap:
        if cap == n_feat:
            pending = torch.arange(n_feat)[~visited]
        else:  # influence of every feature on the targets through the rows computed so far
            inf = _partial_influence(rows[:filled], row_node[:filled], n_cols, target_w)[:n_feat]
            order = torch.argsort(inf, descending=True)
            pending = order[~visited[order]][: min(update_interval * lin.rows, cap - int(visited.sum()))]
        run_rows(pending.tolist())
        visited[pending] = True
    bar.close()
    # assemble: selected features keep their order; columns of unvisited features are dropped
    selected = visited.nonzero()[:, 0]
    new_of_old = torch.full((n_cols + len(tg),), -1, dtype=torch.long)
    new_of_old[selected] = torch.arange(len(selected))
    new_of_old[n_feat:] = torch.arange(len(selected), len(selected) + (L + 1) * P + len(tg))
    kept = rows[:filled] if len(selected) == n_feat else rows[:filled][:, torch.cat([selected, torch.arange(n_feat, n_cols)])]
    del rows
    r, c = kept.nonzero(as_tuple=True)
    weight = kept[r, c]
    del kept
    edge_index = torch.stack([new_of_old[row_node[:filled][r]], c])
    order = torch.argsort(edge_index[0] * (len(selected) + (L + 1) * P + len(tg)) + edge_index[1])
    edge_index, weight = edge_index[:, order], weight[order]
    biases, pre, tvals = _biases(rep, index[selected], tg)
    tokens = [model.tokenizer.decode([t]) for t in rep.ids.tolist()]
    graph_prompt = prompt if isinstance(prompt, str) else model.tokenizer.decode(prompt)
    graph = AttributionGraph(
        provenance=Provenance.of(model, prompts=[graph_prompt], transcoders=_describe(transcoders),
                                 max_feature_nodes=max_feature_nodes, max_logits=max_logits,
                                 logit_probability=logit_probability, targets=[t.label for t in tg]),
        prompt=graph_prompt, tokens=tokens,
        token_ids=rep.ids.tolist(), n_layers=L, features=index[selected].clone(), activations=acts[selected].clone(),
        pre=pre, targets=[t.label for t in tg], target_ids=[t.token for t in tg],
        target_weights=torch.tensor([t.weight for t in tg]), target_values=tvals, biases=biases,
        edge_index=edge_index, edge_weight=weight.contiguous(), n_active=n_feat,
        transcoders=_describe(transcoders),
        extra={"seconds": round(time.perf_counter() - t0, 3), "batch_size": lin.rows,
               "max_error": float(rep.errors.abs().max()) if rep.errors.numel() else 0.0,
               "zero_first": rep.zero_first, "threads": torch.get_num_threads()})
    return graph


def _partial_influence(rows: torch.Tensor, row_node: torch.Tensor, n_cols: int, target_w: torch.Tensor) -> torch.Tensor:
    """[n_cols]: each source's influence on the targets through the edge rows computed so far (dense
    rows [r, n_cols], row i being node row_node[i]; targets are nodes n_cols + t): circuit-tracer's
    ranking of the features still to visit."""
    norm = rows.abs()
    norm /= norm.sum(1, keepdim=True).clamp(min=1e-10)
    weight = torch.zeros(n_cols + len(target_w))
    weight[n_cols:] = target_w
    current, total = weight[row_node], torch.zeros(n_cols)
    for _ in range(10_000):
        spread = current @ norm  # [n_cols]: what flows one step further back
        if not bool(spread.any()):
            return total
        total += spread
        weight = torch.zeros(n_cols + len(target_w))
        weight[:n_cols] = spread
        current = weight[row_node]
    raise RuntimeError("influence did not converge: the rows form a cycle")


def _biases(rep: LocalReplacement, features: torch.Tensor, tg: list[Target]):
    """Each row's constant term (the zero-source frozen run), the features' pre-activations and the
    targets' values."""
    with torch.no_grad():
        run = rep.frozen_run([{}], recompute=False, zero_sources=[True])
    out, pre = [], []
    for layer, pos, f in features.tolist():
        row = rep.stack.encoder_rows(layer, torch.tensor([f]))[0]
        b = float(rep.stack.encoder_bias(layer, torch.tensor([f]))[0])
        out.append(float(row @ run.inputs[layer][1, pos].float()) + b)
        pre.append(float(row @ rep.inputs[layer][pos].float()) + b)
    last = rep.n_pos - 1
    tvals = [float(t.vector @ rep.final[last]) + t.bias for t in tg]
    out += [float(t.vector @ run.final[1, last].float()) + t.bias for t in tg]
    return torch.tensor(out), torch.tensor(pre), torch.tensor(tvals)


def _sweep_key(model: Model, rep: LocalReplacement, tg: list[Target], index: torch.Tensor) -> str:
    """What a graph's edge rows depend on (progress records): the model, the prompt, the targets, and
    the transcoders' weights with the active features."""
    from ..models.fingerprint import fingerprint_of

    weights = {}
    for layer, coder in enumerate(rep.stack.coders):
        if coder is not None:
            weights.update({f"{layer}.{k}": v for k, v in coder.state_dict().items()})
    if rep.stack.clt is not None:
        weights.update(rep.stack.clt.state_dict())
    targets = fingerprint_of({t.label: t.vector for t in tg}, {"weights": [t.weight for t in tg]})
    return (f"attribution graph {model.fingerprint} {rep.ids.tolist()} {fingerprint_of(weights, {})} {targets} "
            f"{fingerprint_of({'index': index}, {})}")


def _describe(transcoders: Any) -> str:
    kind = type(transcoders).__name__
    model = getattr(transcoders, "model", None)
    return f"{kind}{' of ' + model if isinstance(model, str) and model else ''}"
