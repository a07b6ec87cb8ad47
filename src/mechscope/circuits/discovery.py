"""Automated circuit discovery over the component graph: EAP, EAP-IG, ACDC; circuit evaluation.

- ``eap`` (Syed et al. 2023): score(u → r) = (out_u(clean) − out_u(corrupted)) · ∂M/∂input_r at the
  clean run — the first-order estimate of how much the metric drops when the edge is cut.
- ``eap_ig`` (Hanna et al. 2024): the same difference times the gradient averaged over ``steps``
  points on the straight line from the corrupted to the clean input embeddings.
- ``acdc`` (Conmy et al. 2023): walk receivers from the logits back; cut each incoming edge whose
  removal moves the output (KL to the full model, or the normalised task metric) by less than
  ``threshold``. Speculative batching: one forward tries cutting the next k edges cumulatively;
  the decisions are exactly the sequential algorithm's (a kept edge discards the copies after it).
- ``evaluate``: faithfulness (circuit's metric, everything else ablated, normalised between the
  empty circuit and the full model) and completeness (1 − the faithfulness of its complement).
- ``minimal_circuit``: the smallest top-n circuit by score that reaches a target faithfulness, with
  the faithfulness-vs-size curve measured on the way (many circuits per forward).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..models.model import Model
from ..results import Provenance, Result
from .circuit import Circuit
from .edges import ABLATIONS, ablated_outputs, edge_run, sender_outputs
from .graph import Graph


@dataclass
class _Prepared:
    graph: Graph
    clean: torch.Tensor  # [n, pos, senders, d]
    corrupted: torch.Tensor
    mask: torch.Tensor  # [n, pos]
    clean_metric: float
    corrupted_metric: float
    clean_logprobs: torch.Tensor  # [n, vocab] at the last token


def _prepare(model: Model, task) -> _Prepared:
    graph = Graph.of(model)
    clean = sender_outputs(model, graph, task.clean)
    corrupted = sender_outputs(model, graph, task.corrupted)
    _, mask = model.tokenize(task.clean)
    with torch.no_grad():
        logits_clean = task.read(model.run(task.clean).logits).float()
        logits_corrupted = task.read(model.run(task.corrupted).logits).float()
    return _Prepared(graph, clean, corrupted, mask, float(task.score(logits_clean).mean()),
                     float(task.score(logits_corrupted).mean()), logits_clean.log_softmax(-1))


def _provenance(model: Model, task, **params) -> Provenance:
    return Provenance.of(model, prompts=task.texts or task.clean, dataset=f"{task.name} v{task.version}",
                         seed=task.seed, pairs=len(task), **params)


# ----------------------------------------------------------------------------------------------
# Edge scores (EAP, EAP-IG)


@dataclass
class EdgeScores(Result):
    """Score of every edge of the component graph: the estimated drop of the task metric when the
    edge alone is cut (positive: the edge helps the behaviour). scores: [senders, receivers], zero
    where no edge exists; passes: forwards and backwards spent."""

    task: str
    metric: str
    method: str
    graph_shape: tuple[int, int, int, bool, bool]  # [layers, heads, kv heads, has MLPs, parallel blocks]: see Graph
    scores: torch.Tensor
    clean_metric: float
    corrupted_metric: float
    passes: dict[str, int]
    seconds: float
    title: ClassVar[str] = "Edge attribution"

    def graph(self) -> Graph:
        return _graph(tuple(self.graph_shape))

    def check_consistency(self) -> None:
        """The graph the shape describes has the scores' senders and receivers. Every head is a sender, so
        a shape claiming more heads than the scores have rows is refused before the graph is built."""
        from ..results import ResultFormatError

        layers, heads, kv = self.graph_shape[:3]
        rows = self.scores.shape[0] if self.scores.dim() == 2 else 0
        if not (1 <= layers and 1 <= kv <= heads and layers * heads < rows):
            raise ResultFormatError(f"EdgeScores.graph_shape {list(self.graph_shape)} does not describe scores of "
                                    f"shape {list(self.scores.shape)}")
        g = self.graph()
        if tuple(self.scores.shape) != (len(g.senders), len(g.receivers)):
            raise ResultFormatError(f"EdgeScores.graph_shape {list(self.graph_shape)} has {len(g.senders)} senders and "
                                    f"{len(g.receivers)} receivers; the scores are {list(self.scores.shape)}")

    @property
    def senders(self) -> list[str]:
        return self.graph().senders

    @property
    def receivers(self) -> list[str]:
        return self.graph().receivers

    def ranked(self, absolute: bool = True) -> list[tuple[str, str, float]]:
        """Every edge, best first (by |score| unless ``absolute=False``)."""
        g = self.graph()
        key = self.scores.abs() if absolute else self.scores
        key = torch.where(g.allowed, key, torch.full_like(key, -math.inf))
        order = key.flatten().argsort(descending=True)[: g.n_edges]
        senders, receivers, flat = g.senders, g.receivers, self.scores.flatten().tolist()
        n_r = len(receivers)
        return [(senders[i // n_r], receivers[i % n_r], flat[i]) for i in order.tolist()]

    def top_mask(self, n: int, absolute: bool = False, select: str = "greedy") -> torch.Tensor:
        """[senders, receivers] mask of n edges chosen by score (signed: the edges that carry the
        behaviour; ``absolute=True`` ranks by |score|, taking edges that fight it too).

        ``select="greedy"`` (default; Hanna et al. 2024): grow from the logits, always adding the
        best edge into a component already in the circuit, so every edge reaches the output.
        ``"top"``: the n best edges anywhere, then pruned of those that cannot reach the logits
        (so it may hold fewer)."""
        g = self.graph()
        key = self.scores.abs() if absolute else self.scores
        if select == "top":
            flat = torch.where(g.allowed, key, torch.full_like(key, -math.inf)).flatten()
            mask = torch.zeros_like(flat)
            mask[flat.argsort(descending=True)[:n]] = 1.0
            return g.prune(mask.view_as(self.scores))
        if select != "greedy":
            raise ValueError(f"select={select!r}; valid: 'greedy', 'top'")
        cache = self.__dict__.setdefault("_greedy_orders", {})
        if absolute not in cache:
            cache[absolute] = _greedy_order(g, key)
        order = cache[absolute][:n]
        mask = torch.zeros_like(key)
        if order:
            idx = torch.tensor(order)
            mask[idx[:, 0], idx[:, 1]] = 1.0
        return mask

    def circuit(self, n: int, absolute: bool = False, select: str = "greedy") -> Circuit:
        """The circuit of n edges chosen by score (see ``top_mask``; unevaluated: see ``evaluate``)."""
        g = self.graph()
        return circuit_from_mask(g, self.top_mask(n, absolute, select), self.scores, metric=self.metric,
                                 method=self.method, provenance=self.provenance, task=self.task)

    def summary(self) -> str:
        top = self.ranked()[:6]
        return (f"{self.method} on {self.task}: {self.graph().n_edges} edges scored in {self.seconds:.1f} s "
                f"({self.passes.get('forward', 0)} forwards, {self.passes.get('backward', 0)} backwards; "
                f"{self.metric} clean {self.clean_metric:.3f}, corrupted {self.corrupted_metric:.3f}). Strongest: "
                + ", ".join(f"{s}→{r} {v:+.3f}" for s, r, v in top))

    def evidence(self) -> dict:
        return {"top": [list(e) for e in self.ranked()[:10]], "passes": self.passes}

    def figure(self):
        import matplotlib.pyplot as plt

        g = self.graph()
        vals = self.scores[g.allowed].abs().sort(descending=True).values.numpy()
        top = self.ranked()[:15]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        ax1.loglog(range(1, len(vals) + 1), vals + 1e-12)
        ax1.set(xlabel="edge rank", ylabel="|score|", title=f"{self.method}: {len(vals)} edges")
        ax2.barh(range(len(top))[::-1], [v for *_, v in top], color=["#2b6cb0" if v >= 0 else "#c53030" for *_, v in top])
        ax2.set_yticks(range(len(top))[::-1], [f"{s}→{r}" for s, r, _ in top], fontsize=7)
        ax2.set(xlabel=f"estimated drop in {self.metric} when cut", title="strongest edges")
        fig.tight_layout()
        return fig


def _greedy_order(g: Graph, key: torch.Tensor) -> list[tuple[int, int]]:
    """Every edge that can reach the logits, in the order a circuit grown from the logits takes
    them (best ``key`` among edges into components already in); its first n are the greedy n-edge
    circuit."""
    import heapq

    inputs: dict[str, list[int]] = {"logits": [len(g.receivers) - 1]}  # component -> its receivers
    for j in range(len(g.receivers)):
        for s in g.readers(j):
            inputs.setdefault(g.senders[s], []).append(j)
    keys = key.tolist()
    heap: list[tuple[float, int, int]] = []
    opened: set[int] = set()

    def open_component(node: str) -> None:
        for j in inputs.get(node, []):
            if j not in opened:
                opened.add(j)
                for i in range(g.upstream(j)):
                    heapq.heappush(heap, (-keys[i][j], i, j))

    open_component("logits")
    in_circuit = {"logits"}
    order = []
    while heap:
        _, i, j = heapq.heappop(heap)
        order.append((i, j))
        sender = g.senders[i]
        if sender not in in_circuit:
            in_circuit.add(sender)
            open_component(sender)
    return order


def _chunks(n_pairs: int, batch_size: int) -> list[range]:
    per = max(1, min(n_pairs, batch_size))
    return [range(i, min(n_pairs, i + per)) for i in range(0, n_pairs, per)]


def _edge_scores(model: Model, task, method: str, steps: int, batch_size: int, progress: bool) -> EdgeScores:
    start = time.perf_counter()
    prep = _prepare(model, task)
    g = prep.graph
    n = len(task)
    points = [1.0] if method == "eap" else [(k + 1) / steps for k in range(steps)]
    per = max(1, batch_size // len(points))
    chunks = _chunks(n, per)
    # two sender-output runs and two metric runs, then one forward and one backward per chunk of pairs
    passes = {"forward": 2 + 2 + len(chunks), "backward": len(chunks)}

    def score(items: range) -> torch.Tensor:  # [len(items), senders, receivers]: each pair chunk's share
        out = []
        for rows in (chunks[i] for i in items):
            sub = task.subset(rows)
            width = max(len(c) for c in sub.clean)  # the sub-batch's own left padding
            clean = prep.clean[rows.start:rows.stop, -width:]
            corrupted = prep.corrupted[rows.start:rows.stop, -width:]
            k = len(rows)
            embed = None
            if method == "eap-ig":
                e_clean, e_corr = clean[:, :, 0], corrupted[:, :, 0]
                embed = torch.cat([e_corr + a * (e_clean - e_corr) for a in points]).to(model.device)
            metric = lambda logits, sub=sub, k=k: sub.score(logits, torch.arange(logits.shape[0]) % k).sum() / n  # noqa: E731
            run = edge_run(model, g, sub.clean, grad_metric=metric, embed=embed, all_positions=task.POSITIONS == "all")
            diff = (clean - corrupted).to(torch.float32)  # [k, pos, senders, d]
            grads = torch.stack([run.grads[r] for r in range(len(g.receivers))], 2).float().cpu()
            grads = grads.view(len(points), k, *grads.shape[1:]).mean(0)  # [k, pos, receivers, d]; mean over the path
            # one GEMM: [senders, k·pos·d] @ [k·pos·d, receivers]
            out.append(diff.permute(2, 0, 1, 3).reshape(diff.shape[2], -1)
                       @ grads.permute(0, 1, 3, 2).reshape(-1, grads.shape[2]))
        return torch.stack(out)

    key = f"{method} {model.fingerprint} {steps} {per} {task!r}"
    scores = distributed.sweep(len(chunks), score, key=key, desc=method, progress=progress).sum(0) * g.allowed
    return EdgeScores(provenance=_provenance(model, task, method=method, steps=steps if method == "eap-ig" else None),
                      task=task.name, metric=task.metric, method=method, graph_shape=g.shape,
                      scores=scores, clean_metric=prep.clean_metric, corrupted_metric=prep.corrupted_metric,
                      passes=passes, seconds=time.perf_counter() - start)


def eap(model: Model, task, *, batch_size: int = 32, progress: bool = True) -> EdgeScores:
    """Edge attribution patching: every edge's score from one forward and one backward per batch."""
    return _edge_scores(model, task, "eap", 1, batch_size, progress)


