"""Supernodes proposed from what features mean and where they send their effect, and their agreement with
supernodes named by hand.

``propose_supernodes(graph, texts)`` groups an attribution graph's feature nodes by average-linkage
agglomerative clustering on a similarity that averages what is known of each pair:

- **text**: the cosine of the TF-IDF word vectors of the features' explanations (``explain_graph``'s, or any
  label: the cards' "fires on …; promotes …"); words are lower-cased runs of letters and digits;
- **edges**: the cosine of their edge profiles — each node's incoming and outgoing edge weights over every
  node of the graph (features feeding, and fed by, the same nodes play the same part);
- **decoder** (when ``decoders`` are given): the cosine of their decoder directions.

Merging stops when no two groups are more similar than ``threshold``; with ``same_position`` (default)
only features at one token position are grouped, as a graph's supernodes usually are. A group is named by
its members' most distinctive words, its layers and its token: "france french (L0-L7 at ' France')".

``edge_profile_supernodes`` is the baseline (the idea of an open Neuronpedia draft): the same clustering on
edge profiles alone. ``pair_agreement(proposed, reference)`` scores a proposal against hand-named
supernodes over the pairs of nodes that both name: precision (of the pairs it groups, how many the
reference groups) and recall (of the reference's pairs, how many it groups).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import torch
from typing_extensions import TypedDict

WORD = re.compile(r"[a-z0-9]+")


class Agreement(TypedDict):
    """Pairwise agreement of a proposal with a reference over the ``n_nodes`` nodes both place."""

    precision: float
    recall: float
    f1: float
    n_nodes: int
    reference_pairs: int
    proposed_pairs: int
    shared_pairs: int


def text_similarity(texts: Sequence[str]) -> torch.Tensor:
    """[n, n] cosine similarity of the texts' TF-IDF word vectors (smoothed IDF, as scikit-learn's default;
    an empty text is similar to nothing)."""
    docs = [Counter(WORD.findall(t.lower())) for t in texts]
    vocab = sorted({w for d in docs for w in d})
    index = {w: i for i, w in enumerate(vocab)}
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    X = torch.zeros(n, max(1, len(vocab)), dtype=torch.float64)
    for r, d in enumerate(docs):
        for w, c in d.items():
            X[r, index[w]] = c * (math.log((1 + n) / (1 + df[w])) + 1)
    return _cosine(X)


def edge_profiles(graph: Any, nodes: Sequence[int]) -> torch.Tensor:
    """[len(nodes), 2 · graph.n_nodes]: each node's incoming edge weights, then its outgoing ones."""
    A = graph.adjacency(dense=True).double()  # rows targets, columns sources
    idx = torch.tensor(list(nodes), dtype=torch.long)
    return torch.cat([A[idx], A[:, idx].T], 1)


def _cosine(X: torch.Tensor) -> torch.Tensor:
    norms = X.norm(dim=1, keepdim=True)
    Y = X / norms.clamp(min=1e-12)
    S = Y @ Y.T
    S[(norms[:, 0] == 0)] = 0.0
    S[:, (norms[:, 0] == 0)] = 0.0
    return S


def cluster(similarity: torch.Tensor, threshold: float, allowed: torch.Tensor | None = None) -> list[list[int]]:
    """Average-linkage agglomerative clustering of [n, n] ``similarity``: the two most similar groups merge
    while their mean pairwise similarity exceeds ``threshold``; ``allowed`` [n, n] (bool) forbids merging
    groups holding a pair it marks False. Groups, largest first (ties: first member first)."""
    n = similarity.shape[0]
    total = similarity.double().clone()  # total[a, b]: the sum of pairwise similarities between groups a and b
    ok = torch.ones(n, n, dtype=torch.bool) if allowed is None else allowed.clone()
    ok.fill_diagonal_(False)
    size = torch.ones(n, dtype=torch.float64)
    alive = torch.ones(n, dtype=torch.bool)
    groups: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(groups) > 1:
        mean = total / (size[:, None] * size[None, :])
        mean[~(ok & alive[:, None] & alive[None, :])] = -math.inf
        best = int(mean.argmax())
        a, b = sorted(divmod(best, n))
        if not float(mean[a, b]) > threshold:
            break
        groups[a] += groups.pop(b)
        total[a] += total[b]
        total[:, a] += total[:, b]
        ok[a] &= ok[b]
        ok[:, a] &= ok[:, b]
        ok[a, a] = False
        size[a] += size[b]
        alive[b] = False
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def _feature_nodes(graph: Any, keep: Sequence[int]) -> tuple[list[str], list[int], list[int]]:
    """(ids, layers, positions) of the graph's feature nodes ``keep``."""
    ids = graph.node_ids()
    return [ids[i] for i in keep], [int(graph.features[i, 0]) for i in keep], [int(graph.features[i, 1]) for i in keep]


def _name(members: list[int], layers: list[int], positions: list[int], tokens: Sequence[str],
          texts: Sequence[str] | None) -> str:
    lo, hi = min(layers[m] for m in members), max(layers[m] for m in members)
    span = f"L{lo}" if lo == hi else f"L{lo}-L{hi}"
    where = sorted({positions[m] for m in members})
    at = ", ".join(repr(tokens[p]) for p in where) if all(0 <= p < len(tokens) for p in where) else "?"
    words = ""
    if texts is not None:
        stop = {"the", "a", "an", "of", "on", "in", "and", "or", "to", "fires", "promotes", "token", "tokens", "word",
                "words", "text", "s"}
        counts = Counter(w for m in members for w in set(WORD.findall(texts[m].lower())) if w not in stop)
        words = " ".join(w for w, _ in counts.most_common(3))
    return f"{words or 'group'} ({span} at {at})"


