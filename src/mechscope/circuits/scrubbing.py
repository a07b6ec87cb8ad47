"""Causal scrubbing (Chan et al. 2022) of hypotheses written over the component graph.

A hypothesis says which edges of the model matter and what each carries: a mapping from an edge
(``"a0.h1->logits"``) or a sender (``"a0.h1"``: every edge out of it) to a *feature* of the
input — a function of the token row, such as ``lambda toks: toks[0]`` — or to None ("carries
whatever it carries": left as it is). The scrubbed run then

- feeds every claimed edge the sender's output on *another* input with the same feature value
  (a resample the hypothesis says cannot matter), and
- feeds every edge the hypothesis does not mention the sender's output on a random other input.

Loss recovered = (L_random − L_scrubbed) / (L_random − L_model), with L the cross-entropy of the
target token at the last position, and L_random the loss when every edge reads a random input: 1
means the hypothesis explains all of the model's performance, 0 none of it.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable, ClassVar, Hashable

import torch

from ..models.model import Model
from ..results import Provenance, Result
from .edges import edge_run, sender_outputs
from .graph import Graph

Feature = Callable[[list[int]], Hashable]
Hypothesis = dict[str, Feature | None]


@dataclass
class Scrubbing(Result):
    """Loss recovered by each hypothesis (``hypotheses``: name -> the claims as text)."""

    hypotheses: dict[str, dict[str, str]]
    loss_model: float
    loss_random: float
    loss_scrubbed: list[float]
    recovered: list[float]
    resamples: int
    title: ClassVar[str] = "Causal scrubbing"

    def summary(self) -> str:
        rows = "\n".join(f"  {name}: loss {loss:.3f}, recovered {rec:.2f}"
                         for name, loss, rec in zip(self.hypotheses, self.loss_scrubbed, self.recovered))
        return (f"causal scrubbing of {len(self.hypotheses)} hypotheses (model loss {self.loss_model:.3f}, "
                f"all edges random {self.loss_random:.3f}; mean of {self.resamples} resamples):\n{rows}")

    def evidence(self) -> dict:
        return {"recovered": dict(zip(self.hypotheses, self.recovered))}

    def figure(self):
        import matplotlib.pyplot as plt

        names = list(self.hypotheses)
        fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.4))
        finite = [r if math.isfinite(r) else 0.0 for r in self.recovered]  # undefined (L_random = L_model): no bar
        ax.barh(range(len(names))[::-1], finite, color="#2b6cb0")
        ax.set_yticks(range(len(names))[::-1], [n if math.isfinite(r) else f"{n} (undefined)"
                                                for n, r in zip(names, self.recovered)], fontsize=8)
        ax.axvline(1.0, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="loss recovered", xlim=(min(0.0, min(finite) - 0.05), max(1.05, max(finite) + 0.05)))
        fig.tight_layout()
        return fig


def _resample(keys: list, generator: torch.Generator) -> torch.Tensor:
    """For each row, another row with the same key (itself only when it is alone)."""
    n = len(keys)
    out = torch.empty(n, dtype=torch.long)
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    for members in groups.values():
        idx = torch.tensor(members)
        if len(members) == 1:
            out[idx] = idx
            continue
        shift = torch.randint(1, len(members), (len(members),), generator=generator)
        out[idx] = idx[(torch.arange(len(members)) + shift) % len(members)]
    return out


def _claimed_edges(graph: Graph, key: str) -> list[tuple[int, int]]:
    if "->" in key:
        s, r = (part.strip() for part in key.split("->"))
        i = graph.sender_index(s)
        return [(i, j) for j in graph.receivers_of(r) if graph.allowed[i, j]]
    i = graph.sender_index(key)
    return [(i, j) for j in range(len(graph.receivers)) if graph.allowed[i, j]]


def causal_scrubbing(model: Model, inputs: list[list[int]], targets: list[int], hypotheses: dict[str, Hypothesis], *,
                     resamples: int = 4, seed: int = 0) -> Scrubbing:
    """Scrub each hypothesis on ``inputs`` (token rows of one length) with the target token of
    each row; all hypotheses of one resample run as copies of one forward."""
    if len({len(x) for x in inputs}) != 1:
        raise ValueError("causal scrubbing resamples whole inputs position by position: give rows of one length")
    if len(inputs) != len(targets) or len(inputs) < 2:
        raise ValueError(f"need ≥ 2 inputs and one target each (got {len(inputs)} inputs, {len(targets)} targets)")
    g = Graph.of(model)
    outputs = sender_outputs(model, g, inputs)
    target = torch.tensor(targets)
    names = list(hypotheses)
    features: list[Feature] = []
    keep = torch.zeros(len(names) + 1, len(g.senders), len(g.receivers))  # last copy: every edge random
    claims: list[list[tuple[int, int, int | None]]] = []
    for h, name in enumerate(names):
        rows = []
        for key, feature in hypotheses[name].items():
            try:
                edges = _claimed_edges(g, key)
            except KeyError as err:
                raise ValueError(f"hypothesis {name!r}: {err.args[0]}") from None
            if not edges:
                raise ValueError(f"hypothesis {name!r}: {key!r} names no edge of the model")
            if feature is not None and feature not in features:
                features.append(feature)
            for i, j in edges:
                keep[h, i, j] = 1.0
                rows.append((i, j, None if feature is None else features.index(feature)))
        claims.append(rows)
    weights = torch.zeros(len(features), *keep.shape)
    for h, rows in enumerate(claims):
        for i, j, f in rows:
            if f is not None:
                weights[f, h, i, j] = 1.0
    keys = [[f(list(x)) for x in inputs] for f in features]
    gen = torch.Generator().manual_seed(seed)
    losses = torch.zeros(len(names) + 1)
    n = len(inputs)
    for _ in range(resamples):
        random_rows = (torch.arange(n) + torch.randint(1, n, (n,), generator=gen)) % n  # never the row itself
        extra = [(weights[f], outputs[_resample(keys[f], gen)]) for f in range(len(features))]
        with torch.no_grad():
            logits = edge_run(model, g, inputs, keep=keep, ablated=outputs[random_rows], extra=extra).logits.float()
        ce = torch.nn.functional.cross_entropy(logits, target.repeat(len(names) + 1), reduction="none")
        losses += ce.view(len(names) + 1, n).mean(1) / resamples
    with torch.no_grad():
        base = torch.nn.functional.cross_entropy(model.run(inputs).logits[:, -1].float(), target).item()
    random = float(losses[-1])
    scrubbed = [float(v) for v in losses[:-1]]
    recovered = [(random - v) / (random - base) for v in scrubbed]
    described = {name: {k: ("unchanged" if f is None else getattr(f, "__doc__", None) or getattr(f, "__name__", "feature"))
                        for k, f in hyp.items()} for name, hyp in hypotheses.items()}
    return Scrubbing(provenance=Provenance.of(model, prompts=inputs, seed=seed, resamples=resamples,
                                              hypotheses=described),
                     hypotheses=described, loss_model=base, loss_random=random, loss_scrubbed=scrubbed,
                     recovered=recovered, resamples=resamples)
