"""Attribution: scores per input feature (tokens, or named features), with their evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..results import Result


@dataclass
class Attribution(Result):
    """Scores per feature for one output. For integrated gradients ``gap`` is the completeness gap
    sum(scores) − (F(input) − F(baseline)); ``converged`` says whether it met the tolerance; any
    reason to distrust the scores is in ``warnings`` and shown wherever the result is drawn."""

    labels: list[str]
    scores: torch.Tensor
    method: str
    target: str
    f_input: float | None = None
    f_baseline: float | None = None
    gap: float | None = None
    converged: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    title: ClassVar[str] = "Attribution"

    @property
    def rel_gap(self) -> float | None:
        if self.gap is None or self.f_input is None or self.f_baseline is None:
            return None
        return abs(self.gap) / max(abs(self.f_input - self.f_baseline), 1e-12)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = self.scores.abs().argsort(descending=True)[:k].tolist()
        return [(self.labels[i], float(self.scores[i])) for i in order]

    def summary(self) -> str:
        lines = [f"{self.method} attribution of {self.target}: " + ", ".join(f"{l!r} {s:+.3g}" for l, s in self.top(6))]
        if self.gap is not None:
            lines.append(f"completeness: sum {float(self.scores.sum()):.4g} vs F(x)−F(baseline) "
                         f"{self.f_input - self.f_baseline:.4g} (gap {self.gap:+.3g}, {100 * self.rel_gap:.2g}%)"
                         + ("" if self.converged is None else f" — {'converged' if self.converged else 'NOT converged'}"))
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def evidence(self) -> dict:
        return {"method": self.method, "gap": self.gap, "rel_gap": self.rel_gap, "converged": self.converged,
                "top": self.top(5), "warnings": self.warnings}

    def figure(self):
        import matplotlib.pyplot as plt

        n = len(self.labels)
        fig, ax = plt.subplots(figsize=(min(14, 0.6 * n + 2), 2.6))
        vals = self.scores.float().numpy()
        ax.bar(range(n), vals, color=["#2b6cb0" if v >= 0 else "#c53030" for v in vals])
        ax.set_xticks(range(n), [repr(l) for l in self.labels], rotation=45, ha="right", fontsize=8)
        ax.axhline(0, color="#999", lw=0.8)
        title = f"{self.method}: {self.target}"
        if self.converged is False:
            title += "  (NOT converged)"
        ax.set_title(title, fontsize=9, color="#c53030" if self.converged is False else "black")
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        """The input with each token shaded by its score (blue positive, red negative); a warning
        banner when the attribution is not converged."""
        scores = self.scores.float().tolist()
        top = max((abs(s) for s in scores), default=0.0) or 1.0
        cells = [(label, s, min(1.0, abs(s) / top)) for label, s in zip(self.labels, scores)]
        return self._render("results/attribution.html", cells=cells)
