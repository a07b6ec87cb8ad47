"""Circuit: a subgraph of the model's components that carries a behaviour, with its evidence.

Node names: ``embed``, ``a{layer}.h{head}`` (attention heads), ``m{layer}`` (MLPs), ``logits``.
Edges are (sender, receiver, score). Faithfulness and completeness are the evidence a circuit
claim needs; they are None until measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..report.graph import graph_html, graph_svg
from ..results import Result


@dataclass
class Circuit(Result):
    nodes: list[str]
    edges: list[list]  # [sender, receiver, score]
    metric: str = ""
    faithfulness: float | None = None
    completeness: float | None = None
    method: str = ""
    extra: dict = field(default_factory=dict)
    title: ClassVar[str] = "Circuit"

    def evidence(self) -> dict:
        return {"faithfulness": self.faithfulness, "completeness": self.completeness, "n_edges": len(self.edges)}

    def summary(self) -> str:
        strongest = sorted(self.edges, key=lambda e: -abs(e[2]))[:5]
        ev = ", ".join(f"{k} {v:.2f}" for k, v in (("faithfulness", self.faithfulness),
                                                   ("completeness", self.completeness)) if v is not None)
        return (f"{len(self.nodes)} nodes, {len(self.edges)} edges{' by ' + self.method if self.method else ''}"
                f"{' on ' + self.metric if self.metric else ''}{'; ' + ev if ev else ''}.\n"
                "Strongest edges: " + ", ".join(f"{a}→{b} {s:+.2f}" for a, b, s in strongest))

    def html(self, png: bytes | None = None) -> str:
        import html

        return (f"<section class='result circuit'><h2>{html.escape(self.title)}</h2><pre>{html.escape(self.summary())}</pre>"
                f"{graph_html(self.nodes, [tuple(e) for e in self.edges])}</section>")

    def svg(self) -> str:
        """The circuit diagram as a standalone SVG (stored beside the finding in the archive)."""
        return graph_svg(self.nodes, [tuple(e) for e in self.edges])
