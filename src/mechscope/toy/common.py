"""What every toy specimen shares: a named, fingerprinted bundle of trained weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from ..models.fingerprint import fingerprint_of


@dataclass
class ToyModel:
    """Trained toy weights that are not a language model (a superposition model, a grid of them):
    ``name``, ``tensors``, the ``params`` that produced them, and a ``fingerprint`` like a
    ``Model``'s, so results and specimens can name what they came from."""

    name: str
    tensors: dict[str, torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_of(self.tensors, self.params)

    @property
    def cfg(self) -> dict[str, Any]:
        """The parameters, under the name a ``Model`` keeps its shape (archive specimens store it)."""
        return {**self.params, **{f"{k}.shape": list(v.shape) for k, v in self.tensors.items()}}
