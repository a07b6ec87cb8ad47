"""Placement: every architecture quirk, once — where a site, a sender or a receiver lives in a family's modules.

The adapter (``adapters.py``) is data: module paths and the fields that say how a family differs
from a plain pre-norm block. This module is the one place that reads those fields. It turns
(model, site) into a typed **place** — a module, its input or its output, and a ``View`` that cuts
the site's tensor out of the module's tensor and puts an edited one back (a multiplier, the gate half
of a fused projection, rows a block flattened, heads) — or into the places with no module of their
own (a router's logits decided again, an expert's share, a gated shared expert, the attention
internals). The run engine (``hooks.hooked``) installs site places with a ``Processor`` that edits,
caches and keeps values; the circuit engine (``circuits/edges.py``) installs the same site places
for its senders and the **receiver** places below for its receivers, so neither tests a family.

Receivers give each reader of the residual stream its own input (docs/architecture.md, "Edges"):
a block's heads read through their q/k/v projections (``HeadInputs``: the input moved through the
attention norm, the projection rows of each head — separate, fused [q | k | v] or per head
[q_h k_h v_h] — and where one q/k norm spans every head, the whole projection moved and the head's
slice kept), the MLP through its norm's input (``NormInput``) or through the attention's norm when
both read it (``SharedNormInput``: Cohere), the logits through the final norm's input.

Every place registers its hooks through a ``HookSet`` in the order asked, which decides results
where hooks share a module: the run engine asks in forward order, edits before records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import torch
from torch import nn

from .attention import use_mechscope_attention
from .hookset import HookSet, first_input, output_of, with_first_input, with_output
from .offload import loaded
from .sites import Site, SiteError, parse

if TYPE_CHECKING:
    from .model import Model


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


# ----------------------------------------------------------------------------------------------
# Views: a site's tensor cut out of a module's tensor, and put back


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


# ----------------------------------------------------------------------------------------------
# Site places


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
class ModuleOutput(Place):
    """A site that is a module's output (through ``view`` where it is part of it)."""

    site: Site
    path: str
    view: View | None = None
    once: bool = False  # a module site named by its path: refuse a module that runs twice

    @property
    def sites(self):
        return (self.site,)

    def install(self, hooks, proc):
        mod, site, view = hooks.module(self.path), self.site, self.view
        if view is not None:
            view.bind(hooks)

        def hook(_m, _args, out):
            raw = output_of(out)
            x = view.get(raw) if view else raw
            new = proc.process(site, x)
            if new is x and not (view and proc.keeps(site)):
                return None
            return with_output(out, view.put(new, raw) if view else new)

        hooks.after(mod, hook)
        if self.once:
            _once(hooks, mod, site)


@dataclass
class ModuleInput(Place):
    """A site that is a module's first input (through ``view`` where it is part of it)."""

    site: Site
    path: str
    view: View | None = None
    once: bool = False

    @property
    def sites(self):
        return (self.site,)

    def install(self, hooks, proc):
        mod, site, view = hooks.module(self.path), self.site, self.view
        if view is not None:
            view.bind(hooks)

        def hook(_m, args, kwargs):
            raw = first_input(args, kwargs)
            x = view.get(raw) if view else raw
            new = proc.process(site, x)
            if new is x and not (view and proc.keeps(site)):
                return None  # untouched (a viewed site kept for gradients must flow on through its view)
            return with_first_input(args, kwargs, view.put(new, raw) if view else new)

        hooks.before(mod, hook)
        if self.once:
            _once(hooks, mod, site)


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


FLAT_MLP_SITES = frozenset({"resid_mid", "mlp.in", "mlp.pre", "mlp.post", "mlp.out"})
_MULTIPLIED = {"embed": "embedding", "attn.out": "residual", "mlp.out": "residual", "logits": "logit"}


def _multiplier(model: "Model", kind: str) -> View | None:
    """The constant a family applies to a module's output outside any module (None: none)."""
    name = getattr(model.adapter, f"{_MULTIPLIED[kind]}_multiplier") if kind in _MULTIPLIED else None
    if name is None:
        return None
    factor = float(getattr(model.hf.config, name.removeprefix("1/")))
    return Divided(factor) if name.startswith("1/") else Scaled(factor)


def _view(model: "Model", site: Site, block: str) -> View | None:
    """How ``site``'s tensor is read off its module's tensor (None: the tensor itself)."""
    adapter, kind = model.adapter, site.kind
    views: list[View] = []
    if adapter.flat_mlp and kind in FLAT_MLP_SITES:
        views.append(FlatRows(block))
    if kind == "attn.z":
        views.append(PerHead(model.cfg.n_heads))
    if kind == "mlp.pre" and adapter.gate_up_fused:
        views.append(FirstPart(model.cfg.d_mlp))
    multiplier = _multiplier(model, kind)
    if multiplier is not None:
        views.append(multiplier)
    return None if not views else views[0] if len(views) == 1 else Chain(views)


