"""A run's hooks: every hook lives inside ``hooked(...)`` and is removed on exit, error or not.

A run is described by a ``HookState``: for each concrete site, the interventions to apply (with
their bound data), whether to cache it and whether to keep it for gradients. ``hooked`` asks the
placement layer (``placement.py``) where each site lives and installs those places, in forward order
and edits before records, inside one ``HookSet`` (``hookset.py``: the model's lock, the handles,
their removal). No family is known here: each quirk is a place kind or a view in ``placement.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .hookset import HookSet, first_input
from .interventions import Edit, Intervention, Selection, position_index
from .placement import site_places
from .sites import Site, SiteError

if TYPE_CHECKING:
    from .model import Model


@dataclass
class SiteAction:
    """What a run does at one concrete site."""

    site: Site
    interventions: list[tuple[Intervention, Any]] = field(default_factory=list)
    cache: bool = False
    grad: bool = False


@dataclass
class HookState:
    """Per-run state shared by the hooks. ``mask`` is refreshed from every top-level forward call."""

    actions: dict[str, SiteAction]
    mask: torch.Tensor | None = None
    cache: dict[str, torch.Tensor] = field(default_factory=dict)
    grad_at: dict[str, torch.Tensor] = field(default_factory=dict)
    cache_device: torch.device | str | None = None
    cache_dtype: torch.dtype | None = None
    cache_positions: Sequence[int] | None = None
    keep_graph: bool = False  # cache tensors keep their graph (inputs that require grad: feature visualization)

    def process(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        """Apply interventions, then record the value the model actually uses."""
        if not isinstance(x, torch.Tensor):
            raise SiteError(f"{site.module or site.name} does not output a tensor ({type(x).__name__})")
        if site.channels is not None:
            n = x.shape[1] if x.dim() > 1 else 0
            bad = [c for c in site.channels if not 0 <= c < n]
            if bad:
                raise SiteError(f"{site.module} has {n} channels; channel {bad[0]} is out of range")
        action = self.actions[site.name]
        for iv, data in action.interventions:
            heads = site.channels if site.layout == "channel" else iv.heads  # an image site selects channels
            sel = Selection(site, x.shape, heads, iv.positions, self.mask, iv.rows)
            x = sel.put(x, iv.edit(sel.get(x), Edit(x, sel, self.mask, data)))
        if action.grad:
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            self.grad_at[site.name] = x
        if action.cache:
            self.cache[site.name] = self._stored(site, x)
        return x

    def keeps(self, site: Site) -> bool:
        """A viewed site's tensor must flow on through its view when something may hold it: gradients are
        taken there, or an intervention saw it (a function that returns it unchanged may keep it)."""
        action = self.actions[site.name]
        return action.grad or bool(action.interventions)

    def edits(self, site: Site) -> bool:
        return bool(self.actions[site.name].interventions)

    def check(self, site: Site, module: nn.Module) -> None:
        """Each intervention at ``site`` checks what the module there can do (``Intervention.check``)."""
        for iv, _ in self.actions[site.name].interventions:
            iv.check(site, module)

    def _stored(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        value = x if self.keep_graph else x.detach()
        if site.channels is not None:
            value = value[:, list(site.channels)]
        if self.cache_positions is not None:
            canon = value.transpose(1, 2) if site.layout == "pattern" else value
            idx = position_index(self.cache_positions, self.mask, canon.shape[0], canon.shape[1], site.name)
            value = canon[torch.arange(canon.shape[0])[:, None], idx.to(canon.device)]
            value = value.transpose(1, 2) if site.layout == "pattern" else value
        if self.cache_device is not None or self.cache_dtype is not None:
            value = value.to(device=self.cache_device or value.device, dtype=self.cache_dtype or value.dtype)
        return value


@contextmanager
def hooked(model: "Model", state: HookState) -> Iterator[None]:
    """Install the hooks ``state`` needs on ``model``; all are removed on exit."""
    hf = model.module

    def track_mask(_m, _args, kwargs):
        mask = kwargs.get("attention_mask")
        state.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    # forward order; at one point (several channel selections of one module) edits before the
    # records, so a cache or gradient sees every edit made there
    actions = sorted(state.actions.values(), key=lambda a: (a.site.order, not a.interventions))
    with HookSet(hf) as hooks:
        hooks.before(hf, track_mask)
        for place in site_places(model, [a.site for a in actions]):
            place.install(hooks, state)
        yield


def repeat_rows(value: Any, rows: int, copies: int) -> Any:
    """``value`` with every tensor of ≥ 2 dims and ``rows`` rows (also inside tuples) repeated
    ``copies`` times along dim 0: copy c holds rows c·rows … (c+1)·rows − 1."""
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == rows:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    return tuple(repeat_rows(v, rows, copies) for v in value) if isinstance(value, tuple) else value


@contextmanager
def tiled(model: "Model", copies: int, layer: int, on_tile: Callable[[int], None] | None = None) -> Iterator[None]:
    """Blocks before ``layer`` run once per prompt; from block ``layer`` on (the final norm when
    ``layer`` = n_layers) every per-prompt input — hidden states, attention mask, positions — is
    repeated ``copies`` times, so the forward returns copies · prompts rows. ``on_tile(prompts)``
    is called once, when the rows are first repeated. The hooks go first on their modules."""
    hf, a = model.hf, model.adapter
    seen: dict[str, int] = {}

    def hook(_m, args, kwargs):
        rows = seen.get("rows")
        if rows is None:
            seen["rows"] = rows = first_input(args, kwargs).shape[0]
            if on_tile is not None:
                on_tile(rows)
        return repeat_rows(args, rows, copies), {k: repeat_rows(v, rows, copies) for k, v in kwargs.items()}

    mods = [hf.get_submodule(f"{a.blocks}.{l}") for l in range(layer, model.cfg.n_layers)] or [hf.get_submodule(a.final_norm)]
    with HookSet(hf) as hooks:
        for m in mods:
            hooks.before(m, hook, prepend=True)
        yield
