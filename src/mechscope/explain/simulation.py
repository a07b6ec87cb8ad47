"""Scoring an explanation by simulation, as delphi's simulator scorer does (after OpenAI's automated
interpretability): the scorer reads the explanation and predicts, token by token, how strongly the unit fires
(0–10); the score is the Pearson correlation of the predicted with the true activations.

- **True activations**: a test window's on delphi's 0–10 scale (``prompts.normalized``: ceil(10·a / the
  unit's max), clamped), a negative's all 0.
- **Log-probability mode** (``mode="logprobs"``, a local model): one prompt per window — system prompt,
  three worked examples, the explanation, then the window as lines ``token<TAB>unknown`` in the assistant's
  turn — read in one forward pass: after each tab of that turn, the 15 likeliest next tokens, of which those
  that read as an integer 0–10 are renormalised; the prediction is their expected value (delphi reads vLLM's
  ``prompt_logprobs`` the same way). Nothing is generated, nothing can be malformed.
- **JSON mode** (``mode="json"``, any endpoint): the scorer is shown the document and its tokens with empty
  activations as JSON (two worked examples) and answers the JSON filled in; an answer that is not JSON, or
  not one entry per token, predicts all 0 and counts as malformed; a value outside [0, 10] or not a number
  predicts 0 for that token (delphi's rules).

Scores (delphi's ``simulate_and_score``): the correlation over every window's tokens together — test windows
and negatives (delphi's "all", distance 0) — and per quantile of the test windows; each window's own
correlation. A constant prediction has no correlation (None, delphi's "nan").
"""

from __future__ import annotations

import json
import math
from typing import Literal, Sequence

from typing_extensions import TypedDict

from . import delphi_simulation as text
from .clients import ChatClient, Message
from .examples import Context, UnitExamples
from .prompts import normalized

Mode = Literal["logprobs", "json"]
MODES: tuple[Mode, ...] = ("logprobs", "json")
TOP_LOGPROBS = 15  # delphi's PROMPT_LOGPROBS_COUNT
JSON_MAX_TOKENS = 1000  # delphi's JSON_MAX_TOKENS


class Simulated(TypedDict):
    """One window: its quantile (−1: a negative), the true activations (0–10), the predicted ones, and
    their correlation (None where either is constant)."""

    quantile: int
    true: list[int]
    predicted: list[float]
    correlation: float | None


class SimulationScore(TypedDict):
    """The simulation scorer's verdict on one explanation over one unit's windows."""

    scorer: str
    mode: str
    correlation: float | None
    correlation_by_quantile: list[float | None]
    windows: list[Simulated]
    malformed: int
    prompts: int


def logprob_messages(explanation: str, tokens: Sequence[str]) -> list[Message]:
    """delphi's log-probability-mode prompt for one window (its ``_make_logprob_prompt``)."""
    msgs: list[Message] = [{"role": "system", "content": text.LOGPROB_SYSTEM}]
    for user, assistant in text.LOGPROB_FEW_SHOT:
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    n = len(text.LOGPROB_FEW_SHOT) + 1
    unknown = "\n".join(f"{t}\tunknown" for t in tokens)
    msgs += [{"role": "user", "content": f"\n\nNeuron {n}\nExplanation of neuron {n} behavior: "
                                         f"{text.EXPLANATION_PREFIX} {explanation.strip()}"},
             {"role": "assistant", "content": f"\nActivations: \n<start>\n{unknown}\n<end>\n"}]
    return msgs


def json_messages(explanation: str, tokens: Sequence[str]) -> list[Message]:
    """delphi's JSON-mode prompt for one window (its ``_make_json_prompt``)."""
    msgs: list[Message] = [{"role": "system", "content": text.JSON_SYSTEM}]
    for user, assistant in text.JSON_FEW_SHOT:
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    msgs.append({"role": "user", "content": json.dumps({"to_find": explanation, "document": "".join(tokens),
                                                        "activations": [{"token": t, "activation": None}
                                                                        for t in tokens]})})
    return msgs


