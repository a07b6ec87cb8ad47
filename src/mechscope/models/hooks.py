"""Hook lifetime: every hook of a run lives inside ``hooked(...)`` and is removed on exit, error or not.

Threads: hooks and the attention switch live on the shared HF modules, so every context that
installs them holds the module's re-entrant lock (``model_lock``) from install to removal. Calls on
one model from several threads then run one forward at a time and give the results of sequential
calls; different models run in parallel.

A run is described by a ``HookState``: for each concrete site, the interventions to apply (with
their bound data), whether to cache it and whether to keep it for gradients. ``hooked`` places
plain PyTorch forward hooks / pre-hooks on the HF modules named by the adapter, and, only when an
attention-internal site is involved, switches on the mechscope attention function.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .interventions import Edit, Intervention, InterventionError, Selection, position_index
from .attention import use_mechscope_attention
from .sites import Site, SiteError

if TYPE_CHECKING:
    from .model import Model


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(module: nn.Module) -> threading.RLock:
    """The re-entrant lock of an HF module (one per module, shared by every ``Model`` wrapping it):
    held by whatever installs hooks on it or switches its attention."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


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


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_first_input(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


def _output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _with_output(out: Any, x: torch.Tensor) -> Any:
    return (x, *out[1:]) if isinstance(out, tuple) else x


@contextmanager
def hooked(model: "Model", state: HookState) -> Iterator[None]:
    """Install the hooks ``state`` needs on ``model``; all are removed on exit."""
    hf = model.module
    adapter, cfg = getattr(model, "adapter", None), model.cfg  # an image model has no adapter: module sites only
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def module(path: str) -> nn.Module:
        return hf.get_submodule(path)

    def block(site: Site, rel: str | None = None) -> nn.Module:
        base = f"{adapter.blocks}.{site.layer}"
        return module(f"{base}.{rel}" if rel else base)

    def on_output(mod: nn.Module, site: Site, view: Callable | None = None,
                  unview: Callable | None = None) -> None:
        """``view``/``unview``: the site is part of the output (Phi-3's gate half of [gate | up]);
        ``unview(new, raw)`` puts an edited part back into the whole."""
        def hook(_m, _args, out):
            raw = _output(out)
            x = view(raw) if view else raw
            new = state.process(site, x)
            if new is x and not (view and _kept(state.actions[site.name])):
                return None
            return _with_output(out, unview(new, raw) if view else new)

        handles.append(mod.register_forward_hook(hook))

    def on_input(mod: nn.Module, site: Site, view: Callable | None = None) -> None:
        def hook(_m, args, kwargs):
            raw = _first_input(args, kwargs)
            x = view(raw) if view else raw
            new = state.process(site, x)
            if new is x and not (view and _kept(state.actions[site.name])):
                return None  # untouched (a viewed site kept for gradients must flow on through its view)
            return _with_first_input(args, kwargs, new.reshape(raw.shape) if view else new)

        handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))

    def once(mod: nn.Module, site: Site) -> None:
        """A module that runs twice per forward (a shared activation) has no single value to name."""
        calls = [0]

        def count(_m, _args):
            calls[0] += 1
            if calls[0] > 1:
                raise SiteError(f"{site.module} runs more than once per forward (a shared module, like EfficientNet's "
                                "_swish); its output is not one site: pick a module that runs once")

        def reset(_m, _args, _kwargs):
            calls[0] = 0

        handles.append(mod.register_forward_pre_hook(count, prepend=True))
        handles.append(hf.register_forward_pre_hook(reset, with_kwargs=True))

    def track_mask(_m, _args, kwargs):
        mask = kwargs.get("attention_mask")
        state.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    shapes: dict[int, dict[str, torch.Size]] = {}

    def rows_of(site: Site) -> dict[str, torch.Size]:
        """The block's input shape [batch, pos, d] in this forward (kept by one pre-hook on the block, for
        the sites that see its rows flattened: OPT's MLP, a mixture of experts' router and experts)."""
        if site.layer not in shapes:
            shape = shapes[site.layer] = {}

            def keep(_m, args, kwargs):
                shape["x"] = _first_input(args, kwargs).shape

            handles.append(block(site).register_forward_pre_hook(keep, with_kwargs=True, prepend=True))
        return shapes[site.layer]

    probes: dict[nn.Module, dict[str, Site]] = {}
    experts: dict[int, list[Site]] = {}
    routers: list[Site] = []
    mid_layers: list[Site] = []
    lock = model_lock(hf)
    lock.acquire()
    try:
        handles.append(hf.register_forward_pre_hook(track_mask, with_kwargs=True))
        # forward order; at one point (several channel selections of one module) edits before the
        # records, so a cache or gradient sees every edit made there
        for name, action in sorted(state.actions.items(), key=lambda kv: (kv[1].site.order, not kv[1].interventions)):
            site = action.site
            kind = site.kind
            if site.is_attn_internal:
                probes.setdefault(block(site, adapter.attn), {})[kind.split(".")[1]] = site
                continue
            if kind == "mlp.expert":
                experts.setdefault(site.layer, []).append(site)
                continue
            if kind == "mlp.router":
                routers.append(site)
                continue
            if kind == "mlp.shared_expert":
                expert, gate = adapter.shared_expert
                _shared_expert_hooks(state, block(site, adapter.mlp), block(site, expert), block(site, gate), site, handles)
                continue
            # every other site is a module's output or input: its own path, or where the adapter puts it
            path, io = (site.module, site.io) if kind == "module" else adapter.place(kind, site.layer)
            view = (lambda t, h=cfg.n_heads: t.unflatten(-1, (h, -1))) if kind == "attn.z" else None
            scale, divide = _site_multiplier(model, kind)
            if scale != 1.0 and divide:  # Granite's logits: the module's output divided, as HF divides it
                on_output(module(path), site, lambda t, m=scale: t / m, lambda new, raw, m=scale: (new * m).to(raw.dtype))
            elif scale != 1.0:  # Granite / Cohere: the module's output times the constant HF applies after it
                on_output(module(path), site, lambda t, m=scale: t * m, lambda new, raw, m=scale: (new / m).to(raw.dtype))
            elif kind == "mlp.pre" and adapter.gate_up_fused:  # the gate half of [gate | up]
                on_output(module(path), site, lambda t, n=cfg.d_mlp: t[..., :n],
                          lambda new, raw, n=cfg.d_mlp: torch.cat([new.to(raw.dtype), raw[..., n:]], -1))
            elif adapter is not None and adapter.flat_mlp and kind in FLAT_MLP_SITES:  # OPT: [batch·pos, ·] rows, viewed [batch, pos, ·]
                shape = rows_of(site)
                (on_output if io == "output" else on_input)(
                    module(path), site, lambda t, s=shape: t.view(*s["x"][:2], -1),
                    *([lambda new, raw: new.reshape(raw.shape).to(raw.dtype)] if io == "output" else []))
            else:
                (on_output if io == "output" else on_input)(module(path), site, *([view] if view else []))
            if kind == "module":
                once(module(path), site)
            if kind == "resid_mid":
                mid_layers.append(site)
        for site in routers:
            _router_hook(state, rows_of(site), block(site, adapter.router), site, handles)
        for layer, sites in experts.items():
            _expert_hooks(state, rows_of(sites[0]), block(sites[0], adapter.experts), sites, handles)
        for site in mid_layers:
            if state.actions[site.name].interventions:
                _carry_resid_mid(block(site), block(site, adapter.mlp_out_path), block(site, adapter.mid_norm), handles)
        with ExitStack() as stack:
            if probes:
                stack.enter_context(use_mechscope_attention(hf, {m: _probe(state, s) for m, s in probes.items()}))
            yield
    finally:
        for handle in handles:
            handle.remove()
        lock.release()


