"""Placement: every architecture quirk, once — where a site, a sender or a receiver lives in a family's modules.

The adapter (``adapters.py``) is data: module paths and the fields that say how a family differs
from a plain pre-norm block. This package's functions are the one place that reads those fields
(its modules hold the kinds: ``views.py``, ``places.py``, ``receivers.py``). They turn
(model, site) into a typed **place** — a module, its input or its output, and a ``View`` that cuts
the site's tensor out of the module's tensor and puts an edited one back (a multiplier, the gate half
of a fused projection, rows a block flattened, heads) — or into the places with no module of their
own (a router's logits decided again, an expert's share, a gated shared expert, the attention
internals). The run engine (``hooks.hooked``) installs site places with a ``Processor`` that edits,
caches and keeps values; the circuit engine (``circuits/edges.py``) installs the same site places
for its senders and the **receiver** places (``receivers.py``) for its receivers, so neither tests a
family.

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

from typing import TYPE_CHECKING, Sequence

import torch

from ..adapters import multiplier_factor
from ..sites import Site, parse
from .places import (AttentionInternals, ExpertShares, ModuleInput, ModuleOutput, Place, Processor, ResidMidCarry,
                     RouterLogits, SharedExpert, expert_shares)
from .receivers import (HeadInputs, JointNormRows, NormInput, ProjectionRows, Reading, SharedNormInput, Shift,
                        weight_rows)
from .views import Chain, Divided, FirstPart, FlatRows, PerHead, Scaled, View

if TYPE_CHECKING:
    from ..model import Model


FLAT_MLP_SITES = frozenset({"resid_mid", "mlp.in", "mlp.pre", "mlp.post", "mlp.out"})
_MULTIPLIED = {"embed": "embedding", "attn.out": "residual", "mlp.out": "residual", "logits": "logit"}


def _multiplier(model: "Model", kind: str) -> View | None:
    """The constant a family applies to a module's output outside any module (None: none)."""
    found = multiplier_factor(model.adapter, model.hf.config, _MULTIPLIED[kind]) if kind in _MULTIPLIED else None
    if found is None:
        return None
    factor, divides = found  # divided back out exactly as the family divides (not multiplied by 1/factor)
    return Divided(factor) if divides else Scaled(factor)


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


def head_contributions(model: "Model", heads: torch.Tensor, bias: torch.Tensor | None, layer: int) -> torch.Tensor:
    """Each head's o_proj output [batch, pos, head, d_model] as its share of ``attn.out``: times the
    residual multiplier where the family scales block outputs (Granite); through attention's post-norm
    with its scale frozen — gain / RMS of the summed output — where one normalises it (Gemma 2/3)."""
    found = multiplier_factor(model.adapter, model.hf.config, "residual")
    if found is not None:
        factor, divides = found
        return heads / factor if divides else heads * factor
    if model.adapter.attn_out is None:
        return heads
    from ..norms import frozen_rms_scale

    norm = model.hf.get_submodule(f"{model.adapter.blocks}.{layer}.{model.adapter.attn_out}")
    total = heads.sum(2) + (bias if bias is not None else 0)
    return (heads.float() * frozen_rms_scale(norm, total)[:, :, None]).to(heads.dtype)  # (gain read under loaded)


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


__all__ = ["AttentionInternals", "Chain", "Divided", "ExpertShares", "FirstPart", "FlatRows", "HeadInputs", "JointNormRows",
           "ModuleInput", "ModuleOutput", "NormInput", "PerHead", "Place", "Processor", "ProjectionRows", "Reading",
           "RECEIVER_PLACE_KINDS", "ResidMidCarry", "RouterLogits", "SITE_PLACE_KINDS", "Scaled", "SharedExpert",
           "SharedNormInput", "Shift", "VIEW_KINDS", "View", "expert_shares", "head_inputs", "logits_input", "mlp_input",
           "mlp_senders", "qkv_rows", "site_places", "weight_rows"]