def eap_ig(model: Model, task, *, steps: int = 5, batch_size: int = 32, progress: bool = True) -> EdgeScores:
    """EAP with integrated gradients on the input embeddings (``steps`` points, right Riemann
    sum from the corrupted to the clean embedding)."""
    if steps < 1:
        raise ValueError(f"steps={steps}; need at least 1")
    return _edge_scores(model, task, "eap-ig", steps, batch_size, progress)


# ----------------------------------------------------------------------------------------------
# Evaluating circuits


def circuit_from_mask(graph: Graph, mask: torch.Tensor, scores: torch.Tensor | None = None, *,
                      provenance: Provenance, **fields) -> Circuit:
    """A Circuit holding the kept edges of ``mask`` and the components they touch."""
    edges = graph.edges_of(mask, scores)
    nodes = sorted({e[0] for e in edges} | {graph.node_of(e[1]) for e in edges},
                   key=lambda n: (n != "embed", n == "logits", n))
    extra = {"total_edges": graph.n_edges, **fields.pop("extra", {})}
    task = fields.pop("task", "")
    return Circuit(provenance=provenance, nodes=nodes, edges=edges, extra={"task": task, **extra}, **fields)


def _masks_metric(model: Model, task, prep: _Prepared, masks: torch.Tensor, ablated: torch.Tensor,
                  batch_size: int, measure: str = "task", progress: bool = False) -> tuple[torch.Tensor, int]:
    """Mean task metric (or KL from the full model) for each mask [copies, S, R]; and forwards."""
    n = len(task)
    per = max(1, batch_size // n)

    def measure_chunk(items: range) -> torch.Tensor:  # [len(items)]
        chunk = masks[items.start:items.stop]
        with torch.no_grad():
            logits = edge_run(model, prep.graph, task.clean, keep=chunk, ablated=ablated,
                              all_positions=task.POSITIONS == "all").logits.float().cpu()
        c = chunk.shape[0]
        if measure == "kl":
            lp = logits.log_softmax(-1).view(c, n, *logits.shape[1:])
            full = prep.clean_logprobs[None]
            return (full.exp() * (full - lp)).sum(-1).flatten(1).mean(1)
        return task.score(logits).view(c, n).mean(1)

    key = ""
    if distributed.recording():  # the masks and what they are measured against name the result
        digest = hashlib.sha256(masks.detach().cpu().numpy().tobytes())
        digest.update(ablated.detach().cpu().float().numpy().tobytes())
        key = f"circuits {model.fingerprint} {measure} {digest.hexdigest()} {task!r}"
    values = distributed.sweep(masks.shape[0], measure_chunk, key=key, per=per, desc="circuits", progress=progress)
    return values, -(-masks.shape[0] // per)


def _ablated(prep: _Prepared, ablation: str, seed: int = 0) -> torch.Tensor:
    return ablated_outputs(prep.clean, prep.corrupted, prep.mask, ablation, seed)


def evaluate(model: Model, task, circuit: Circuit, *, ablation: str = "corrupted", batch_size: int = 64) -> Circuit:
    """The circuit with its evidence measured: faithfulness = (M(circuit) − M(∅)) / (M(full) − M(∅))
    with every edge outside the circuit ablated (``ablation``: corrupted / mean / resample), and
    completeness = 1 − the faithfulness of its complement (the model with only the circuit's
    edges ablated). M(∅), the empty circuit, is the corrupted run under corrupted ablation."""
    prep = _prepare(model, task)
    g = prep.graph
    mask = g.mask_of(circuit.edges)
    masks = torch.stack([mask, g.allowed.float() - mask, torch.zeros_like(mask)])
    values, _ = _masks_metric(model, task, prep, masks, _ablated(prep, ablation), batch_size)
    return _with_evidence(circuit, task, prep, ablation, *values.tolist())


def _with_evidence(circuit: Circuit, task, prep: _Prepared, ablation: str, kept: float, complement: float,
                   empty: float) -> Circuit:
    """``circuit`` with faithfulness and completeness from the task metric with only its edges
    (``kept``), all but its edges (``complement``) and no edges (``empty``)."""
    from dataclasses import replace

    full = prep.clean_metric
    if abs(full - empty) < 1e-9:
        raise ValueError(f"the full model and the empty circuit score the same ({full:.4g}) on {task.name}")
    faith = (kept - empty) / (full - empty)
    rest = (complement - empty) / (full - empty)
    extra = {**circuit.extra, "ablation": ablation, "metric_full": full, "metric_empty": empty,
             "metric_circuit": kept, "complement_faithfulness": rest}
    return replace(circuit, faithfulness=faith, completeness=1.0 - rest, extra=extra, metric=circuit.metric or task.metric)


def faithfulness(model: Model, task, masks: torch.Tensor, *, ablation: str = "corrupted",
                 batch_size: int = 64) -> torch.Tensor:
    """Faithfulness of many circuits at once: masks [circuits, senders, receivers] (see ``evaluate``
    for the definition) -> [circuits]; several circuits share each forward."""
    prep = _prepare(model, task)
    masks = masks[None] if masks.dim() == 2 else masks
    empty = torch.zeros(1, *masks.shape[1:])
    values, _ = _masks_metric(model, task, prep, torch.cat([masks, empty]), _ablated(prep, ablation), batch_size)
    return (values[:-1] - values[-1]) / (prep.clean_metric - values[-1])


def minimal_circuit(model: Model, task, scores: EdgeScores, *, target: float = 0.8, ablation: str = "corrupted",
                    absolute: bool = False, sizes: list[int] | None = None, batch_size: int = 64,
                    progress: bool = True) -> Circuit:
    """The smallest greedy circuit (``EdgeScores.top_mask``) whose faithfulness on ``task`` (the
    pairs scored, or others) reaches ``target``.

    Edges rank by signed score (those that carry the behaviour) unless ``absolute``: ranking by
    |score| also takes edges that work against it (negative name movers in IOI), which are part of
    the mechanism but lower faithfulness at a given size.

    Measures faithfulness on a log-spaced grid of sizes, smallest first and several circuits per
    forward, until one reaches the target; then bisects between it and the size below to within
    2 %. The measured points are kept in ``circuit.extra["curve"]`` as [edges, faithfulness]."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r}; valid: {', '.join(ABLATIONS)}")
    prep = _prepare(model, task)
    g = prep.graph
    total = g.n_edges
    if sizes is None:
        sizes = sorted({max(1, round(total * f)) for f in torch.logspace(-3.5, 0, 22).tolist()} | {total})
    sizes = sorted(set(sizes))
    ablated = _ablated(prep, ablation)
    full = prep.clean_metric
    metric: dict[int, float] = {}  # circuit size asked for -> mean task metric
    masks: dict[int, torch.Tensor] = {}
    forwards = 0

    def measure(ns: list[int], also: list[torch.Tensor] = ()) -> list[float]:
        """Measure the top-n circuits (and the masks ``also``, whose values are returned)."""
        nonlocal forwards
        masks.update((k, scores.top_mask(k, absolute)) for k in ns)
        values, f = _masks_metric(model, task, prep, torch.stack([*also, *(masks[k] for k in ns)]), ablated, batch_size)
        forwards += f
        metric.update(zip(ns, values[len(also):].tolist()))
        return values[:len(also)].tolist()

    # sizes in increasing order, a forward's worth at a time (the empty circuit with the first),
    # until one reaches the target
    per = max(1, batch_size // len(task))
    bar = tqdm(total=len(sizes), desc="faithfulness curve", disable=not progress)
    empty, i = None, 0
    while i < len(sizes):
        chunk = sizes[i:i + (per if empty is not None else max(1, per - 1))]
        got = measure(chunk, [] if empty is not None else [torch.zeros_like(g.allowed, dtype=torch.float32)])
        if empty is None and abs(full - got[0]) < 1e-9:
            raise ValueError(f"the full model and the empty circuit score the same ({full:.4g}) on {task.name}")
        empty = got[0] if empty is None else empty
        i += len(chunk)
        bar.update(len(chunk))
        if any((metric[k] - empty) / (full - empty) >= target for k in chunk):
            break
    bar.close()
    faith = lambda k: (metric[k] - empty) / (full - empty)  # noqa: E731
    reached = [k for k in sorted(metric) if faith(k) >= target]
    if not reached:
        best = max(metric, key=faith)
        raise ValueError(f"no circuit reaches faithfulness {target} (best {faith(best):.3f} at {best} edges "
                         f"of {total}); lower the target or try another ablation")
    hi = reached[0]
    lo = max([k for k in metric if k < hi], default=0)
    while hi - lo > max(1, hi // 50):  # bisect to within 2 % of the size
        mids = sorted({lo + (hi - lo) * j // (per + 1) for j in range(1, per + 1)} - {lo, hi})
        measure(mids)
        above = [k for k in mids if faith(k) >= target]
        hi = above[0] if above else hi
        lo = max([k for k in mids if k < hi], default=lo)
    circuit = scores.circuit(hi, absolute)
    (complement,) = measure([], [g.allowed.float() - masks[hi]])
    circuit = _with_evidence(circuit, task, prep, ablation, metric[hi], complement, empty)
    curve = {k: (int(masks[k].sum()), faith(k)) for k in metric}
    pts = sorted((n_kept, f) for n_kept, f in curve.values())
    circuit.extra.update({"curve": [list(p) for p in pts], "target": target, "forwards": forwards,
                          "top_n": hi, "scored_by": scores.method, "ranking": "|score|" if absolute else "score"})
    circuit.method = scores.method
    return circuit


# ----------------------------------------------------------------------------------------------
# ACDC


def acdc(model: Model, task, *, threshold: float = 0.01, measure: Literal["kl", "task"] = "kl",
         ablation: str = "corrupted", start: torch.Tensor | None = None, speculate: int = 8,
         batch_size: int = 64, progress: bool = True) -> Circuit:
    """ACDC (Conmy et al. 2023): prune edges greedily from the logits backwards.

    For each receiver (reverse topological order), for each incoming edge still present: cut it
    if the distance to the full model grows by less than ``threshold`` — ``measure="kl"``: KL of
    the last-token distribution from the full model's; ``"task"``: the drop of the task metric as a
    fraction of (clean − corrupted). Receivers whose component no longer reaches the logits lose
    their edges without tests. ``start``: a [senders, receivers] mask to prune from (default: all
    edges). ``speculate``: at most this many edges tried per forward (exact; see module
    docstring), fewer while many edges are being kept."""
    if measure not in ("kl", "task"):
        raise ValueError(f"measure={measure!r}; valid: 'kl', 'task'")
    t0 = time.perf_counter()
    prep = _prepare(model, task)
    g = prep.graph
    ablated = _ablated(prep, ablation)
    span = prep.clean_metric - prep.corrupted_metric
    current = g.allowed.float() if start is None else ((start > 0) & g.allowed).float()
    effects = torch.zeros_like(current)
    forwards = 0
    per = max(1, min(speculate, batch_size // len(task)))

    def distance(masks: torch.Tensor) -> torch.Tensor:
        nonlocal forwards
        vals, f = _masks_metric(model, task, prep, masks, ablated, batch_size, measure)
        forwards += f
        return vals if measure == "kl" else (prep.clean_metric - vals) / span

    here = float(distance(current[None])[0])
    keep_rate = 1 / per  # running share of tested edges kept: sets how many cuts a forward tries
    bar = tqdm(total=int(current.sum()), desc="acdc", disable=not progress)
    for r in reversed(range(len(g.receivers))):
        pruned = g.prune(current)
        if not bool(pruned[:, r].any()):  # dead receiver: nothing it reads matters
            bar.update(int(current[:, r].sum()))
            current[:, r] = 0.0
            continue
        todo = [u for u in reversed(range(g.upstream(r))) if current[u, r] > 0]
        while todo:
            width = max(1, min(per, round(1 / max(keep_rate, 1 / per))))  # speculate less where edges stay
            batch = todo[:width]
            masks = current.repeat(len(batch), 1, 1)
            for j in range(len(batch)):
                masks[j:, batch[j], r] = 0.0  # copy j cuts batch[0..j] (speculating all get cut)
            vals = distance(masks)
            prev = here
            kept = 0
            for j, u in enumerate(batch):
                effects[u, r] = float(vals[j]) - prev
                todo.pop(0)
                bar.update(1)
                if float(vals[j]) - prev < threshold:
                    current[u, r] = 0.0
                    prev = float(vals[j])
                else:  # kept: the later copies assumed it was cut; retry them
                    kept = 1
                    break
            keep_rate = 0.7 * keep_rate + 0.3 * kept / (j + 1)
            here = prev
    bar.close()
    current = g.prune(current)
    circuit = circuit_from_mask(g, current, effects, metric=task.metric, method="acdc",
                                provenance=_provenance(model, task, method="acdc", threshold=threshold,
                                                       measure=measure, ablation=ablation),
                                task=task.name, extra={"threshold": threshold, "measure": measure,
                                                       "forwards": forwards, "seconds": 0.0})
    circuit = evaluate(model, task, circuit, ablation=ablation, batch_size=batch_size)
    circuit.extra["seconds"] = time.perf_counter() - t0
    circuit.extra["forwards"] = forwards
    return circuit


METHODS = ("eap", "eap-ig", "acdc")


def discover(model: Model, task, method: str = "eap-ig", *, faithfulness: float = 0.8, ablation: str = "corrupted",
             steps: int = 5, threshold: float = 0.01, measure: Literal["kl", "task"] = "kl",
             candidates: int | None = None, progress: bool = True) -> Circuit:
    """Find a circuit for ``task``: EAP / EAP-IG score every edge, then the smallest greedy
    circuit reaching ``faithfulness`` is kept; ACDC prunes with ``threshold`` (its faithfulness is
    what it is, measured) — from every edge, or from EAP-IG's best ``candidates`` edges (ACDC
    tests edges one by one: SmolLM2's 70k edges take hours on a CPU). Returns the circuit with its
    evidence; ``circuit.edge_scores`` holds the EAP / EAP-IG scores it was chosen by (ACDC: the
    candidates' scores, or None), kept in this process (``Result.held``)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(METHODS)}")
    if method == "acdc":
        scores = None if candidates is None else eap_ig(model, task, steps=steps, progress=progress)
        start = None if scores is None else scores.top_mask(candidates)
        circuit = acdc(model, task, threshold=threshold, measure=measure, ablation=ablation, start=start,
                       progress=progress)
        return circuit.hold("edge_scores", scores)
    scores = eap(model, task, progress=progress) if method == "eap" else eap_ig(model, task, steps=steps,
                                                                                  progress=progress)
    circuit = minimal_circuit(model, task, scores, target=faithfulness, ablation=ablation, progress=progress)
    return circuit.hold("edge_scores", scores)


@functools.lru_cache(maxsize=16)
def _graph(shape: tuple) -> Graph:
    """One ``Graph`` per shape, so its name lists and masks are built once."""
    return Graph(*shape)
