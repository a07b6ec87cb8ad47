"""The attribution graph: the result of tracing a prompt (``attribute.attribution_graph``).

Nodes (circuit-tracer's order): the active features (layer, position, feature) by layer, then
position, then feature — none at the first position when it is a special token; an error node per
(layer, position), layer-major; a token node per position; the output targets. Rows of the
adjacency are targets and columns sources; an edge is the direct effect of the source on the
target's pre-activation in the local replacement model (``tracing/replacement.py``). Node ids are
circuit-tracer's / Neuronpedia's (``neuronpedia.py`` reads and writes their JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import names
from ..results import Result
from .prune import Pruned, graph_scores, influence, normalised, prune


LOW_REPLACEMENT = 0.2  # below this a graph's summary warns: its transcoders explain little of the prompt
FIGURE_EDGES = 500  # the static figure draws at most this many of the pruned graph's strongest edges


@dataclass
class AttributionGraph(Result):
    """An attribution graph (see the module docstring for the node order).

    features [n, 3]: (layer, position, feature) of the feature nodes; activations [n]; pre [n]
    their pre-activations and biases [n + targets] each row's constant term (encoder bias, decoder
    biases, norm and attention biases, the first position's output): a row's edges plus its bias
    are its pre-activation. edge_index [2, nnz] (target, source) and edge_weight [nnz]: the sparse
    adjacency. targets: labels; target_ids: vocabulary ids (−1 custom); target_weights: their
    probabilities (the influence weights); target_values: each target's value (demeaned logit).
    """

    prompt: str
    tokens: list[str]
    token_ids: list[int]
    n_layers: int
    features: torch.Tensor
    activations: torch.Tensor
    pre: torch.Tensor
    targets: list[str]
    target_ids: list[int]
    target_weights: torch.Tensor
    target_values: torch.Tensor
    biases: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    n_active: int = 0
    transcoders: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    title: ClassVar[str] = "Attribution graph"

    # ------------------------------------------------------------------ structure
    @property
    def n_pos(self) -> int:
        return len(self.token_ids)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_nodes(self) -> int:
        return self.n_features + (self.n_layers + 1) * self.n_pos + len(self.targets)

    @property
    def error_slice(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

    @property
    def token_slice(self) -> slice:
        s = self.error_slice.stop
        return slice(s, s + self.n_pos)

    def node_kind(self, i: int) -> str:
        """"feature", "error", "token" or "target"."""
        if i < self.n_features:
            return "feature"
        if i < self.error_slice.stop:
            return "error"
        return "token" if i < self.token_slice.stop else "target"

    def node_ids(self) -> list[str]:
        """Node ids, one per node: circuit-tracer's / Neuronpedia's — ``L_F_P`` features, ``E_{token}_{P}`` tokens,
        ``{L+1}_{token}_{P}`` targets (custom targets: their index) — except errors, ``err_L_P``: circuit-tracer
        names error (L, P) ``0_L_P``, which is also feature L of layer 0 at position P (``to_neuronpedia`` writes
        that id; ``from_neuronpedia`` resolves it)."""
        L, P = self.n_layers, self.n_pos
        ids = [names.feature(f, l, p).node for l, p, f in self.features.tolist()]
        ids += [f"err_{l}_{p}" for l in range(L) for p in range(P)]
        ids += [f"E_{t}_{p}" for p, t in enumerate(self.token_ids)]
        ids += [f"{L + 1}_{t if t >= 0 else i}_{P - 1}" for i, t in enumerate(self.target_ids)]
        return ids

    def node_labels(self) -> list[str]:
        """Short readable names: ``L3 F17 @5``, ``err L3 @5``, ``tok 'cat' @5``, ``→ ' Paris'``."""
        L, P = self.n_layers, self.n_pos
        out = [names.feature(f, l, p).label for l, p, f in self.features.tolist()]
        out += [f"err L{l} @{p}" for l in range(L) for p in range(P)]
        out += [f"tok {t!r} @{p}" for p, t in enumerate(self.tokens)]
        return out + [f"→ {t!r}" for t in self.targets]

    def adjacency(self, dense: bool = False) -> torch.Tensor:
        """A [n_nodes, n_nodes], rows targets and columns sources (sparse COO unless ``dense``)."""
        a = torch.sparse_coo_tensor(self.edge_index, self.edge_weight, (self.n_nodes,) * 2, check_invariants=False).coalesce()
        return a.to_dense() if dense else a

    def weights(self) -> torch.Tensor:
        """[n_nodes]: the targets' weights on their rows, 0 elsewhere (what influence starts from)."""
        w = torch.zeros(self.n_nodes)
        w[self.n_nodes - len(self.targets):] = self.target_weights.float()
        return w

    def influence(self) -> torch.Tensor:
        """[n_nodes]: each node's influence on the weighted targets through all paths."""
        return influence(normalised(self.adjacency()), self.weights())

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
        """Nodes and edges kept at these cumulative-influence thresholds (``prune.prune``)."""
        return prune(self.adjacency(), self.weights(), self.n_features, self.n_pos + len(self.targets),
                     node_threshold=node_threshold, edge_threshold=edge_threshold)

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score) as circuit-tracer defines them."""
        return graph_scores(self.adjacency(), self.weights(), self.error_slice, self.token_slice)

    def place(self, i: int) -> tuple[int, int]:
        """(position, layer) of node ``i``: tokens at layer −1, targets at ``n_layers`` and the last position."""
        if i < self.n_features:
            layer, pos, _ = self.features[i].tolist()
            return int(pos), int(layer)
        if i < self.error_slice.stop:
            j = i - self.error_slice.start
            return j % self.n_pos, j // self.n_pos
        if i < self.token_slice.stop:
            return i - self.token_slice.start, -1
        return self.n_pos - 1, self.n_layers

    def layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) [n_nodes] of each node: x its position (nodes sharing a cell spread out), y its
        layer — tokens at −1, errors and features at their layer, targets at n_layers."""
        L, P = self.n_layers, self.n_pos
        pos = torch.cat([self.features[:, 1].float(), torch.arange(P).float().repeat(L), torch.arange(P).float(),
                         torch.full((len(self.targets),), float(P - 1))])
        lay = torch.cat([self.features[:, 0].float(), torch.arange(L).float().repeat_interleave(P),
                         torch.full((P,), -1.0), torch.full((len(self.targets),), float(L))])
        x = pos.clone()
        cells: dict[tuple[float, float], list[int]] = {}
        for i, key in enumerate(zip(pos.tolist(), lay.tolist())):
            cells.setdefault(key, []).append(i)
        for members in cells.values():
            if len(members) > 1:
                x[members] += torch.linspace(-0.35, 0.35, len(members))
        return x, lay

    def figure(self, node_threshold: float = 0.8, edge_threshold: float = 0.98):
        """The pruned graph: nodes by position (x) and layer (y), tokens below, targets above; edge
        width by |weight|, blue positive and red negative — or, once it has supernodes, their
        diagram (``view.supernode_figure``; the page's viewer still has every node)."""
        import matplotlib.pyplot as plt

        if self.extra.get("supernodes"):
            from .view import supernode_figure

            return supernode_figure(self)

        from matplotlib.collections import LineCollection

        kept = self.prune(node_threshold, edge_threshold)
        x, y = self.layout()
        adj = self.adjacency()
        (r, c), v = adj.indices(), adj.values()
        e = kept.edges.nonzero()[:, 0]
        n_kept = len(e)
        if n_kept > FIGURE_EDGES:  # the strongest: thousands of faint lines hide the graph and bloat the picture
            e = e[v[e].abs().topk(FIGURE_EDGES).indices]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * self.n_pos + 2), 0.45 * self.n_layers + 3))
        if len(e):
            w = v[e].abs().float()
            segments = [[(float(x[int(c[i])]), float(y[int(c[i])])), (float(x[int(r[i])]), float(y[int(r[i])]))]
                        for i in e.tolist()]
            ax.add_collection(LineCollection(segments, colors=["#2b6cb0" if float(v[i]) > 0 else "#c53030" for i in e.tolist()],
                                             linewidths=(0.3 + 2.5 * w / w.max()).tolist(), alpha=0.55, zorder=1,
                                             antialiaseds=False))  # crisp lines: a far smaller PNG
        colours = {"feature": "#dd6b20", "error": "#718096", "token": "#2f855a", "target": "#6b46c1"}
        shown = kept.nodes.nonzero()[:, 0].tolist()
        for kind, colour in colours.items():
            idx = [i for i in shown if self.node_kind(i) == kind]
            ax.scatter(x[idx], y[idx], s=28 if kind != "error" else 16, color=colour, label=kind, zorder=2,
                       marker="s" if kind == "error" else "o")
        labels = self.node_labels()
        for i in shown[-len(self.targets):][:3]:
            if self.node_kind(i) == "target":
                ax.annotate(labels[i], (float(x[i]), float(y[i])), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_xticks(range(self.n_pos), [repr(t)[1:-1] for t in self.tokens], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(-1, self.n_layers + 1), ["tokens", *[str(i) for i in range(self.n_layers)], "out"], fontsize=7)
        ax.set(xlabel="position", ylabel="layer",
               title=f"{int(kept.nodes.sum())} nodes, {n_kept:,} edges (pruned {node_threshold} / {edge_threshold})"
                     + (f"; the {FIGURE_EDGES:,} strongest drawn" if n_kept > FIGURE_EDGES else ""))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return fig

    # ------------------------------------------------------------------ Result
    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        """The interactive viewer (cytoscape.js: threshold slider, hover cards, pinning,
        supernodes, attention behind an edge), the summary and the static figure."""
        from .view import view_data

        return self._render("results/attribution_graph.html", png=png, draw=draw, data=view_data(self))

    def evidence(self) -> dict:
        rep, comp = self.scores()
        return {"replacement_score": rep, "completeness_score": comp, "n_features": self.n_features,
                "n_active": self.n_active, "n_edges": int(self.edge_weight.numel())}

    def summary(self) -> str:
        rep, comp = self.scores()
        kept = self.prune()
        inf = self.influence()
        labels = self.node_labels()
        top = [i for i in torch.argsort(inf, descending=True).tolist() if self.node_kind(i) == "feature"][:5]
        return (f"Attribution graph of {self.prompt!r} → {', '.join(repr(t) for t in self.targets[:4])}: "
                f"{self.n_features} of {self.n_active} active features, {int(self.edge_weight.numel())} edges; "
                f"pruned (0.8 / 0.98) to {int(kept.nodes.sum())} nodes and {int(kept.edges.sum())} edges. "
                f"Replacement score {rep:.3f}, completeness {comp:.3f}.\n"
                + (f"WARNING: replacement score {rep:.3f} — the transcoders explain little of this prompt; the graph is "
                   "mostly error nodes (check their FVU with `mechscope sae eval` or train them longer).\n"
                   if rep < LOW_REPLACEMENT else "")
                + "Most influential features: " + ", ".join(f"{labels[i]} ({float(inf[i]):.3f})" for i in top))
