"""Scoring an explanation by what it predicts, as delphi's classifier scorers do, and the metrics of the
predictions (delphi's ``log/result_analysis.py``).

- **Detection**: the scorer reads the explanation and one context (``n_shown`` per prompt), plain, and
  says whether the unit fires in it (1) or not (0). Contexts: the test windows (activating, by quantile)
  and the negatives (random windows, or the look-alike ones with ``negatives="hard"``).
- **Fuzzing**: every context is shown with tokens marked between << >> — an activating one with its
  truly active tokens marked, a negative with as many tokens marked at random as the test windows have
  active ones on average (ceil) — and the scorer says whether the marks are right.

Contexts are taken negatives first, then test windows, shuffled by ``random.Random(42)`` and cut into
prompts of ``n_shown`` (delphi's ``Classifier``; one shuffle per unit, so a unit's prompts do not depend
on which units were scored before it). An answer is read from its first ``[...]``; one that is not a
list of ``n_shown`` zeros and ones is malformed: asked again (``retries`` times, sampled at temperature
0.7), then left without predictions — counted, never fatal. A local model's answers are held to that
form unless ``free_answers`` (``clients``: ``binary_answers``); an endpoint's are free.

Per unit and pooled over units (delphi's ``get_agg_metrics``): balanced accuracy (TPR + TNR) / 2,
precision, recall, F1 over the predictions made, and the ROC AUC of P(1) where the scorer gave
log-probabilities (``log_prob=True``).
"""

from __future__ import annotations

import math
import random
from typing import Literal, Sequence

from typing_extensions import TypedDict

from .clients import ChatClient
from .examples import Context, UnitExamples
from .prompts import ScorerKind, fuzz_text, parse_predictions, prediction_probabilities, scorer_messages

Negatives = Literal["random", "hard"]
SCORERS: tuple[ScorerKind, ...] = ("detection", "fuzz")


class Prediction(TypedDict):
    """One context's verdict: the context as shown, its quantile (−1/−2: a negative), whether the unit
    fires in it, the scorer's prediction and P(1) (None where its answer was malformed or gave none)."""

    text: str
    quantile: int
    activating: bool
    prediction: bool | None
    probability: float | None


class Metrics(TypedDict):
    """Classification metrics of predictions (delphi's ``compute_classification_metrics``), the ROC AUC
    (None without probabilities or with one class), and how many contexts had no prediction."""

    balanced_accuracy: float
    precision: float
    recall: float
    f1: float
    tpr: float
    tnr: float
    auc: float | None
    n: int
    n_positive: int
    n_negative: int
    n_unanswered: int


class Score(TypedDict):
    """One scorer's verdicts on one unit's explanation: per-context predictions, their metrics, recall per
    quantile of the test windows, and the malformed answers behind them (retries included)."""

    scorer: str
    predictions: list[Prediction]
    metrics: Metrics
    recall_by_quantile: list[float | None]
    malformed: int
    prompts: int


def samples(kind: ScorerKind, ex: UnitExamples, negatives: Negatives = "random") -> list[tuple[str, Context, bool]]:
    """(shown text, context, activating) of every context the scorer judges, in delphi's order (negatives
    first, then test windows; not yet shuffled)."""
    neg = ex["random_negatives"] if negatives == "random" else ex["hard_negatives"]
    if kind == "detection":
        return [("".join(c["tokens"]), c, False) for c in neg] + [("".join(c["tokens"]), c, True) for c in ex["test"]]
    test = ex["test"]
    line = ex["line"]  # delphi counts a context's non-zero activations; a neuron's line is above 0
    n_wrong = math.ceil(sum(sum(a > line if line > 0 else a != 0 for a in c["acts"]) for c in test) / len(test)) \
        if test else 0
    if neg and any(a > 0 for a in neg[0]["acts"]):  # delphi: negatives that fire are shown with their own marks
        shown = [(fuzz_text(c, 0), c, False) for c in neg]
    else:
        shown = [(fuzz_text(c, n_wrong), c, False) for c in neg]
    return shown + [(fuzz_text(c, 0), c, True) for c in test]