def _kept(action: SiteAction) -> bool:
    """A viewed site's tensor must flow on through its view when something may hold it: gradients are
    taken there, or an intervention saw it (a function that returns it unchanged may keep it)."""
    return action.grad or bool(action.interventions)


FLAT_MLP_SITES = frozenset({"resid_mid", "mlp.in", "mlp.pre", "mlp.post", "mlp.out"})


def _site_multiplier(model: "Model", kind: str) -> tuple[float, bool]:
    """(c, divide): a family multiplies a module's output by c (or divides it by c, as Granite's
    logits) before it is added or returned; (1.0, False) where it does not."""
    which = {"embed": "embedding", "attn.out": "residual", "mlp.out": "residual", "logits": "logit"}.get(kind)
    adapter = getattr(model, "adapter", None)
    name = getattr(adapter, f"{which}_multiplier", None) if which and adapter is not None else None
    if name is None:
        return 1.0, False
    return float(getattr(model.hf.config, name.removeprefix("1/"))), name.startswith("1/")


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


def _router_hook(state: HookState, shape: dict[str, torch.Size], router: nn.Module, site: Site, handles: list) -> None:
    """``blocks.L.mlp.router``: the router's logits [tokens, E] viewed as [batch, pos, E]. An edit
    decides the routing again: the router's own forward runs with its linear layer giving the edited
    logits, so weights and chosen experts follow the family's rule; untouched, the run is the model's.
    ``shape["x"]``: the block's input shape in this forward."""
    forward = type(router).forward
    top_k = getattr(router, "top_k", None)
    for iv, _ in state.actions[site.name].interventions:
        forced = len(getattr(iv, "force", ()) or ())
        if top_k is not None and forced > top_k:
            raise InterventionError(f"{type(iv).__name__} at {site.name} forces {forced} experts; the router "
                                    f"chooses {top_k} per token (valid: at most {top_k})")

    def hook(mod, args, kwargs, out):
        logits = out[0]
        view = logits.view(*shape["x"][:-1], logits.shape[-1])
        new = state.process(site, view)
        if new is view:
            return None
        with _LinearGives(new.reshape(logits.shape).to(logits.dtype)):
            return forward(mod, *args, **kwargs)

    handles.append(router.register_forward_hook(hook, with_kwargs=True))