def expected_value(top: Sequence[Sequence]) -> float:
    """The expected activation after one tab from its likeliest next tokens [[decoded, logprob], ...]: those
    that read as an integer 0–10 (Python's ``int``, as delphi's ``parse_top_logprobs``), renormalised; 0 if
    none does."""
    by_text = {str(t): float(lp) for t, lp, *_ in top}  # later entries of one text replace earlier ones, as delphi
    probs: dict[int, float] = {}
    for t, lp in by_text.items():
        try:
            v = int(t)
        except ValueError:
            continue
        if 0 <= v <= 10:
            probs[v] = math.exp(lp)
    total = sum(probs.values())
    return sum(v * p / total for v, p in probs.items()) if total else 0.0


def parse_json_activations(answer: str, n: int) -> list[float] | None:
    """The activations of a JSON-mode answer for ``n`` tokens (delphi's ``_parse_json_response``): None when
    it is not JSON with an ``activations`` list of ``n`` entries; an entry without a number in [0, 10] is 0."""
    try:
        got = json.loads(answer)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(got, dict) or "activations" not in got or not isinstance(got["activations"], list) \
            or len(got["activations"]) != n:
        return None
    out = []
    for entry in got["activations"]:
        try:
            v = float(entry["activation"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            v = 0.0
        out.append(v if 0 <= v <= 10 else 0.0)
    return out


def correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson's r of two aligned sequences (numpy's ``corrcoef``, as delphi); None where either is constant."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    r = float(np.corrcoef(x, y)[0, 1])
    return None if math.isnan(r) else r


def windows(ex: UnitExamples, negatives: str = "random") -> list[tuple[Context, list[int]]]:
    """(window, true activations 0–10) of every window simulated, in delphi's order: test windows, then
    negatives."""
    neg = ex["random_negatives"] if negatives == "random" else ex["hard_negatives"]
    return [(c, normalized(c["acts"], ex["max_act"])) for c in ex["test"]] + [(c, [0] * len(c["tokens"])) for c in neg]


def simulate(client: ChatClient, explanation: str, ex: UnitExamples, *, mode: Mode = "logprobs",
             negatives: str = "random") -> SimulationScore:
    """The simulation scorer's verdict on ``explanation`` over unit ``ex``'s windows (see the module
    docstring). ``mode="logprobs"`` needs a client with ``prompt_logprobs`` (a local model)."""
    if mode not in MODES:
        raise ValueError(f"simulation mode {mode!r}; valid: {', '.join(MODES)}")
    shown = windows(ex, negatives)
    if not ex["test"]:
        raise ValueError(f"unit {ex['unit']} has no test windows: simulation needs them")
    malformed = 0
    if mode == "logprobs":
        if not hasattr(client, "prompt_logprobs"):
            raise ValueError(f"{client.name} gives no prompt log-probabilities (only a local model does): "
                             "simulate with mode='json'")
        replies = client.prompt_logprobs([logprob_messages(explanation, c["tokens"]) for c, _ in shown],
                                         after="\t", top=TOP_LOGPROBS)
        predicted = []
        for (c, _), r in zip(shown, replies):
            values = [expected_value(step["top"]) for step in (r.logprobs or [])][:len(c["tokens"])]
            predicted.append(values + [0.0] * (len(c["tokens"]) - len(values)))
    else:
        replies = client.chat([json_messages(explanation, c["tokens"]) for c, _ in shown], max_tokens=JSON_MAX_TOKENS)
        predicted = []
        for (c, _), r in zip(shown, replies):
            got = parse_json_activations(r.text, len(c["tokens"]))
            malformed += got is None
            predicted.append(got if got is not None else [0.0] * len(c["tokens"]))
    sims: list[Simulated] = [{"quantile": c["quantile"] if k < len(ex["test"]) else -1, "true": true,
                              "predicted": list(pred), "correlation": correlation(true, pred)}
                             for k, ((c, true), pred) in enumerate(zip(shown, predicted))]
    n_q = max(c["quantile"] for c in ex["test"]) + 1
    by_q = []
    for q in range(n_q):
        group = [s for s in sims if s["quantile"] == q]
        by_q.append(correlation([v for s in group for v in s["true"]], [v for s in group for v in s["predicted"]])
                    if group else None)
    return {"scorer": "simulation", "mode": mode,
            "correlation": correlation([v for s in sims for v in s["true"]], [v for s in sims for v in s["predicted"]]),
            "correlation_by_quantile": by_q, "windows": sims, "malformed": malformed, "prompts": len(shown)}
