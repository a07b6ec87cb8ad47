"""The intruder test, as delphi's ``IntruderScorer`` runs it: it scores the *unit*, not an explanation. A
prompt shows ``n_shown`` − 1 of the unit's activating contexts from one quantile (their active tokens
marked) and one non-activating context placed among them at random (marked at as many random tokens as
the activating ones have active tokens on average); the scorer names the odd one out ("[RESPONSE]: i").
A unit whose contexts share something recognisable has its intruder found well above chance
(1 / ``n_shown``).

Prompts follow delphi byte for byte: quantiles taken in turn (in the order they appear among the test
contexts), one prompt per negative, the activating contexts drawn and the intruder's place chosen by
``random.Random(42)`` in delphi's order (``tests/test_explain_delphi.py``). An answer that does not end in
a valid index is malformed: asked again (``retries``), then left unanswered (delphi counts it wrong). A
local model answers with the likeliest index after "[RESPONSE]: " unless ``free_answers``.
"""

from __future__ import annotations

import random
import re

from typing_extensions import TypedDict

from . import delphi_prompts as text
from .clients import ChatClient
from .examples import Context, UnitExamples
from .prompts import Message, fuzz_text

ANSWER_PREFIX = "[RESPONSE]: "


class IntruderPrompt(TypedDict):
    """One prompt: the contexts as shown, where the intruder is, the quantile of the activating ones, and
    the scorer's answer (None: malformed)."""

    shown: list[str]
    intruder: int
    quantile: int
    prediction: int | None


class IntruderScore(TypedDict):
    """The intruder test on one unit: its prompts, the share where the intruder was found (over answered
    prompts; None with none), per quantile, chance (1 / n_shown), and the malformed answers behind it."""

    prompts: list[IntruderPrompt]
    accuracy: float | None
    accuracy_by_quantile: list[float | None]
    chance: float
    n: int
    n_unanswered: int
    malformed: int


def intruder_prompts(ex: UnitExamples, n_shown: int = 5, seed: int = 42) -> list[IntruderPrompt]:
    """The unit's intruder prompts, built as delphi builds them (see the module docstring)."""
    if n_shown < 2:
        raise ValueError(f"n_shown={n_shown}: the intruder test shows at least 2 contexts (delphi divides by "
                         "n_shown − 1)")
    rng = random.Random(seed)
    groups: dict[int, list[Context]] = {}
    for c in ex["test"]:
        groups.setdefault(c["quantile"], []).append(c)
    items = list(groups.items())
    line = ex["line"]
    out: list[IntruderPrompt] = []
    for k, intruder in enumerate(ex["random_negatives"] if items else []):
        quantile, pool = items[k % len(items)]
        active = rng.sample(pool, min(n_shown - 1, len(pool)))
        shown = [fuzz_text(c, 0) for c in active]
        n_tokens = sum(sum(a > line for a in c["acts"]) for c in active)
        silent = {**intruder, "acts": [0.0] * len(intruder["acts"])}  # as delphi stores a random negative
        where = rng.randint(0, len(active))
        shown.insert(where, fuzz_text(silent, n_tokens // len(active)))
        out.append({"shown": shown, "intruder": where, "quantile": quantile, "prediction": None})
    return out


def intruder_messages(shown: list[str]) -> list[Message]:
    """delphi's intruder prompt (without chain of thought) for one set of contexts (``Example i:text``)."""
    examples = "\n".join(f"Example {i}:{t}" for i, t in enumerate(shown))
    messages = [{"role": "system", "content": text.INTRUDER_SYSTEM}]
    shots = text.INTRUDER_FEW_SHOT
    for n in range(0, 6, 2):
        messages += [{"role": "user", "content": shots[n]}, {"role": "assistant", "content": shots[n + 1]}]
    return messages + [{"role": "user", "content": text.INTRUDER_QUERY.format(examples=examples)}]


def parse_intruder(answer: str, n_shown: int) -> int:
    """The index after the first "[RESPONSE]:" (delphi's ``_parse``: the rest of the answer must be one
    integer in 0 … n_shown − 1); ValueError otherwise."""
    match = re.search(r"\[RESPONSE\]:", answer)
    if match is None:
        raise ValueError("no [RESPONSE]: in the answer")
    try:
        found = int(answer[match.end():].strip())
    except ValueError:
        raise ValueError(f"{answer[match.end():].strip()!r} is not an index") from None
    if not 0 <= found < n_shown:
        raise ValueError(f"{found} is not an index in 0..{n_shown - 1}")
    return found


def intruder_score(client: ChatClient, ex: UnitExamples, *, n_shown: int = 5, retries: int = 1, seed: int = 42,
                   free_answers: bool = False) -> IntruderScore:
    """The intruder test on unit ``ex`` (see the module docstring)."""
    prompts = intruder_prompts(ex, n_shown, seed)
    conversations = [intruder_messages(p["shown"]) for p in prompts]
    malformed = 0
    todo = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not todo:
            break
        local = not free_answers
        replies = client.chat([conversations[i] for i in todo], max_tokens=8,
                              temperature=0.0 if attempt == 0 else 0.7, seed=attempt,
                              answer_prefix=ANSWER_PREFIX if local else "",
                              choices=[str(i) for i in range(n_shown)] if local and n_shown <= 10 else ())
        still = []
        for i, reply in zip(todo, replies):
            try:
                prompts[i]["prediction"] = parse_intruder(reply.text, n_shown)
            except ValueError:
                malformed += 1
                still.append(i)
        todo = still
    answered = [p for p in prompts if p["prediction"] is not None]
    n_q = max((p["quantile"] for p in prompts), default=-1) + 1
    by_q = []
    for q in range(n_q):
        got = [p["prediction"] == p["intruder"] for p in answered if p["quantile"] == q]
        by_q.append(sum(got) / len(got) if got else None)
    return {"prompts": prompts, "accuracy": sum(p["prediction"] == p["intruder"] for p in answered) / len(answered)
            if answered else None, "accuracy_by_quantile": by_q, "chance": 1 / n_shown, "n": len(answered),
            "n_unanswered": len(prompts) - len(answered), "malformed": malformed}
