"""The chat messages an explainer and a scorer are sent, built as delphi builds them (its texts are in
``delphi_prompts.py``), and the reading of their answers.

Contexts are shown as their tokens joined (each token decoded alone, as delphi's ``batch_decode``), with
the tokens that matter between ``<<`` and ``>>``: for the explainer, runs of tokens whose activation is
above ``threshold`` × the context's peak; for fuzzing, tokens at or above it in an activating context,
or ``n_wrong`` tokens picked at random in a non-activating one (delphi's ``_prepare_text``).
"""

from __future__ import annotations

import json
import math
import random
import re
from typing import Callable, Literal, Sequence

from . import delphi_prompts as text
from .examples import Context

Message = dict[str, str]
ScorerKind = Literal["detection", "fuzz"]
UNPARSED = "Explanation could not be parsed."  # delphi's explanation when an answer has none


def _marked(tokens: Sequence[str], marked: Callable[[int], bool]) -> str:
    """The tokens joined, each maximal run of marked ones between << and >>."""
    out, i = [], 0
    while i < len(tokens):
        if marked(i):
            out.append("<<")
            while i < len(tokens) and marked(i):
                out.append(tokens[i])
                i += 1
            out.append(">>")
        else:
            out.append(tokens[i])
            i += 1
    return "".join(out)


def normalized(acts: Sequence[float], max_act: float) -> list[int]:
    """Activations on delphi's 0–10 scale: ceil(10·a / the unit's max), clamped to [0, 10] (in float32, as
    delphi computes it, so a value on a boundary rounds the same way)."""
    import torch

    return [int(v) for v in (torch.tensor(acts, dtype=torch.float32) * 10 / max(max_act, 1e-6)).ceil().clamp(0, 10)]


def explainer_context(ctx: Context, max_act: float, *, activations: bool, threshold: float = 0.3) -> str:
    """One training context as the explainer reads it: marked text, then (``activations``) its marked
    tokens' activations on the 0–10 scale (the first 11, as delphi shows them)."""
    acts = ctx["acts"]
    cut = max(acts) * threshold
    shown = _marked(ctx["tokens"], lambda i: acts[i] > cut)
    if not activations:
        return shown
    pairs = [f'("{t}" : {n}), ' for t, a, n in zip(ctx["tokens"], acts, normalized(acts, max_act)) if a > cut][:11]
    return shown + "\nActivations: " + "".join(pairs)


def explainer_messages(train: Sequence[Context], max_act: float, *, activations: bool = True, cot: bool = False,
                       threshold: float = 0.3) -> list[Message]:
    """delphi's ``DefaultExplainer`` prompt: system, three worked examples, then the unit's contexts."""
    shown = "\n".join(explainer_context(c, max_act, activations=activations, threshold=threshold) for c in train)
    examples = text.EXPLAINER_EXAMPLES_WITH_ACTIVATIONS if activations else text.EXPLAINER_EXAMPLES
    messages = [{"role": "system", "content": text.EXPLAINER_SYSTEM.format(prompt=text.EXPLAINER_COT if cot else "")}]
    for n in range(3):
        answer = (text.EXPLAINER_COT_RESPONSES[n] if cot else "") + text.EXPLAINER_ANSWERS[n]
        messages += [{"role": "user", "content": examples[n]}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": f"\n{shown}\n"}]


def parse_explanation(answer: str) -> str | None:
    """The explanation after ``[EXPLANATION]:``: its first non-empty line (delphi keeps every line after the
    marker; a small model's second line is rambling), or None where there is none."""
    match = re.search(r"\[EXPLANATION\]:\s*(.*)", answer, re.DOTALL)
    lines = [ln.strip() for ln in match.group(1).splitlines() if ln.strip()] if match else []
    return lines[0] if lines else None


def scorer_messages(kind: ScorerKind, explanation: str, texts: Sequence[str]) -> list[Message]:
    """The detection or fuzzing prompt for one batch of shown contexts (``Example i: text``)."""
    system, shots = (text.DETECTION_SYSTEM, text.DETECTION_FEW_SHOT) if kind == "detection" else \
        (text.FUZZ_SYSTEM, text.FUZZ_FEW_SHOT)
    examples = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts))
    messages = [{"role": "system", "content": system}]
    for n in range(0, 6, 2):
        messages += [{"role": "user", "content": shots[n]}, {"role": "assistant", "content": shots[n + 1]}]
    return messages + [{"role": "user", "content": text.SCORER_QUERY.format(explanation=explanation,
                                                                             examples=examples)}]


def fuzz_text(ctx: Context, n_wrong: int, threshold: float = 0.3) -> str:
    """A context as fuzzing shows it. ``n_wrong`` = 0: its tokens at or above ``threshold`` × its peak
    marked. ``n_wrong`` > 0 (a non-activating context, whose activations count as 0): ``n_wrong`` tokens
    marked — the token at len − len // 4 first, the rest drawn by ``random.Random(22)``, as delphi draws them."""
    acts, tokens = ctx["acts"], ctx["tokens"]
    if n_wrong == 0:
        import torch

        marked = (torch.tensor(acts, dtype=torch.float32) >= threshold * max(acts)).tolist()  # compared in float32,
        return _marked(tokens, lambda i: marked[i])  # as delphi compares its activation tensor
    below = list(range(len(tokens)))  # a non-activating context's activations count as 0 (as delphi stores them)
    if len(below) == 1:  # delphi: a 0-d nonzero() (one token below the line) falls back to its default text
        return "<<NNsight>> is the best library for <<interpretability>> on huge models!"
    rng = random.Random(22)
    k = min(n_wrong, len(below))
    pos = len(tokens) - len(tokens) // 4
    if pos in below:
        rest = [i for i in below if i != pos]
        picked = {pos, *(rng.sample(rest, k - 1) if k > 1 else [])}
    else:
        picked = set(rng.sample(below, k))
    return _marked(tokens, lambda i: i in picked)


def parse_predictions(answer: str, n: int) -> list[bool]:
    """The first ``[...]`` of an answer as ``n`` yes/no predictions (delphi's ``_parse``); ValueError otherwise."""
    match = re.search(r"\[.*?\]", answer)
    if match is None:
        raise ValueError("no [...] list in the answer")
    try:
        values = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise ValueError(f"{match.group(0)!r} is not a list of 0/1: {err}") from None
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"{match.group(0)!r} does not hold {n} answers")
    return [bool(v) for v in values]


def prediction_probabilities(logprobs: Sequence[dict], n: int) -> list[float] | None:
    """P(1) / (P(0) + P(1)) at each answer token holding a 0 or 1, from its top log-probabilities
    (delphi's ``_parse_logprobs``); None unless there are exactly ``n``. ``logprobs``: per generated token
    {"token", "logprob", "top": [[token, logprob], ...]}."""
    out = []
    for step in logprobs:
        if "1" in step["token"] or "0" in step["token"]:
            p0 = sum(math.exp(lp) for t, lp in step["top"] if "0" in t)
            p1 = sum(math.exp(lp) for t, lp in step["top"] if "0" not in t and "1" in t)
            out.append(p1 / (p0 + p1) if p0 + p1 > 0 else 0.0)
    return out if len(out) == n else None
