"""Receiver places of the component graph: each reader of the residual stream gets its own input. A
block's heads read through their q/k/v projections (``HeadInputs``: the shift moved through the
attention norm into each head's rows — ``ProjectionRows`` — or, where one q/k norm spans every head,
the whole projection moved and the head's slice kept — ``JointNormRows``); an MLP reads through its
norm's input (``NormInput``) or through the attention's norm (``SharedNormInput``: Cohere); the
logits through the final norm's input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..hookset import HookSet, first_input, with_first_input
from ..offload import loaded


def weight_rows(module: nn.Module) -> torch.Tensor:
    """A projection's weight as [out_features, in_features] (GPT-2's Conv1D stores [in, out])."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.T


Shift = Callable[[torch.Tensor], "torch.Tensor | None"]


@dataclass
class Reading:
    """What one block's attention read in this forward: its residual input ``x``, the norm it reads
    it through (None: the residual itself) and the receivers' shifts ``delta`` [rows, pos, R, d]."""

    x: torch.Tensor | None = None
    norm: nn.Module | None = None
    delta: torch.Tensor | None = None

    def moved(self, local: list[tuple[int, torch.Tensor]], normed: torch.Tensor) -> torch.Tensor:
        """[rows, pos, k, d]: how each receiver's own input moves what a projection reads."""
        shift = self.delta[:, :, torch.tensor([i for i, _ in local], device=self.x.device)]
        return shift if self.norm is None else self.norm.forward(self.x[:, :, None] + shift) - normed[:, :, None]


@dataclass
class ProjectionRows:
    """A q/k/v projection whose output rows belong to heads: each receiver adds
    ``(norm(x + δ_r) − norm(x)) · W_r`` to its rows (the model's own norm module and weights)."""

    path: str
    local: list[tuple[int, torch.Tensor]]

    def install(self, hooks: HookSet, reading: Reading) -> None:
        module, local = hooks.module(self.path), self.local
        out_rows = torch.cat([r for _, r in local])

        def hook(_m, args, out):
            if reading.delta is None:
                return None
            moved = reading.moved(local, args[0])
            with loaded(module):  # an offloaded projection's weights are on meta in its hooks
                w = weight_rows(module)[out_rows.to(out.device)].view(len(local), -1, moved.shape[-1])
                add = torch.einsum("bpkd,ked->bpke", moved.to(w.dtype), w).flatten(-2)
            return out + torch.zeros_like(out).index_add(-1, out_rows.to(out.device), add.to(out.dtype))

        hooks.after(module, hook)


@dataclass
class JointNormRows:
    """A q or k projection whose norm spans every head (OLMo 2/3, OLMoE): head h's query is slice h
    of ``q_norm(q_proj(x) + (norm(x + δ_h) − norm(x)) · W)`` — each receiver moves the whole
    projection, and keeps its own slice of the normalised result."""

    path: str
    norm: str
    local: list[tuple[int, torch.Tensor]]

    def install(self, hooks: HookSet, reading: Reading) -> None:
        module, norm, local = hooks.module(self.path), hooks.module(self.norm), self.local
        joint: dict[str, torch.Tensor] = {}

        def on_proj(_m, args, _out):
            joint.clear()
            if reading.delta is None:
                return
            moved = reading.moved(local, args[0])
            with loaded(module):
                w = weight_rows(module)
                joint["whole"] = torch.einsum("bpkd,ed->bpke", moved.to(w.dtype), w)  # [rows, pos, k, out]

        def on_norm(_m, args, out):
            whole = joint.pop("whole", None)
            if whole is None:
                return None
            u = args[0]
            normed = norm.forward(u[:, :, None] + whole.to(u.dtype))  # [rows, pos, k, out]
            new = out.clone()
            for i, (_, rows) in enumerate(local):
                new[..., rows.to(out.device)] = normed[:, :, i, rows.to(out.device)]
            return new

        hooks.after(module, on_proj)
        hooks.after(norm, on_norm)


@dataclass
class HeadInputs:
    """The receivers of one block's attention (queries, keys, values): ``shift(x)`` gives their
    shifts [rows, pos, R, d] of the residual input ``x`` (None: nothing moves), read where the
    attention's norm (or the attention itself) takes its input; each projection place adds them."""

    reader: str
    norm: str | None
    projections: list[ProjectionRows | JointNormRows]

    def install(self, hooks: HookSet, shift: Shift) -> Reading:
        reading = Reading(norm=hooks.module(self.norm) if self.norm else None)

        def hook(_m, args, kwargs):
            reading.x = first_input(args, kwargs)
            reading.delta = shift(reading.x)

        hooks.before(hooks.module(self.reader), hook)
        for projection in self.projections:
            projection.install(hooks, reading)
        return reading


@dataclass
class NormInput:
    """A receiver whose input is a module's first input (the MLP's norm, the final norm): it reads
    ``x + δ``. ``shift(like)`` gives δ [rows, pos, 1, d], ``like`` the block's residual input when a
    ``reading`` is given (a flattened MLP's norm input is reshaped to it), else ``x``."""

    path: str

    def install(self, hooks: HookSet, shift: Shift, reading: Reading | None = None) -> None:
        def hook(_m, args, kwargs):
            x = first_input(args, kwargs)
            delta = shift(reading.x if reading is not None else x)
            return None if delta is None else with_first_input(args, kwargs, x + delta[:, :, 0].reshape(x.shape))

        hooks.before(hooks.module(self.path), hook)


@dataclass
class SharedNormInput:
    """An MLP that reads the attention's normalised input (Cohere): its receiver reads
    ``norm(x + δ)``, with the block's residual input and norm from the attention's ``reading``."""

    path: str

    def install(self, hooks: HookSet, shift: Shift, reading: Reading | None = None) -> None:
        def hook(_m, args, kwargs):
            delta = shift(reading.x)
            if delta is None:
                return None
            return with_first_input(args, kwargs, reading.norm.forward(reading.x + delta[:, :, 0]))

        hooks.before(hooks.module(self.path), hook)
