"""Influence, pruning and scores of an attribution graph, as circuit-tracer defines them — on a
sparse adjacency, so memory grows with the edges that exist, not with the square of the nodes.

The adjacency A [n, n] has rows = targets and columns = sources. With N = |A| row-normalised,
a node's **influence** is w · (N + N² + …) where w puts each output target's weight (its
probability) on its row. The graph is acyclic, so the series ends after the longest path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def normalised(adj: torch.Tensor) -> torch.Tensor:
    """|A| with each row divided by its sum (rows that sum to 0 stay 0); sparse COO in, out."""
    adj = adj.coalesce()
    rows, vals = adj.indices()[0], adj.values().abs()
    sums = torch.zeros(adj.shape[0], dtype=vals.dtype).index_add_(0, rows, vals).clamp(min=1e-10)
    return torch.sparse_coo_tensor(adj.indices(), vals / sums[rows], adj.shape, check_invariants=False).coalesce()


def influence(norm: torch.Tensor, weights: torch.Tensor, max_iter: int = 10_000) -> torch.Tensor:
    """[n]: weights · (N + N² + …) for the row-normalised sparse N and per-row weights [n]."""
    total = torch.zeros(norm.shape[1], dtype=torch.float32)
    current = weights.float()
    (r, c), v = norm.indices(), norm.values().float()
    for _ in range(max_iter):  # one step back along every edge: current ← Nᵀ current
        current = torch.zeros_like(total).index_add_(0, c, v * current[r])
        if not bool(current.any()):
            return total
        total += current
    raise RuntimeError(f"influence did not converge in {max_iter} steps: the graph has a cycle")


def threshold_for(scores: torch.Tensor, fraction: float) -> float:
    """The score above which the highest scores hold ``fraction`` of the total."""
    s = torch.sort(scores.flatten(), descending=True).values
    if not len(s) or float(s.sum()) == 0:
        return float("inf")
    cum = torch.cumsum(s, 0) / s.sum()
    i = min(int(torch.searchsorted(cum, torch.tensor(fraction, dtype=cum.dtype))), len(s) - 1)
    return float(s[i])


class Pruned(NamedTuple):
    nodes: torch.Tensor  # [n] bool: kept nodes
    edges: torch.Tensor  # [nnz] bool over the coalesced adjacency's entries: kept edges
    cumulative: torch.Tensor  # [n] each node's cumulative share of influence, in influence order


def check_thresholds(node_threshold: float, edge_threshold: float) -> None:
    """Pruning thresholds are shares of the influence: each in [0, 1] (checked before any graph is computed)."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}={v}: it must be between 0 and 1 (a share of the influence)")


def prune(adj: torch.Tensor, weights: torch.Tensor, n_features: int, n_fixed: int, *, node_threshold: float = 0.8,
          edge_threshold: float = 0.98) -> Pruned:
    """Keep the nodes holding ``node_threshold`` of the influence on the targets (tokens and
    targets — the last ``n_fixed`` nodes — always), then the edges holding ``edge_threshold`` of
    the edge influence; then drop, until nothing changes, features and errors without an outgoing
    kept edge and features without an incoming one."""
    check_thresholds(node_threshold, edge_threshold)
    adj = adj.coalesce()
    n = adj.shape[0]
    node_inf = influence(normalised(adj), weights)
    nodes = node_inf >= threshold_for(node_inf, node_threshold)
    nodes[n - n_fixed:] = True
    (r, c), v = adj.indices(), adj.values()
    live = nodes[r] & nodes[c]
    pruned = torch.sparse_coo_tensor(adj.indices()[:, live], v[live], adj.shape, check_invariants=False).coalesce()
    norm = normalised(pruned)
    edge_inf = influence(norm, weights) + weights
    scores = torch.zeros_like(v)
    # scores of the surviving entries, placed back at their positions in adj's entry list
    key = r * n + c
    pkey = norm.indices()[0] * n + norm.indices()[1]
    where = torch.searchsorted(key, pkey)
    scores[where] = norm.values() * edge_inf[norm.indices()[0]]
    edges = (scores >= threshold_for(scores[live], edge_threshold)) & live
    movable = torch.zeros(n, dtype=torch.bool)
    movable[: n - n_fixed] = True
    features = torch.zeros(n, dtype=torch.bool)
    features[:n_features] = True
    while True:
        out_deg = torch.zeros(n, dtype=torch.bool).index_fill_(0, c[edges], True)
        in_deg = torch.zeros(n, dtype=torch.bool).index_fill_(0, r[edges], True)
        new = nodes & ~(movable & ~out_deg) & ~(features & ~in_deg)
        edges = edges & new[r] & new[c]
        if bool((new == nodes).all()):
            break
        nodes = new
    order = torch.argsort(node_inf, descending=True)
    cum = torch.zeros_like(node_inf)
    total = node_inf.sum().clamp(min=1e-30)
    cum[order] = torch.cumsum(node_inf[order], 0) / total
    return Pruned(nodes, edges, cum)


def graph_scores(adj: torch.Tensor, weights: torch.Tensor, errors: slice, tokens: slice) -> tuple[float, float]:
    """(replacement score, completeness score): the share of the tokens' influence on the targets
    that does not pass through errors — token / (token + error influence); and the influence-weighted
    share of every node's inputs that comes from non-error nodes."""
    norm = normalised(adj)
    node_inf = influence(norm, weights)
    tok, err = float(node_inf[tokens].sum()), float(node_inf[errors].sum())
    replacement = tok / (tok + err) if tok + err > 0 else float("nan")
    (r, c), v = norm.indices(), norm.values()
    from_errors = (c >= errors.start) & (c < errors.stop)
    error_share = torch.zeros(adj.shape[0]).index_add_(0, r[from_errors], v[from_errors])
    out_inf = node_inf + weights
    completeness = float(((1 - error_share) * out_inf).sum() / out_inf.sum())
    return replacement, completeness
