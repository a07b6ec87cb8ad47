"""Circuit: a subgraph of the model's components that carries a behaviour, with its evidence.

Node names: ``embed``, ``a{layer}.h{head}`` (attention heads), ``m{layer}`` (MLPs), ``logits``.
Edges are [sender, receiver, score]; a receiver is a node or one input of a head
(``a3.h2.q``, ``a3.h2.k``, ``a3.h2.v``; ``a3.kv1.k`` for a key shared by a group of heads).
Faithfulness and completeness are the evidence a circuit claim needs; they are None until
measured (``circuits.evaluate``). ``to_json`` / ``from_json`` exchange circuits as plain JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..report.graph import graph_html, graph_svg
from ..results import Result


@dataclass
class Circuit(Result):
    nodes: list[str]
    edges: list[tuple[str, str, float]]  # [sender, receiver, score]
    metric: str = ""
    faithfulness: float | None = None
    completeness: float | None = None
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    title: ClassVar[str] = "Circuit"

    @property
    def edge_scores(self):
        """The ``EdgeScores`` ``discover`` chose this circuit by (None for ACDC from every edge); kept in this
        process, not saved (``Result.held``)."""
        return self.held("edge_scores")

    def evidence(self) -> dict:
        return {"faithfulness": self.faithfulness, "completeness": self.completeness, "n_edges": len(self.edges)}

    def summary(self) -> str:
        strongest = sorted(self.edges, key=lambda e: -abs(e[2]))[:5]
        ev = ", ".join(f"{k} {v:.2f}" for k, v in (("faithfulness", self.faithfulness),
                                                   ("completeness", self.completeness)) if v is not None)
        return (f"{len(self.nodes)} nodes, {len(self.edges)} edges{' by ' + self.method if self.method else ''}"
                f"{' on ' + self.metric if self.metric else ''}{'; ' + ev if ev else ''}.\n"
                "Strongest edges: " + ", ".join(f"{a}→{b} {s:+.2f}" for a, b, s in strongest))

    @classmethod
    def from_json(cls, text: str) -> "Circuit":
        """Read ``to_json``'s output back; a clear error for anything that is not a circuit."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not a circuit JSON document: {err}") from None
        if not isinstance(data, dict) or data.get("type") != "Circuit":
            found = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a circuit JSON document (type {found!r}, expected 'Circuit')")
        bad = [e for e in data.get("edges", []) if not (isinstance(e, list) and len(e) == 3)]
        if bad:
            raise ValueError(f"circuit edge {bad[0]!r} is not [sender, receiver, score]")
        return super().from_json(text)

    def figure(self):
        """Faithfulness against circuit size, when the circuit came from a size search."""
        curve = self.extra.get("curve")
        if not curve:
            raise NotImplementedError("this circuit has no faithfulness curve (it was not found by a size search)")
        import matplotlib.pyplot as plt

        xs, ys = zip(*curve)
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.semilogx(xs, ys, marker=".", label=self.extra.get("scored_by", self.method))
        if "target" in self.extra:
            ax.axhline(self.extra["target"], color="grey", ls="--", lw=0.8, label=f"target {self.extra['target']}")
        ax.axvline(len(self.edges), color="#c53030", lw=0.8, label=f"chosen: {len(self.edges)} edges")
        total = self.extra.get("total_edges")
        ax.set(xlabel="edges in circuit" + (f" (of {total})" if total else ""), ylabel="faithfulness",
               title=f"{self.extra.get('task', '')} — {self.extra.get('ablation', '')} ablation")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        return self._render("results/circuit.html", png=png, draw=draw,
                            graph=graph_html(self.nodes, [tuple(e) for e in self.edges]))

    def svg(self) -> str:
        """The circuit diagram as a standalone SVG (stored beside the finding in the archive)."""
        return graph_svg(self.nodes, [tuple(e) for e in self.edges])
