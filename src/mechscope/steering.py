"""Steering: activation-difference vectors and the comparison of steered and plain generations."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import ClassVar

import torch

from .interventions import Add
from .models.model import Model
from .results import Provenance, Result


def steering_vector(model: Model, site: str, positive: str, negative: str) -> torch.Tensor:
    """ActAdd-style vector: the activation at ``site`` after ``positive`` minus after ``negative``
    (last token). Single-word prompts make poor vectors: a sequence's first token has a huge
    residual norm (attention sink), so use short phrases ("I love you" vs "I hate you")."""
    run = model.run([positive, negative], cache=site, cache_positions=[-1])
    acts = run.cache[site][:, 0]
    return acts[0] - acts[1]


@dataclass
class SteeredGeneration(Result):
    """Plain and steered continuations of the same prompt (``Add(site, vector, coef)``)."""

    prompt: str
    site: str
    coef: float
    contrast: list[str]  # [positive, negative] that made the vector
    plain: str
    steered: str
    vector: torch.Tensor
    title: ClassVar[str] = "Steered generation"

    @classmethod
    def compare(cls, model: Model, prompt: str, site: str, positive: str, negative: str, coef: float = 2.0,
                max_new_tokens: int = 20) -> "SteeredGeneration":
        vector = steering_vector(model, site, positive, negative)
        plain = model.generate(prompt, max_new_tokens=max_new_tokens)
        steered = model.generate(prompt, max_new_tokens=max_new_tokens, interventions=[Add(site, vector, coef=coef)])
        return cls(provenance=Provenance.of(model, prompts=[prompt, positive, negative], site=site, coef=coef,
                                            max_new_tokens=max_new_tokens),
                   prompt=prompt, site=site, coef=coef, contrast=[positive, negative], plain=plain, steered=steered,
                   vector=vector.detach().float().cpu())

    def summary(self) -> str:
        return (f"Add {self.contrast[0]!r} − {self.contrast[1]!r} at {self.site} × {self.coef} "
                f"(|v| = {float(self.vector.norm()):.1f}):\n  plain:   {self.prompt}{self.plain}\n"
                f"  steered: {self.prompt}{self.steered}")

    def evidence(self) -> dict:
        return {"changed": self.plain != self.steered, "vector_norm": float(self.vector.norm())}

    def html(self, png: bytes | None = None) -> str:
        e = html.escape
        return (f"<section class='result steering'><h2>{e(self.title)}</h2>"
                f"<p>Add {e(repr(self.contrast[0]))} − {e(repr(self.contrast[1]))} at <code>{e(self.site)}</code> × {self.coef}</p>"
                f"<table><tr><th>plain</th><td>{e(self.prompt)}<b>{e(self.plain)}</b></td></tr>"
                f"<tr><th>steered</th><td>{e(self.prompt)}<b>{e(self.steered)}</b></td></tr></table></section>")
