"""Site places: where a site is read and written in a forward — a module's output or input (through a
view), or a value with no module of its own (a router's logits decided again, an expert's share, a
gated shared expert, a carried resid_mid edit, the attention internals). A place installs its hooks
through a ``HookSet`` and hands each value to a ``Processor`` (the run engine's ``HookState``, the
circuit engine's recorder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from ..attention import use_mechscope_attention
from ..hookset import HookSet, first_input, output_of, with_first_input, with_output
from ..sites import Site, SiteError
from .views import View


class Processor(Protocol):
    """What a run does with the values at its places."""

    def process(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        """The value the model goes on with (``x`` itself when nothing changes)."""

    def keeps(self, site: Site) -> bool:
        """True when a viewed site's tensor must flow on through its view even if unchanged
        (gradients are taken there, or an intervention saw it and may hold it)."""

    def edits(self, site: Site) -> bool:
        """True when the run edits ``site`` (an edited ``resid_mid`` is carried along the residual)."""

    def check(self, site: Site, module: nn.Module) -> None:
        """Refuse, before the forward, what the module at ``site`` cannot do (a router's top-k)."""


class Place:
    """Where one site (or sites computed together) is read and written; ``install`` hooks it."""

    sites: tuple[Site, ...]

    def install(self, hooks: HookSet, proc: Processor) -> None:
        raise NotImplementedError


def _once(hooks: HookSet, mod: nn.Module, site: Site) -> None:
    """A module that runs twice per forward (a shared activation) has no single value to name."""
    calls = [0]

    def count(_m, _args):
        calls[0] += 1
        if calls[0] > 1:
            raise SiteError(f"{site.module} runs more than once per forward (a shared module, like EfficientNet's "
                            "_swish); its output is not one site: pick a module that runs once")

    def reset(_m, _args, _kwargs):
        calls[0] = 0

    hooks.before(mod, count, with_kwargs=False, prepend=True)
    hooks.before(hooks.hf, reset)


@dataclass
class _OnModule(Place):
    """A site that is a module's output or first input (through ``view`` where it is part of it)."""

    site: Site
    path: str
    view: View | None = None
    once: bool = False  # a module site named by its path: refuse a module that runs twice

    @property
    def sites(self):
        return (self.site,)

    def install(self, hooks, proc):
        mod = hooks.module(self.path)
        if self.view is not None:
            self.view.bind(hooks)
        self._hook(hooks, mod, proc)
        if self.once:
            _once(hooks, mod, self.site)

    def _through(self, proc: Processor, raw: torch.Tensor) -> torch.Tensor | None:
        """The module's new tensor, or None when it stays as it was (a viewed site kept for gradients,
        or seen by an intervention, must flow on through its view)."""
        view, site = self.view, self.site
        x = view.get(raw) if view else raw
        new = proc.process(site, x)
        if new is x and not (view and proc.keeps(site)):
            return None
        return view.put(new, raw) if view else new


class ModuleOutput(_OnModule):
    """A site that is a module's output."""

    def _hook(self, hooks, mod, proc):
        def hook(_m, _args, out):
            new = self._through(proc, output_of(out))
            return None if new is None else with_output(out, new)

        hooks.after(mod, hook)


class ModuleInput(_OnModule):
    """A site that is a module's first input."""

    def _hook(self, hooks, mod, proc):
        def hook(_m, args, kwargs):
            new = self._through(proc, first_input(args, kwargs))
            return None if new is None else with_first_input(args, kwargs, new)

        hooks.before(mod, hook)


class _LinearGives(torch.overrides.TorchFunctionMode):
    """Inside it, the first ``F.linear`` returns ``value``: a router's forward then decides its
    routing from edited logits by the family's own rule (softmax, top-k, renormalisation)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.linear and self.value is not None:
            value, self.value = self.value, None
            return value
        return func(*args, **(kwargs or {}))


@dataclass
class RouterLogits(Place):
    """``blocks.L.mlp.router``: the router's logits [tokens, E] viewed as [batch, pos, E]. An edit
    decides the routing again: the router's own forward runs with its linear layer giving the edited
    logits, so weights and chosen experts follow the family's rule; untouched, the run is the model's."""

    site: Site
    block: str
    router: str

    @property
    def sites(self):
        return (self.site,)

    def install(self, hooks, proc):
        router, site = hooks.module(self.router), self.site
        proc.check(site, router)
        shape = hooks.rows(hooks.module(self.block))
        forward = type(router).forward

        def hook(mod, args, kwargs, out):
            logits = out[0]
            view = logits.view(*shape["x"][:-1], logits.shape[-1])
            new = proc.process(site, view)
            if new is view:
                return None
            with _LinearGives(new.reshape(logits.shape).to(logits.dtype)):
                return forward(mod, *args, **kwargs)

        hooks.after(router, hook, with_kwargs=True)


def expert_shares(experts: nn.Module, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor,
                  which: Sequence[int]) -> list[torch.Tensor]:
    """Each expert in ``which``'s weighted output [tokens, d], by the experts' own eager forward
    (transformers 5 fuses them into 3-D weights: no module per expert). hidden: [tokens, d];
    index, weights: the router's [tokens, top_k] choice (or weights [tokens, E] per expert). Expert
    e runs only on the tokens routed to it, every slot pointing at e and weighted where it was e."""
    eager = type(experts).forward
    eager = getattr(eager, "__wrapped__", eager)  # the eager forward under transformers' experts dispatch
    out = []
    for e in which:
        if weights.shape != index.shape:  # weights per expert: zero every other expert's
            only = torch.nn.functional.one_hot(torch.tensor(e), weights.shape[-1]).to(weights.device, torch.bool)
            out.append(eager(experts, hidden, index, weights * only))
            continue
        hit = index == e
        rows = hit.any(-1).nonzero().flatten()
        part = torch.zeros_like(hidden)
        if len(rows):
            got = eager(experts, hidden[rows], torch.full_like(index[rows], e), weights[rows] * hit[rows])
            part = part.index_add(0, rows, got.to(part.dtype))
        out.append(part)
    return out


@dataclass
class ExpertShares(Place):
    """Expert sites of one MoE block: each expert's weighted output (``expert_shares``) viewed as
    [batch, pos, d]. An edit replaces that expert's share of the experts' output (out − part + new);
    an untouched run leaves the output as it was, bit for bit."""

    sites: tuple[Site, ...]
    block: str
    experts: str

    def install(self, hooks, proc):
        shape, sites = hooks.rows(hooks.module(self.block)), self.sites

        def hook(mod, args, out):
            hidden, index, weights = (list(args) + [None, None])[:3]
            total = output_of(out)
            change = None
            with torch.enable_grad() if torch.is_grad_enabled() else torch.no_grad():
                parts = expert_shares(mod, hidden, index, weights, [site.expert for site in sites])
            for site, part in zip(sites, parts):
                view = part.view(*shape["x"][:-1], part.shape[-1])
                new = proc.process(site, view)
                if new is not view:
                    delta = new.reshape(part.shape).to(part.dtype) - part
                    change = delta if change is None else change + delta
            return None if change is None else with_output(out, total + change)

        hooks.after(hooks.module(self.experts), hook)


@dataclass
class SharedExpert(Place):
    """``blocks.L.mlp.shared_expert.out`` (Qwen2-MoE): σ(gate(x)) · shared_expert(x), the product the
    MoE block adds to its routed experts, formed from the two modules' outputs by the same operation;
    an edit replaces that share of the block's output (out − part + new)."""

    site: Site
    moe: str
    expert: str
    gate: str

    @property
    def sites(self):
        return (self.site,)

    def install(self, hooks, proc):
        seen: dict[str, torch.Tensor] = {}
        site = self.site

        def keep(name: str):
            def hook(_m, _args, out):
                seen[name] = output_of(out)
            return hook

        def on_moe(_m, _args, out):
            y = output_of(out)
            part = torch.sigmoid(seen.pop("gate")) * seen.pop("expert")
            view = part.view(y.shape)
            new = proc.process(site, view)
            return None if new is view else with_output(out, y + (new.to(y.dtype) - view))

        hooks.after(hooks.module(self.expert), keep("expert"))
        hooks.after(hooks.module(self.gate), keep("gate"))
        hooks.after(hooks.module(self.moe), on_moe)


@dataclass
class ResidMidCarry(Place):
    """Make an edited ``resid_mid`` flow on along the residual stream, exactly.

    The pre-hook on the MLP's norm changes what the MLP reads, but the block adds the MLP output
    to its own (unedited) copy of the residual. So keep the edited residual and the final MLP
    output, and rebuild the block output as ``edited_mid + mlp_out`` — the same addition the block
    performs, hence bit-exact. Installed after the ``resid_mid`` place (and any ``mlp.out`` one)."""

    site: Site
    block: str
    mlp_out: str
    mid_norm: str
    added: View | None = None  # what the block adds of the MLP's output (a multiplier: Granite)

    @property
    def sites(self):
        return (self.site,)

    def install(self, hooks, proc):
        if not proc.edits(self.site):
            return
        seen: dict[str, torch.Tensor] = {}
        added = self.added

        def keep_mid(_m, args, kwargs):
            seen["mid"] = first_input(args, kwargs)

        def keep_mlp(_m, _args, out):
            seen["mlp"] = output_of(out) if added is None else added.get(output_of(out))

        def rebuild(_m, _args, out):
            return with_output(out, (seen.pop("mid") + seen.pop("mlp")).view_as(output_of(out)))  # (OPT: rows flattened)

        hooks.before(hooks.module(self.mid_norm), keep_mid)  # after the resid_mid pre-hook
        hooks.after(hooks.module(self.mlp_out), keep_mlp)  # after any mlp.out hook
        hooks.after(hooks.module(self.block), rebuild, prepend=True)  # before any resid_post hook


@dataclass
class AttentionInternals(Place):
    """q, k, v, scores and patterns: the mechscope attention function, switched on while the hooks
    are in place, with one probe per attention module. ``modules``: attention path → {kind: site}."""

    modules: dict[str, dict[str, Site]]

    @property
    def sites(self):
        return tuple(s for kinds in self.modules.values() for s in kinds.values())

    def install(self, hooks, proc):
        def probe_of(sites: dict[str, Site]) -> Callable[[str, torch.Tensor], torch.Tensor]:
            def probe(kind: str, x: torch.Tensor) -> torch.Tensor:
                site = sites.get(kind)
                return x if site is None else proc.process(site, x)
            return probe

        hooks.enter(use_mechscope_attention(hooks.hf, {hooks.module(p): probe_of(s) for p, s in self.modules.items()}))