def graph_texts(graph: Any) -> dict[str, str]:
    """Node id → what is known of each feature node's meaning: its explanation (``explain_graph``), else its
    card's label (``graph_cards``), else its Neuronpedia clerp (a graph read from Neuronpedia's JSON)."""
    explained = graph.extra.get("explanations", {})
    cards = graph.extra.get("cards", {})
    clerps = graph.extra.get("clerps", {})
    out = {}
    for i, node in enumerate(graph.node_ids()[:graph.n_features]):
        layer, _, f = graph.features[i].tolist()
        key = f"{layer}_{f}"
        text = (explained.get(key) or {}).get("explanation") or (cards.get(key) or {}).get("label") or \
            clerps.get(node, "")
        out[node] = text
    return out


def propose_supernodes(graph: Any, texts: Mapping[str, str] | None = None, *, threshold: float = 0.3,
                       same_position: bool = True, decoders: Mapping[str, torch.Tensor] | None = None,
                       use_edges: bool = True, node_threshold: float | None = None,
                       edge_threshold: float = 0.98, namer: Callable[[list[str]], str] | None = None
                       ) -> list[list[str]]:
    """Supernodes [[name, node id, ...], ...] of ``graph``'s feature nodes (see the module docstring), or
    of those its pruning keeps (``node_threshold``, ``edge_threshold``: ``graph.prune``'s) — a graph of
    thousands of features is clustered over the few hundred that matter. ``texts``: node id → explanation
    (or label; ``graph_texts`` reads them from the graph); ``decoders``: node id → decoder direction;
    ``namer``: a group's name from its member ids (default: its words, layers and token)."""
    if node_threshold is None:
        keep = list(range(graph.n_features))
    else:
        keep = graph.prune(node_threshold, edge_threshold).nodes[:graph.n_features].nonzero()[:, 0].tolist()
    ids, layers, positions = _feature_nodes(graph, keep)
    if not (texts is not None or decoders is not None or use_edges):
        raise ValueError("propose_supernodes needs texts, decoders or use_edges=True: nothing to compare")
    if len(ids) < 2:
        return []
    parts = []
    text_list = [texts.get(i, "") for i in ids] if texts is not None else None
    if text_list is not None:
        parts.append(text_similarity(text_list))
    if use_edges:
        parts.append(_cosine(edge_profiles(graph, keep)))
    if decoders is not None:
        zero = torch.zeros_like(next(iter(decoders.values())), dtype=torch.float64)
        parts.append(_cosine(torch.stack([decoders[i].double() if i in decoders else zero for i in ids])))
    similarity = sum(parts) / len(parts)
    pos = torch.tensor(positions)
    out, used = [], Counter()
    for members in cluster(similarity, threshold, pos[:, None] == pos[None, :] if same_position else None):
        if len(members) < 2:
            continue
        name = namer([ids[m] for m in members]) if namer is not None else \
            _name(members, layers, positions, graph.tokens, text_list)
        used[name] += 1
        out.append([name if used[name] == 1 else f"{name} ({used[name]})", *[ids[m] for m in members]])
    return out


def edge_profile_supernodes(graph: Any, *, threshold: float = 0.3, same_position: bool = False,
                            node_threshold: float | None = None, edge_threshold: float = 0.98) -> list[list[str]]:
    """The baseline: supernodes from edge profiles alone (see the module docstring)."""
    return propose_supernodes(graph, None, threshold=threshold, same_position=same_position,
                              node_threshold=node_threshold, edge_threshold=edge_threshold)


def pair_agreement(proposed: Sequence[Sequence[str]] | Mapping[str, Sequence[str]],
                   reference: Sequence[Sequence[str]] | Mapping[str, Sequence[str]]) -> Agreement:
    """Pairwise precision and recall of ``proposed`` supernodes against ``reference`` ones, over the nodes
    the reference places that are nodes the proposal could place (both: [[name, id, ...]] or {name: [id]})."""
    def groups(s: Any) -> list[list[str]]:
        return [list(v) for v in s.values()] if isinstance(s, Mapping) else [list(g[1:]) for g in s]

    ref, prop = groups(reference), groups(proposed)
    nodes = {n for g in ref for n in g}
    ref_of = {n: k for k, g in enumerate(ref) for n in g}
    prop_of = {n: k for k, g in enumerate(prop) for n in g if n in nodes}
    order = sorted(nodes)
    R = {(a, b) for i, a in enumerate(order) for b in order[i + 1:] if ref_of[a] == ref_of[b]}
    P = {(a, b) for i, a in enumerate(order) for b in order[i + 1:]
         if a in prop_of and b in prop_of and prop_of[a] == prop_of[b]}
    shared = len(P & R)
    precision = shared / len(P) if P else 0.0
    recall = shared / len(R) if R else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_nodes": len(nodes), "reference_pairs": len(R),
            "proposed_pairs": len(P), "shared_pairs": shared}