def metrics(predictions: Sequence[Prediction]) -> Metrics:
    """The metrics of the answered predictions (see the module docstring)."""
    answered = [p for p in predictions if p["prediction"] is not None]
    pos = sum(p["activating"] for p in answered)
    neg = len(answered) - pos
    tp = sum(p["prediction"] and p["activating"] for p in answered)
    tn = sum(not p["prediction"] and not p["activating"] for p in answered)
    fp = sum(p["prediction"] and not p["activating"] for p in answered)
    tpr = tp / pos if pos else 0.0
    tnr = tn / neg if neg else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr else 0.0
    with_p = [(p["probability"], p["activating"]) for p in predictions if p["probability"] is not None]
    return {"balanced_accuracy": (tpr + tnr) / 2, "precision": precision, "recall": tpr, "f1": f1, "tpr": tpr,
            "tnr": tnr, "auc": roc_auc([s for s, _ in with_p], [y for _, y in with_p]), "n": len(answered),
            "n_positive": pos, "n_negative": neg, "n_unanswered": len(predictions) - len(answered)}


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The area under the ROC curve (ties count half: the Mann–Whitney U), None with one class or none."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    ranked = sorted(scores)
    rank: dict[float, float] = {}
    i = 0
    while i < len(ranked):  # the mean rank (1-based) of each distinct score
        j = i
        while j < len(ranked) and ranked[j] == ranked[i]:
            j += 1
        rank[ranked[i]] = (i + 1 + j) / 2
        i = j
    u = sum(rank[s] for s in pos) - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def score(kind: ScorerKind, client: ChatClient, explanation: str, ex: UnitExamples, *, n_shown: int = 1,
          negatives: Negatives = "random", log_prob: bool = False, retries: int = 1, seed: int = 42,
          free_answers: bool = False) -> Score:
    """One scorer's verdicts on ``explanation`` over unit ``ex``'s contexts (see the module docstring)."""
    if kind not in SCORERS:
        raise ValueError(f"scorer {kind!r}; valid: {', '.join(SCORERS)}")
    if n_shown < 1:
        raise ValueError(f"n_shown={n_shown}: must be ≥ 1")
    if not ex["test"] or not ex[f"{negatives}_negatives"]:
        raise ValueError(f"unit {ex['unit']} has {len(ex['test'])} test contexts and {len(ex[f'{negatives}_negatives'])} "
                         f"{negatives} negatives: scoring needs both")
    shown = samples(kind, ex, negatives)
    random.Random(seed).shuffle(shown)
    batches = [shown[i:i + n_shown] for i in range(0, len(shown), n_shown)]
    conversations = [scorer_messages(kind, explanation, [t for t, _, _ in b]) for b in batches]
    verdicts = _ask(client, conversations, [len(b) for b in batches], log_prob=log_prob, retries=retries,
                    free=free_answers)
    predictions: list[Prediction] = []
    for batch, (answers, probs, _) in zip(batches, verdicts):
        for k, (text, ctx, activating) in enumerate(batch):
            predictions.append({"text": text, "quantile": ctx["quantile"], "activating": activating,
                                "prediction": answers[k] if answers is not None else None,
                                "probability": probs[k] if probs is not None else None})
    n_q = max((c["quantile"] for c in ex["test"]), default=-1) + 1
    by_q: list[float | None] = []
    for q in range(n_q):
        got = [p["prediction"] for p in predictions if p["activating"] and p["quantile"] == q and p["prediction"] is not None]
        by_q.append(sum(got) / len(got) if got else None)
    return {"scorer": kind, "predictions": predictions, "metrics": metrics(predictions), "recall_by_quantile": by_q,
            "malformed": sum(m for _, _, m in verdicts), "prompts": len(batches)}


def _ask(client: ChatClient, conversations: list, sizes: list[int], *, log_prob: bool, retries: int, free: bool
         ) -> list[tuple[list[bool] | None, list[float] | None, int]]:
    """Per conversation: its predictions (None if every answer was malformed), P(1) per context (or None),
    and how many malformed answers it took."""
    out: list[tuple[list[bool] | None, list[float] | None, int]] = [(None, None, 0)] * len(conversations)
    todo = list(range(len(conversations)))
    for attempt in range(retries + 1):
        if not todo:
            break
        still = []
        for size in sorted({sizes[i] for i in todo}):  # one request per prompt size: a local model's answer form
            ask = [i for i in todo if sizes[i] == size]
            replies = client.chat([conversations[i] for i in ask], max_tokens=4 * size + 8,
                                  temperature=0.0 if attempt == 0 else 0.7, top_logprobs=5 if log_prob else 0,
                                  seed=attempt, binary_answers=0 if free else size)
            for i, reply in zip(ask, replies):
                try:
                    answers = parse_predictions(reply.text, size)
                except ValueError:
                    out[i] = (None, None, out[i][2] + 1)
                    still.append(i)
                    continue
                probs = prediction_probabilities(reply.logprobs, size) if log_prob and reply.logprobs else None
                out[i] = (answers, probs, out[i][2])
        todo = still
    return out


def pooled(scores: Sequence[Score]) -> Metrics:
    """One scorer's metrics over every unit's predictions together (delphi's ``get_agg_metrics``)."""
    return metrics([p for s in scores for p in s["predictions"]])
