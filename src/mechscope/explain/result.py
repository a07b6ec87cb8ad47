"""``Explanations``: what a run of the explainer and scorers found, unit by unit — the explanation, its
scores, the baselines it was scored against, the malformed answers behind every number, and what the
chat models cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from typing_extensions import NotRequired, TypedDict

from .. import names
from ..results import Result
from .intruder import IntruderScore
from .scoring import SCORERS, Metrics, Score, metrics
from .simulation import SimulationScore


class UnitExplanation(TypedDict):
    """One unit's line of an ``Explanations``: its index, explanation (None: none could be written, or
    ``skipped`` says why it was not tried), the malformed explainer answers, its firing statistics, and its
    scores — ``scores[scorer]`` for the explanation, ``baselines[name][scorer]`` for what it is compared with
    (``top_tokens``: a list of the tokens it fires on; ``shuffled``: another unit's explanation), and the
    intruder test of the unit itself (None unless asked for); ``simulation[name]`` the simulation scorer's
    verdict on the explanation ("explanation") and on each baseline."""

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
    simulation: NotRequired[dict[str, SimulationScore]]


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

    def correlations(self, name: str = "explanation") -> list[float | None]:
        """Per unit: the simulation scorer's correlation for the explanation (or baseline ``name``; None where
        the unit has none, or its prediction was constant)."""
        return [(u.get("simulation", {}).get(name) or {}).get("correlation") for u in self.units]

    def _simulated(self) -> list[str]:
        names = {k for u in self.units for k in u.get("simulation", {})}
        return [k for k in ("explanation", *sorted(names - {"explanation"})) if k in names]

    def _simulation_line(self) -> str:
        modes = sorted({v["mode"] for u in self.units for v in u.get("simulation", {}).values()})
        parts = []
        for k in self._simulated():
            got = [c for c in self.correlations(k) if c is not None]
            parts.append(f"{'vs ' if k != 'explanation' else ''}{k.replace('_', ' ')} "
                         f"{_mean(got):.3f}" + (f" (n={len(got)})" if k == "explanation" else "") if got else
                         f"{k.replace('_', ' ')}: no correlation")
        return f"  simulation ({', '.join(modes) or '-'}): mean correlation " + ", ".join(parts or ["-"])

    def malformed(self) -> dict[str, int]:
        """Malformed answers behind the result: the explainer's and each scorer's (baselines included)."""
        out = {"explainer": sum(u["malformed"] for u in self.units)}
        if "intruder" in self.scorers:
            out["intruder"] = sum(u["intruder"]["malformed"] for u in self.units if u["intruder"] is not None)
        if "simulation" in self.scorers:
            out["simulation"] = sum(v["malformed"] for u in self.units for v in u.get("simulation", {}).values())
        for s in (s for s in self.scorers if s in SCORERS):
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
        if "simulation" in self.scorers:
            lines.append(self._simulation_line())
        for s in self.scorers:
            if s not in SCORERS:
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
            sim = u.get("simulation", {}).get("explanation")
            if sim is not None:
                r = sim["correlation"]
                scores += (", " if scores else "") + ("simulation r " + (f"{r:.2f}" if r is not None else "—"))
            lines.append(f"  {self.name(i)}: {u['explanation']!r}" + (f" — {scores}" if scores else ""))
        return "\n".join(lines)

    def evidence(self) -> dict[str, Any]:
        return {"kind": self.kind, "site": self.site, "explained": sum(u["explanation"] is not None for u in self.units),
                "pooled": {s: {k: self.pooled(s)[k] for k in ("balanced_accuracy", "auc", "n")}
                           for s in self.scorers if s in SCORERS},
                **({"simulation": {k: _mean(self.correlations(k)) for k in self._simulated()}}
                   if "simulation" in self.scorers else {}),
                "malformed": self.malformed()}

    def figure(self):
        import matplotlib.pyplot as plt

        keys = [("balanced_accuracy", "balanced accuracy"), ("auc", "ROC AUC of P(1)")]
        scorers = [s for s in self.scorers if s in SCORERS]
        simulated = self._simulated() if "simulation" in self.scorers else []
        rows = len(scorers) + bool(simulated)
        fig, axes = plt.subplots(rows or 1, 2, figsize=(7.5, 2.3 * max(1, rows)), squeeze=False)
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
        if simulated:  # the correlations per unit, and their mean per quantile of the test windows
            left, right = axes[len(scorers), 0], axes[len(scorers), 1]
            for k in simulated:
                vals = [v for v in self.correlations(k) if v is not None]
                if vals:
                    left.hist(vals, bins=20, range=(-1, 1), alpha=0.55, label=f"{k.replace('_', ' ')} (n={len(vals)})")
                by_q = [(u.get("simulation", {}).get(k) or {}).get("correlation_by_quantile") or [] for u in self.units]
                n_q = max((len(b) for b in by_q), default=0)
                means = [_mean([b[q] for b in by_q if q < len(b)]) for q in range(n_q)]
                right.plot(range(1, n_q + 1), means, marker="o", ms=3, label=k.replace("_", " "))
            left.axvline(0, color="0.5", lw=0.8, ls="--")
            left.set_title("simulation: correlation per unit", fontsize=8)
            right.set_title("simulation: mean correlation by quantile (1 = strongest)", fontsize=8)
        for ax in axes.flat:
            ax.tick_params(labelsize=6)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        fig.supylabel("units", fontsize=8)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        return self._render("results/explanations.html", png=png, draw=draw)


def _mean(values: list[float | None]) -> float:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else float("nan")
