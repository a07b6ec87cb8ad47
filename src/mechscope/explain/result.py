"""``Explanations``: what a run of the explainer and scorers found, unit by unit — the explanation, its
scores, the baselines it was scored against, the malformed answers behind every number, and what the
chat models cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from typing_extensions import TypedDict

from .. import names
from ..results import Result
from .intruder import IntruderScore
from .scoring import Metrics, Score, metrics


class UnitExplanation(TypedDict):
    """One unit's line of an ``Explanations``: its index, explanation (None: none could be written, or
    ``skipped`` says why it was not tried), the malformed explainer answers, its firing statistics, and its
    scores — ``scores[scorer]`` for the explanation, ``baselines[name][scorer]`` for what it is compared with
    (``top_tokens``: a list of the tokens it fires on; ``shuffled``: another unit's explanation), and the
    intruder test of the unit itself (None unless asked for)."""

    unit: int
    explanation: str | None
    skipped: str
    malformed: int
    max_act: float
    density: float
    top_tokens: list[str]
    scores: dict[str, Score]
    baselines: dict[str, dict[str, Score]]
    intruder: IntruderScore | None


@dataclass
class Explanations(Result):
    """Explanations of ``kind`` units ("feature" of a dictionary, "neuron" of an MLP) read at ``site``
    (see ``mechscope.explain``). ``usage``: requests, cache hits and tokens per chat model."""

    kind: str
    site: str
    layer: int
    units: list[UnitExplanation]
    explainer: str
    scorer: str
    scorers: list[str]
    n_shown: int
    negatives: str
    usage: dict[str, dict[str, int]]
    title: ClassVar[str] = "Explanations"

    def name(self, i: int) -> str:
        """The i-th unit's name (``F17`` or ``L3 N17``)."""
        u = self.units[i]["unit"]
        return names.feature(u).label if self.kind == "feature" else names.neuron(self.layer, u).label

    def explanation(self, unit: int) -> str | None:
        """The explanation of unit index ``unit`` (None where it has none); KeyError if it was not explained."""
        for u in self.units:
            if u["unit"] == unit:
                return u["explanation"]
        raise KeyError(f"unit {unit} is not among the {len(self.units)} explained here")

    def pooled(self, scorer: str, baseline: str | None = None) -> Metrics:
        """A scorer's metrics over every unit's predictions together (delphi's aggregate), for the
        explanations or for a baseline."""
        preds = [p for u in self.units
                 for p in ((u["scores"] if baseline is None else u["baselines"].get(baseline, {})).get(scorer) or
                           {"predictions": []})["predictions"]]
        return metrics(preds)

    def per_unit(self, scorer: str, key: str = "balanced_accuracy", baseline: str | None = None) -> list[float | None]:
        """Per unit: a metric of one scorer (None where the unit has no such score)."""
        out = []
        for u in self.units:
            s = (u["scores"] if baseline is None else u["baselines"].get(baseline, {})).get(scorer)
            out.append(None if s is None else s["metrics"][key])
        return out

    def malformed(self) -> dict[str, int]:
        """Malformed answers behind the result: the explainer's and each scorer's (baselines included)."""
        out = {"explainer": sum(u["malformed"] for u in self.units)}
        if "intruder" in self.scorers:
            out["intruder"] = sum(u["intruder"]["malformed"] for u in self.units if u["intruder"] is not None)
        for s in (s for s in self.scorers if s != "intruder"):
            out[s] = sum(u["scores"][s]["malformed"] for u in self.units if s in u["scores"]) + \
                sum(b[s]["malformed"] for u in self.units for b in u["baselines"].values() if s in b)
        return out

    def summary(self) -> str:
        done = [u for u in self.units if u["explanation"] is not None]
        head = (f"{len(done)} of {len(self.units)} {self.kind}s at {self.site} explained by {self.explainer}, "
                f"scored by {self.scorer} ({', '.join(self.scorers)}; {self.n_shown} example(s) per prompt, "
                f"{self.negatives} negatives)")
        lines = [head]
        tested = [u["intruder"] for u in self.units if u["intruder"] is not None and u["intruder"]["n"]]
        if tested:
            right = sum(t["accuracy"] * t["n"] for t in tested)
            total = sum(t["n"] for t in tested)
            lines.append(f"  intruder: found in {right / total:.3f} of {total} prompts over {len(tested)} units (chance "
                         f"{tested[0]['chance']:.3f}; {sum(t['n_unanswered'] for t in tested)} unanswered)")
        for s in self.scorers:
            if s == "intruder":
                continue
            m = self.pooled(s)
            if m["n"] == 0:
                lines.append(f"  {s}: no predictions ({m['n_unanswered']} unanswered)")
                continue
            auc = f", AUC {m['auc']:.3f}" if m["auc"] is not None else ""
            lines.append(f"  {s}: balanced accuracy {m['balanced_accuracy']:.3f}{auc} over {m['n']} predictions "
                         f"({m['n_unanswered']} unanswered)")
            for b in sorted({b for u in self.units for b in u["baselines"]}):
                mb = self.pooled(s, b)
                auc = f", AUC {mb['auc']:.3f}" if mb["auc"] is not None else ""
                lines.append(f"    vs {b.replace('_', ' ')}: {mb['balanced_accuracy']:.3f}{auc}")
        bad = self.malformed()
        lines.append("  malformed answers: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
        for i, u in enumerate(self.units):
            if u["explanation"] is None:
                why = u["skipped"] or f"no explanation in {u['malformed']} answers"
                lines.append(f"  {self.name(i)}: — ({why})")
                continue
            scores = ", ".join(f"{s} {u['scores'][s]['metrics']['balanced_accuracy']:.2f}"
                               for s in self.scorers if s in u["scores"])
            lines.append(f"  {self.name(i)}: {u['explanation']!r}" + (f" — {scores}" if scores else ""))
        return "\n".join(lines)

    def evidence(self) -> dict[str, Any]:
        return {"kind": self.kind, "site": self.site, "explained": sum(u["explanation"] is not None for u in self.units),
                "pooled": {s: {k: self.pooled(s)[k] for k in ("balanced_accuracy", "auc", "n")}
                           for s in self.scorers if s != "intruder"},
                "malformed": self.malformed()}

    def figure(self):
        import matplotlib.pyplot as plt

        keys = [("balanced_accuracy", "balanced accuracy"), ("auc", "ROC AUC of P(1)")]
        scorers = [s for s in self.scorers if s != "intruder"]
        fig, axes = plt.subplots(len(scorers) or 1, 2, figsize=(7.5, 2.3 * max(1, len(scorers))), squeeze=False)
        baselines = sorted({b for u in self.units for b in u["baselines"]})
        for r, s in enumerate(scorers):
            for c, (key, label) in enumerate(keys):
                ax = axes[r, c]
                series = [("explanation", self.per_unit(s, key))] + [(b.replace("_", " "), self.per_unit(s, key, b))
                                                                    for b in baselines]
                for name, vals in series:
                    vals = [v for v in vals if v is not None]
                    if vals:
                        ax.hist(vals, bins=20, range=(0, 1), alpha=0.55, label=f"{name} (n={len(vals)})")
                ax.axvline(0.5, color="0.5", lw=0.8, ls="--")
                ax.set_title(f"{s}: {label}", fontsize=8)
                ax.tick_params(labelsize=6)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=6)
        fig.supylabel("units", fontsize=8)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        return self._render("results/explanations.html", png=png, draw=draw)
