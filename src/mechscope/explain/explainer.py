"""Writing an explanation: a chat model reads a unit's training contexts (delphi's default explainer
prompt, ``prompts.explainer_messages``) and answers with a line ``[EXPLANATION]: ...``. An answer without
one is malformed (a local model's answer is begun with "[EXPLANATION]:", as the worked answers are, so
that a small model continues with the explanation itself): asked again (``retries`` times, sampled at temperature 0.7, each try with its own
seed), then the unit is left unexplained — counted, never fatal."""

from __future__ import annotations

from typing import Sequence

from .clients import ChatClient
from .examples import UnitExamples
from .prompts import explainer_messages, parse_explanation

ANSWER_PREFIX = "\n[EXPLANATION]:"  # how delphi's worked answers begin; a local model's answer is begun with it


def write_explanations(client: ChatClient, units: Sequence[UnitExamples], *, activations: bool = True,
                  cot: bool = False, max_tokens: int = 64, retries: int = 2, threshold: float = 0.3
                  ) -> list[tuple[str | None, int]]:
    """Per unit: its explanation (None if every answer was malformed) and the malformed answers it took.
    Units are asked together (one batch per try), so a local model batches them."""
    conversations = [explainer_messages(u["train"], u["max_act"], activations=activations, cot=cot,
                                        threshold=threshold) for u in units]
    out: list[tuple[str | None, int]] = [(None, 0)] * len(units)
    todo = list(range(len(units)))
    for attempt in range(retries + 1):
        if not todo:
            break
        replies = client.chat([conversations[i] for i in todo], max_tokens=max_tokens,
                              temperature=0.0 if attempt == 0 else 0.7, seed=attempt, answer_prefix=ANSWER_PREFIX)
        still = []
        for i, reply in zip(todo, replies):
            found = parse_explanation(reply.text)
            if found is None:
                out[i] = (None, out[i][1] + 1)
                still.append(i)
            else:
                out[i] = (found, out[i][1])
        todo = still
    return out