def site_places(model: "Model", sites: Sequence[Site]) -> list[Place]:
    """The places of ``sites``, in the order to install them: the sites' own order (module inputs
    and outputs, shared experts), then routers, experts, carried ``resid_mid`` edits, and last the
    attention internals (the attention function is switched on once every hook is in place)."""
    adapter = getattr(model, "adapter", None)  # an image model has no adapter: module sites only
    inline: list[Place] = []
    routers: list[Place] = []
    carries: list[Place] = []
    experts: dict[int, list[Site]] = {}
    attention: dict[str, dict[str, Site]] = {}
    for site in sites:
        kind = site.kind
        if kind == "module":
            inline.append((ModuleOutput if site.io == "output" else ModuleInput)(site, site.module, once=True))
            continue
        block = f"{adapter.blocks}.{site.layer}"
        if site.is_attn_internal:
            attention.setdefault(f"{block}.{adapter.attn}", {})[kind.split(".")[1]] = site
        elif kind == "mlp.expert":
            experts.setdefault(site.layer, []).append(site)
        elif kind == "mlp.router":
            routers.append(RouterLogits(site, block, f"{block}.{adapter.router}"))
        elif kind == "mlp.shared_expert":
            expert, gate = adapter.shared_expert
            inline.append(SharedExpert(site, f"{block}.{adapter.mlp}", f"{block}.{expert}", f"{block}.{gate}"))
        else:
            path, io = adapter.place(kind, site.layer)
            inline.append((ModuleOutput if io == "output" else ModuleInput)(site, path, _view(model, site, block)))
            if kind == "resid_mid":
                carries.append(ResidMidCarry(site, block, f"{block}.{adapter.mlp_out_path}", f"{block}.{adapter.mid_norm}",
                                             _multiplier(model, "mlp.out")))
    groups = [ExpertShares(tuple(group), f"{adapter.blocks}.{layer}", f"{adapter.blocks}.{layer}.{adapter.experts}")
              for layer, group in experts.items()]
    return inline + routers + groups + carries + ([AttentionInternals(attention)] if attention else [])


# ----------------------------------------------------------------------------------------------
# Senders and receivers of the component graph


def mlp_senders(model: "Model", layer: int) -> list[Site]:
    """The sites whose values are block ``layer``'s MLP senders, in sender order: ``mlp.out``, or a
    mixture of experts' expert outputs (then its gated shared expert, if it has one)."""
    if model.n_experts:
        names = [f"blocks.{layer}.mlp.experts.{e}.out" for e in range(model.n_experts)]
        if model.adapter.shared_expert is not None:
            names.append(f"blocks.{layer}.mlp.shared_expert.out")
        return [parse(n) for n in names]
    return [parse(f"blocks.{layer}.mlp.out")]


def weight_rows(module: nn.Module) -> torch.Tensor:
    """A projection's weight as [out_features, in_features] (GPT-2's Conv1D stores [in, out])."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.T


def qkv_rows(model: "Model") -> list[tuple[str, list[tuple[int, torch.Tensor]]]]:
    """For each q/k/v projection module of a block: (block-relative path, [(local receiver index,
    output rows)]). Local receiver indices are the block's queries, then keys, then values."""
    c, a = model.cfg, model.adapter
    H, K, d = c.n_heads, c.n_kv_heads, c.d_head
    rows = lambda start, i: torch.arange(start + i * d, start + (i + 1) * d)  # noqa: E731
    q = [(h, rows(0, h)) for h in range(H)]
    if a.qkv_layout == "separate":
        k = [(H + g, rows(0, g)) for g in range(K)]
        v = [(H + K + g, rows(0, g)) for g in range(K)]
        return [(a.qkv[0], q), (a.qkv[1], k), (a.qkv[2], v)]
    if a.qkv_layout == "fused":  # [q | k | v]: q H·d wide, k and v K·d each
        k = [(H + g, rows(H * d, g)) for g in range(K)]
        v = [(H + K + g, rows((H + K) * d, g)) for g in range(K)]
        return [(a.qkv[0], q + k + v)]
    if a.qkv_layout == "per_head":  # per head [q_h k_h v_h]
        trip = lambda h, j: torch.arange(h * 3 * d + j * d, h * 3 * d + (j + 1) * d)  # noqa: E731
        return [(a.qkv[0], [(h, trip(h, 0)) for h in range(H)] + [(H + g, trip(g, 1)) for g in range(K)]
                 + [(H + K + g, trip(g, 2)) for g in range(K)])]
    raise ValueError(f"unknown qkv_layout {a.qkv_layout!r}")  # pragma: no cover


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


def head_inputs(model: "Model", layer: int) -> HeadInputs:
    """The place of block ``layer``'s head receivers."""
    a = model.adapter
    block = f"{a.blocks}.{layer}"
    projections: list[ProjectionRows | JointNormRows] = []
    for j, (path, local) in enumerate(qkv_rows(model)):
        if a.joint_qk_norm and j < 2:  # separate q and k projections, each with its all-heads norm
            projections.append(JointNormRows(f"{block}.{path}", f"{block}.{a.joint_qk_norm[j]}", local))
        else:
            projections.append(ProjectionRows(f"{block}.{path}", local))
    return HeadInputs(f"{block}.{a.attn_norm or a.attn}", f"{block}.{a.attn_norm}" if a.attn_norm else None, projections)


def mlp_input(model: "Model", layer: int) -> NormInput | SharedNormInput:
    """The place of block ``layer``'s MLP receiver."""
    a = model.adapter
    block = f"{a.blocks}.{layer}"
    return NormInput(f"{block}.{a.mid_norm}") if a.mid_norm is not None else SharedNormInput(f"{block}.{a.mlp}")


def logits_input(model: "Model") -> NormInput:
    """The place of the logits' receiver: the final norm's input."""
    return NormInput(model.adapter.final_norm)


SITE_PLACE_KINDS = (ModuleOutput, ModuleInput, RouterLogits, ExpertShares, SharedExpert, ResidMidCarry, AttentionInternals)
VIEW_KINDS = (PerHead, Scaled, Divided, FirstPart, FlatRows)
RECEIVER_PLACE_KINDS = (ProjectionRows, JointNormRows, NormInput, SharedNormInput)
