"""A behaviour task: clean/corrupted prompt pairs of equal token length, and a metric on the last
position's logits. Seeded and versioned; ``solved_by`` keeps the pairs a model gets right."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import torch

from ..models.model import Model
from ..results import Provenance, Result


@dataclass
class Task:
    """clean, corrupted: token ids per pair (equal lengths within a pair); good / bad: token ids
    per pair whose scores count for and against the behaviour; metric: ``logit_diff`` (mean logit
    of good − mean logit of bad) or ``prob_diff`` (P(good) − P(bad), summed over each set)."""

    name: str
    version: int
    seed: int
    clean: list[list[int]]
    corrupted: list[list[int]]
    good: list[list[int]]
    bad: list[list[int]]
    metric: Literal["logit_diff", "prob_diff"] = "logit_diff"
    texts: list[str] = field(default_factory=list)
    METRICS: ClassVar[tuple[str, ...]] = ("logit_diff", "prob_diff")
    POSITIONS: ClassVar[str] = "last"  # "all": ``score`` reads every position's logits (compiled programs)

    def __post_init__(self):
        n = len(self.clean)
        if not n:
            raise ValueError(f"task {self.name!r} has no prompt pairs")
        if not len(self.corrupted) == len(self.good) == len(self.bad) == n:
            raise ValueError(f"task {self.name!r}: clean, corrupted, good and bad need one entry per pair ({n})")
        for i, (c, k) in enumerate(zip(self.clean, self.corrupted)):
            if len(c) != len(k):
                raise ValueError(f"task {self.name!r} pair {i}: clean has {len(c)} tokens, corrupted {len(k)}; "
                                 "a pair must have equal token lengths so positions correspond")
        if self.metric not in self.METRICS:
            raise ValueError(f"metric={self.metric!r}; valid: {', '.join(map(repr, self.METRICS))}")

    def __len__(self) -> int:
        return len(self.clean)

    def subset(self, rows) -> "Task":
        """The pairs at ``rows`` (indices)."""
        rows = list(rows)
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return replace(self, clean=pick(self.clean), corrupted=pick(self.corrupted), good=pick(self.good),
                       bad=pick(self.bad), texts=pick(self.texts) if self.texts else [])

    def one_length(self) -> "Task":
        """The pairs of the most common token length (position-by-position sweeps need one)."""
        lengths = [len(c) for c in self.clean]
        common = max(set(lengths), key=lengths.count)
        return self.subset(i for i, n in enumerate(lengths) if n == common)

    def read(self, logits: torch.Tensor) -> torch.Tensor:
        """What ``score`` reads of a run's logits [batch, pos, vocab]: the last position's [batch,
        vocab] (or, for a task scoring every position, all of them)."""
        return logits if self.POSITIONS == "all" else logits[:, -1]

    def score(self, last_logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The metric per row from last-position logits [batch, vocab]; row r is pair
        ``rows[r]`` (default: row i is pair i mod len(task), for tiled batches)."""
        logits = last_logits.float()
        if rows is None:
            rows = torch.arange(logits.shape[0]) % len(self)
        values = logits.log_softmax(-1).exp() if self.metric == "prob_diff" else logits
        out = torch.empty(logits.shape[0], device=logits.device)
        for r, i in enumerate(rows.tolist()):
            g = values[r, self.good[i]]
            b = values[r, self.bad[i]]
            out[r] = (g.sum() - b.sum()) if self.metric == "prob_diff" else (g.mean() - b.mean())
        return out

    def run_metric(self, model: Model, which: Literal["clean", "corrupted"] = "clean", interventions=()) -> torch.Tensor:
        """The metric of every pair on the clean or corrupted prompts: [pairs]."""
        with torch.no_grad():
            run = model.run(getattr(self, which), interventions=list(interventions))
        return self.score(self.read(run.logits))

    def solved_by(self, model: Model, margin: float = 0.0) -> "Task":
        """The pairs whose clean metric exceeds ``margin`` and the corrupted one (the model does the
        behaviour, and the corruption removes it); an error if none are left."""
        clean, corrupted = self.run_metric(model, "clean"), self.run_metric(model, "corrupted")
        keep = [i for i in range(len(self)) if clean[i] > margin and clean[i] > corrupted[i]]
        if not keep:
            raise ValueError(f"{model.name} solves none of the {len(self)} pairs of task {self.name!r}")
        return self.subset(keep)

    def evaluate(self, model: Model) -> "TaskEval":
        """Clean and corrupted metric of every pair, as a result."""
        return TaskEval(provenance=Provenance.of(model, prompts=self.clean, dataset=f"{self.name} v{self.version}",
                                                 seed=self.seed),
                        task=self.name, metric=self.metric, texts=self.texts,
                        clean=self.run_metric(model, "clean"), corrupted=self.run_metric(model, "corrupted"))


@dataclass
class TaskEval(Result):
    """A model on a task: the metric per pair on clean and corrupted prompts ([pairs] each)."""

    task: str
    metric: str
    texts: list[str]
    clean: torch.Tensor
    corrupted: torch.Tensor
    title: ClassVar[str] = "Task evaluation"

    def summary(self) -> str:
        solved = float((self.clean > 0).float().mean())
        return (f"{self.task}: {len(self.clean)} pairs, {self.metric} clean {float(self.clean.mean()):.3f} ± "
                f"{float(self.clean.std()) if len(self.clean) > 1 else 0:.3f}, corrupted {float(self.corrupted.mean()):.3f}"
                + (f"; clean metric > 0 on {solved:.0%}" if self.metric != "l2" else " (0: the clean outputs)"))

    def evidence(self) -> dict:
        return {"clean": float(self.clean.mean()), "corrupted": float(self.corrupted.mean()), "pairs": len(self.clean)}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist([self.clean.numpy(), self.corrupted.numpy()], bins=20, label=["clean", "corrupted"])
        ax.set(xlabel=self.metric, ylabel="pairs", title=self.task)
        ax.legend()
        return fig


def token_ids(model_or_tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    return tok(text, add_special_tokens=False)["input_ids"]


def single_tokens(model: Model, words) -> list[str]:
    """The ``words`` that are one token for the model's tokenizer."""
    return [w for w in words if len(token_ids(model, w)) == 1]
