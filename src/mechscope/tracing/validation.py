"""Validating an attribution graph by intervention: does changing its features do what it predicts?

For each node (a feature, or a group of features — a supernode) set to a new activation (0 ablates,
a factor steers), three numbers per target:

* **predicted** — the graph's own linear answer: the change flows along its edges, each feature
  downstream moving by its edges' share (features stay active; attention and norms frozen);
* **frozen** — measured in the replacement model with attention and norm scales frozen and every
  feature recomputed from its own input by its transcoder (``LocalReplacement.frozen_run``):
  nonlinear in the features — and with TopK transcoders discontinuous: a change that reorders a
  layer's k-th and (k+1)-th features swaps a whole activation in or out (on SmolLM2 a 1% change of
  one feature can move the top logit by ~1 this way, while the real model moves as the graph says);
* **model** — measured in the real model: the feature's decoder output changed at its position (and,
  for a cross-layer transcoder, at every layer it writes), everything downstream free.

All variants run as rows of one forward each (``copies``), never a forward per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ..models.interventions import Add
from ..models.model import Model
from ..results import Provenance, Result
from .attribute import logit_target
from .graph import AttributionGraph
from .replacement import GraphError, LocalReplacement
from ..models.sites import block_site

Feature = tuple[int, int, int]


@dataclass
class GraphValidation(Result):
    """Predicted vs measured changes of the targets: predicted, direct, frozen and model are
    [nodes, targets]; direct is the nodes' own edges into the targets (no paths through features)."""

    labels: list[str]
    targets: list[str]
    new_values: list[str]
    predicted: torch.Tensor
    direct: torch.Tensor
    frozen: torch.Tensor
    model: torch.Tensor
    title: ClassVar[str] = "Attribution graph validated by intervention"

    @staticmethod
    def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.flatten().double(), b.flatten().double()
        if len(a) < 2 or float(a.std()) == 0 or float(b.std()) == 0:
            return float("nan")
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    def evidence(self) -> dict:
        return {"corr_predicted_frozen": self._corr(self.predicted, self.frozen),
                "corr_predicted_model": self._corr(self.predicted, self.model),
                "corr_frozen_model": self._corr(self.frozen, self.model), "n_interventions": len(self.labels)}

    def summary(self) -> str:
        ev = self.evidence()
        t = self.targets[0] if self.targets else "?"
        lines = [f"{len(self.labels)} interventions on {len(self.targets)} target(s). Correlation of the graph's "
                 f"prediction with the frozen replacement model {ev['corr_predicted_frozen']:.3f}, with the real "
                 f"model {ev['corr_predicted_model']:.3f}.",
                 f"Change in {t!r}: node → predicted / frozen / model"]
        for i, label in enumerate(self.labels[:8]):
            lines.append(f"  {label} {self.new_values[i]}: {float(self.predicted[i, 0]):+.3f} / "
                         f"{float(self.frozen[i, 0]):+.3f} / {float(self.model[i, 0]):+.3f}")
        return "\n".join(lines)

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        p = self.predicted.flatten()
        ax.scatter(p, self.frozen.flatten(), s=14, label="replacement model, attention frozen", color="#dd6b20")
        ax.scatter(p, self.model.flatten(), s=14, marker="x", label="real model", color="#2b6cb0")
        lo = float(min(p.min(), self.frozen.min(), self.model.min()))
        hi = float(max(p.max(), self.frozen.max(), self.model.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="predicted by the graph", ylabel="measured", title="Interventions on graph features")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _groups(graph: AttributionGraph, nodes: Any, k: int) -> list[list[Feature]]:
    feats = {tuple(f): i for i, f in enumerate(graph.features.tolist())}
    ids = graph.node_ids()
    if nodes is None:
        inf = graph.influence()[: graph.n_features]
        order = torch.argsort(inf, descending=True)[:k].tolist()
        return [[tuple(graph.features[i].tolist())] for i in order]
    out = []
    for n in nodes:
        group = n if isinstance(n, (list, set)) else [n]
        resolved = []
        for m in group:
            if isinstance(m, str):
                if m not in ids or graph.node_kind(ids.index(m)) != "feature":
                    raise GraphError(f"{m!r} is not a feature node of this graph (ids like {ids[0]!r})")
                m = tuple(graph.features[ids.index(m)].tolist())
            m = tuple(int(v) for v in m)
            if m not in feats:
                raise GraphError(f"{m} (layer, position, feature) is not a feature node of this graph")
            resolved.append(m)
        out.append(resolved)
    return out


def _predicted(graph: AttributionGraph, groups: list[list[Feature]], new: list[dict[Feature, float]]):
    """[groups, targets] changes by linear propagation along the graph's edges, and the direct ones."""
    nf, k = graph.n_features, len(graph.targets)
    A = graph.adjacency()
    (r, c), v = A.indices(), A.values()
    acts = graph.activations.float()
    ff = (r < nf) & (c < nf)
    tf = (r >= graph.n_nodes - k) & (c < nf)
    M_ff = torch.sparse_coo_tensor(torch.stack([r[ff], c[ff]]), v[ff] / acts[c[ff]], (nf, nf), check_invariants=False)
    M_tf = torch.sparse_coo_tensor(torch.stack([r[tf] - (graph.n_nodes - k), c[tf]]), v[tf] / acts[c[tf]], (k, nf),
                                   check_invariants=False)
    index = {tuple(f): i for i, f in enumerate(graph.features.tolist())}
    d0 = torch.zeros(nf, len(groups))
    free = torch.ones(nf, len(groups))  # a set feature is held at its value: upstream changes do not reach it
    for j, changes in enumerate(new):
        for f, value in changes.items():
            d0[index[f], j] = value - float(acts[index[f]])
            free[index[f], j] = 0
    delta = d0.clone()
    for _ in range(graph.n_layers + 1):  # a feature only feeds later layers: n_layers steps reach the fixpoint
        delta = d0 + free * torch.sparse.mm(M_ff, delta)
    return torch.sparse.mm(M_tf, delta).T, torch.sparse.mm(M_tf, d0).T


def validate_graph(graph: AttributionGraph, model: Model, transcoders: Any, nodes: Sequence[Any] | None = None, *,
                   k: int = 10, value: float = 0.0, factor: float | None = None) -> GraphValidation:
    """Intervene on ``nodes`` of ``graph`` (default: its ``k`` most influential features, one at a
    time) and compare what the graph predicts with what the replacement model and the real model do.

    nodes: feature node ids (``"L_F_P"``), (layer, position, feature) tuples, or lists of them (a
    group changed together). Each feature is set to ``value`` (0: ablated), or multiplied by ``factor``.
    """
    groups = _groups(graph, nodes, k)
    if not groups:
        raise GraphError("no nodes to intervene on: the graph has no feature nodes")
    acts = {tuple(f): float(a) for f, a in zip(graph.features.tolist(), graph.activations.tolist())}
    new = [{f: (acts[f] * factor if factor is not None else float(value)) for f in g} for g in groups]
    predicted, direct = _predicted(graph, groups, new)
    rep = LocalReplacement(model, transcoders, graph.token_ids, prepend=False)
    targets = [logit_target(model, t, 1.0) if t >= 0 else None for t in graph.target_ids]
    if any(t is None for t in targets):
        raise GraphError("validation measures logit targets; this graph has a custom direction target")
    vecs = torch.stack([t.vector for t in targets])  # [k, d]
    run = rep.frozen_run(new, recompute=True)
    last = rep.n_pos - 1
    vals = run.final[:, last].float() @ vecs.T  # [rows, k]
    frozen = vals[1:] - vals[:1]
    # the real model: each variant's decoder change added to the MLP outputs it writes
    ivs = []
    for row, changes in enumerate(new, start=1):
        for (layer, pos, feature), v in changes.items():
            rows = rep.stack.decoder_rows(layer, torch.tensor([feature]))[0]  # [n_out, d]
            for j in range(rows.shape[0]):
                ivs.append(Add(block_site(layer + j, "mlp.out"), vector=rows[j] * (v - acts[(layer, pos, feature)]),
                               positions=[pos], rows=[row]))
    with torch.no_grad():
        logits = model.run(rep.prompt, copies=len(new) + 1, interventions=ivs).logits[:, -1].float()
    demeaned = logits[:, graph.target_ids] - logits.mean(-1, keepdim=True)
    measured = demeaned[1:] - demeaned[:1]
    labels = [", ".join(f"{l}_{f}_{p}" for l, p, f in g) for g in groups]
    shown = [f"× {factor}" if factor is not None else f"= {value}"] * len(groups)
    return GraphValidation(
        provenance=Provenance.of(model, prompts=[graph.prompt], nodes=labels, value=value, factor=factor),
        labels=labels, targets=list(graph.targets), new_values=shown, predicted=predicted.contiguous(),
        direct=direct.contiguous(), frozen=frozen.contiguous(), model=measured.contiguous())