def _shared_expert_hooks(state: HookState, moe: nn.Module, expert: nn.Module, gate: nn.Module, site: Site,
                         handles: list) -> None:
    """``blocks.L.mlp.shared_expert.out`` (Qwen2-MoE): σ(gate(x)) · shared_expert(x), the product the
    MoE block adds to its routed experts, formed from the two modules' outputs by the same operation;
    an edit replaces that share of the block's output (out − part + new)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m, _args, out):
            seen[name] = _output(out)
        return hook

    def on_moe(_m, _args, out):
        y = _output(out)
        part = torch.sigmoid(seen.pop("gate")) * seen.pop("expert")
        view = part.view(y.shape)
        new = state.process(site, view)
        return None if new is view else _with_output(out, y + (new.to(y.dtype) - view))

    handles.append(expert.register_forward_hook(keep("expert")))
    handles.append(gate.register_forward_hook(keep("gate")))
    handles.append(moe.register_forward_hook(on_moe))


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


def _expert_hooks(state: HookState, shape: dict[str, torch.Size], experts: nn.Module, sites: list[Site],
                  handles: list) -> None:
    """Expert sites of one MoE block: each requested expert's weighted output (``expert_shares``)
    viewed as [batch, pos, d]. An edit replaces that expert's share of the experts' output
    (out − part + new); an untouched run leaves the output as it was, bit for bit. ``shape["x"]``: the
    block's input shape [batch, pos, d] in this forward (the experts see its rows flattened)."""

    def hook(mod, args, out):
        hidden, index, weights = (list(args) + [None, None])[:3]
        total = _output(out)
        change = None
        with torch.enable_grad() if torch.is_grad_enabled() else torch.no_grad():
            parts = expert_shares(mod, hidden, index, weights, [site.expert for site in sites])
        for site, part in zip(sites, parts):
            view = part.view(*shape["x"][:-1], part.shape[-1])
            new = state.process(site, view)
            if new is not view:
                delta = new.reshape(part.shape).to(part.dtype) - part
                change = delta if change is None else change + delta
        return None if change is None else _with_output(out, total + change)

    handles.append(experts.register_forward_hook(hook))


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
            seen["rows"] = rows = _first_input(args, kwargs).shape[0]
            if on_tile is not None:
                on_tile(rows)
        return repeat_rows(args, rows, copies), {k: repeat_rows(v, rows, copies) for k, v in kwargs.items()}

    mods = [hf.get_submodule(f"{a.blocks}.{l}") for l in range(layer, model.cfg.n_layers)] or [hf.get_submodule(a.final_norm)]
    with model_lock(hf):
        handles = [m.register_forward_pre_hook(hook, with_kwargs=True, prepend=True) for m in mods]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _probe(state: HookState, sites: dict[str, Site]) -> Callable[[str, torch.Tensor], torch.Tensor]:
    def probe(kind: str, x: torch.Tensor) -> torch.Tensor:
        site = sites.get(kind)
        return x if site is None else state.process(site, x)

    return probe


def _carry_resid_mid(blk: nn.Module, mlp: nn.Module, mid_norm: nn.Module, handles: list) -> None:
    """Make an edited ``resid_mid`` flow on along the residual stream, exactly.

    The pre-hook on the MLP's norm changes what the MLP reads, but the block adds the MLP output
    to its own (unedited) copy of the residual. So keep the edited residual and the final MLP
    output, and rebuild the block output as ``edited_mid + mlp_out`` — the same addition the block
    performs, hence bit-exact.
    """
    seen: dict[str, torch.Tensor] = {}

    def keep_mid(_m, args, kwargs):
        seen["mid"] = _first_input(args, kwargs)

    def keep_mlp(_m, _args, out):
        seen["mlp"] = _output(out)

    def rebuild(_m, _args, out):
        return _with_output(out, (seen.pop("mid") + seen.pop("mlp")).view_as(_output(out)))  # (OPT: rows flattened)

    # runs after the resid_mid pre-hook (registered earlier), and after any mlp.out hook
    handles.append(mid_norm.register_forward_pre_hook(keep_mid, with_kwargs=True))
    handles.append(mlp.register_forward_hook(keep_mlp))
    # runs before any resid_post hook on the same block
    handles.append(blk.register_forward_hook(rebuild, prepend=True))

