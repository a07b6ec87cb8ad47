"""Views: how a site's tensor is cut out of a module's tensor and an edited one put back — heads of
a flat projection input, a multiplier the family applies outside any module, the gate half of a fused
projection, rows a block flattened, several at once."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..hookset import HookSet


class View:
    """How a site's tensor is read off a module's tensor (``get``) and an edited one put back
    (``put(new, raw)``, ``raw`` the module's own tensor)."""

    def bind(self, hooks: HookSet) -> None:
        """Register what the view needs to know per forward (nothing by default)."""

    def get(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def put(self, new: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class PerHead(View):
    """[.., head · d_head] viewed [.., head, d_head] (``attn.z``: the output projection's input)."""

    n_heads: int

    def get(self, raw):
        return raw.unflatten(-1, (self.n_heads, -1))

    def put(self, new, raw):
        return new.reshape(raw.shape)


@dataclass
class Scaled(View):
    """The module's output times a constant the family applies after it (Granite, Cohere)."""

    factor: float

    def get(self, raw):
        return raw * self.factor

    def put(self, new, raw):
        return (new / self.factor).to(raw.dtype)


@dataclass
class Divided(View):
    """The module's output divided by a constant the family divides it by (Granite's logits)."""

    factor: float

    def get(self, raw):
        return raw / self.factor

    def put(self, new, raw):
        return (new * self.factor).to(raw.dtype)


@dataclass
class FirstPart(View):
    """The first ``width`` features of a fused output: the gate half of [gate | up] (Phi-3, GLM-4)."""

    width: int

    def get(self, raw):
        return raw[..., :self.width]

    def put(self, new, raw):
        return torch.cat([new.to(raw.dtype), raw[..., self.width:]], -1)


@dataclass
class FlatRows(View):
    """[batch · pos, ·] rows the block flattened, viewed [batch, pos, ·] (OPT's MLP)."""

    block: str
    shape: dict = field(default_factory=dict)

    def bind(self, hooks):
        self.shape = hooks.rows(hooks.module(self.block))

    def get(self, raw):
        return raw.view(*self.shape["x"][:2], -1)

    def put(self, new, raw):
        return new.reshape(raw.shape).to(raw.dtype)


@dataclass
class Chain(View):
    """Several views, applied in order (and put back in reverse)."""

    views: list[View]

    def bind(self, hooks):
        for view in self.views:
            view.bind(hooks)

    def get(self, raw):
        for view in self.views:
            raw = view.get(raw)
        return raw

    def put(self, new, raw):
        raws = [raw]
        for view in self.views[:-1]:
            raws.append(view.get(raws[-1]))
        for view, under in zip(reversed(self.views), reversed(raws)):
            new = view.put(new, under)
        return new
