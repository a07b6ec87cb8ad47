"""Interventions: small dataclasses applied at a site during a run or generation.

Each names a ``site`` (a glob applies it at every match), optionally ``heads`` and ``positions``,
and computes new values for the selected slice. Positions address *real* tokens of each row:
``-1`` is the last token (batches are left-padded), ``0`` the first real token of each row. For
attention scores/patterns positions select query positions.

Interventions compose: several at one site apply in list order, sites apply in forward order.
"""

from __future__ import annotations

import math
import numbers

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence

import torch

from .sites import Site


class InterventionError(ValueError):
    """An intervention that cannot apply: bad heads, positions, shapes or values."""


# ----------------------------------------------------------------------------------------------
# Selection of heads and positions


class Selection:
    """Row/head/position selection of one site tensor, as gather (``get``) and scatter (``put``).

    Works on a canonical view ``[batch, pos, (head,) ...]``: pattern-layout tensors
    ``[batch, head, q, k]`` are transposed to ``[batch, q, head, k]`` and back. Channel-layout
    tensors (an image model's ``[batch, channel, h, w]``) are viewed channels-last,
    ``[batch, h, w, channel]``, and ``heads`` selects channels: so a vector or direction over the
    channels adds, projects and averages as one over a residual's features does.
    """

    def __init__(
        self,
        site: Site,
        shape: torch.Size,
        heads: Sequence[int] | None,
        positions: Sequence[int] | None,
        mask: torch.Tensor | None,
        rows: Sequence[int] | None = None,
    ):
        self.site, self.shape, self.heads, self.positions, self.rows = site, shape, heads, positions, rows
        self.transposed = site.layout == "pattern"
        self.channels_last = site.layout == "channel" and len(shape) > 2
        if site.layout == "channel":
            if positions is not None:
                raise InterventionError(f"positions={list(positions)} given for {site.name}, an image model's module: "
                                        "positions do not apply; select channels in the site name (e.g. '_blocks.4:17')")
            self.row_idx = _checked_index(rows, shape[0], "row", site.name, "rows in the batch") if rows is not None else None
            self.head_idx = _checked_index(heads, shape[1], "channel", site.name, "channels") if heads is not None else None
            self.pos_idx = None
            return
        canon = (shape[0], shape[2], shape[1], *shape[3:]) if self.transposed else tuple(shape)
        batch, n_pos = canon[0], canon[1]
        self.row_idx = _checked_index(rows, batch, "row", site.name, "rows in the batch") if rows is not None else None
        self.head_idx = None
        if heads is not None:
            if site.layout == "resid":
                raise InterventionError(
                    f"heads={list(heads)} given for {site.name}, which has no head dimension; "
                    "heads apply to attn.q/k/v/z/scores/pattern"
                )
            self.head_idx = _checked_index(heads, canon[2], "head", site.name, "heads")
        self.pos_idx = position_index(positions, mask, batch, n_pos, site.name) if positions is not None else None

    @property
    def selects(self) -> bool:
        return self.row_idx is not None or self.pos_idx is not None or self.head_idx is not None

    def with_mask(self, mask: torch.Tensor | None) -> "Selection":
        """The same selection on another tensor with its own padding (a patch source)."""
        return Selection(self.site, self.shape, self.heads, self.positions, mask, self.rows)

    def _canon(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.movedim(1, -1)
        return x.transpose(1, 2) if self.transposed else x

    def natural(self, selected: torch.Tensor) -> torch.Tensor:
        """A selected slice in the layout an image module gives ([rows, channels, ...]); other
        layouts are returned as they are."""
        return selected.movedim(-1, 1) if self.channels_last else selected

    def canonical(self, selected: torch.Tensor) -> torch.Tensor:
        """The inverse of ``natural``."""
        return selected.movedim(1, -1) if self.channels_last else selected

    def _uncanon(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.movedim(-1, 1)
        return x.transpose(1, 2) if self.transposed else x

    def _index(self, xc: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dev = xc.device
        rows = self.row_idx.to(dev) if self.row_idx is not None else torch.arange(xc.shape[0], device=dev)
        if self.pos_idx is not None:
            pos = self.pos_idx.to(dev)[rows]
        else:
            pos = torch.arange(xc.shape[1], device=dev).expand(len(rows), xc.shape[1])
        if self.head_idx is None:
            return rows[:, None], pos
        return rows[:, None, None], pos[:, :, None], self.head_idx.to(dev)[None, None, :]

    def get(self, x: torch.Tensor) -> torch.Tensor:
        """Selected slice: [rows, positions, (heads,) ...] in canonical order (channel layout:
        [rows, ..., channels])."""
        xc = self._canon(x)
        if self.site.layout == "channel":
            if self.row_idx is not None:
                xc = xc[self.row_idx.to(xc.device)]
            return xc[..., self.head_idx.to(xc.device)] if self.head_idx is not None else xc
        return xc[self._index(xc)] if self.selects else xc

    def put(self, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` with the selected slice replaced by ``new`` (out of place, differentiable)."""
        xc = self._canon(x)
        new = new.to(x.dtype)
        if not self.selects:
            out = new if new.shape == xc.shape else torch.broadcast_to(new, xc.shape).contiguous()
        elif self.site.layout == "channel":
            rows = self.row_idx.to(xc.device) if self.row_idx is not None else None
            part = xc[rows] if rows is not None else xc
            if self.head_idx is not None:
                ch = self.head_idx.to(xc.device)
                part = part.index_copy(-1, ch, new.expand(part[..., ch].shape).contiguous())
            else:
                part = new.expand(part.shape).contiguous()
            out = xc.index_copy(0, rows, part) if rows is not None else part
        else:
            index = self._index(xc)
            out = xc.index_put(index, new.expand(xc[index].shape))
        return self._uncanon(out)


def _checked_index(values: Sequence[int], size: int, what: str, site_name: str, plural: str) -> torch.Tensor:
    bad = [v for v in values if not -size <= int(v) < size]
    if bad:
        raise InterventionError(
            f"{what} {bad[0]} out of range for {site_name}: it has {size} {plural} (0..{size - 1})"
        )
    return torch.tensor([int(v) % size for v in values], dtype=torch.long)


def position_index(
    positions: Sequence[int], mask: torch.Tensor | None, batch: int, n_pos: int, site_name: str
) -> torch.Tensor:
    """Absolute indices [batch, len(positions)] of real-token positions in a left-padded batch."""
    if mask is None or mask.shape[-1] != n_pos:
        lengths = torch.full((batch,), n_pos)
    else:
        lengths = mask.sum(-1).to("cpu", torch.long)
    shortest = int(lengths.min())
    bad = [p for p in positions if not -shortest <= p < shortest]
    if bad:
        raise InterventionError(
            f"position {bad[0]} out of range at {site_name}: the shortest prompt has {shortest} real "
            f"tokens (valid positions {-shortest}..{shortest - 1}; -1 is the last token)"
        )
    pos = torch.tensor(list(positions), dtype=torch.long)
    pad = (n_pos - lengths)[:, None]
    return torch.where(pos[None, :] < 0, n_pos + pos[None, :], pad + pos[None, :])


# ----------------------------------------------------------------------------------------------
# The interventions


@dataclass(eq=False)
class Edit:
    """What an intervention sees while editing one site in one forward pass."""

    x: torch.Tensor  # the whole site tensor, as it arrives
    sel: Selection
    mask: torch.Tensor | None  # [batch, pos] attention mask of this forward
    data: Any = None  # per-site data bound before the run (reference mean, patch source, ...)


@dataclass(eq=False)
class Intervention:
    """Base class. ``site`` may be a glob; ``heads``/``positions``/``rows`` narrow what is changed.

    ``rows`` lets one forward pass carry many variants of a prompt, one per row (batched sweeps
    instead of one forward per patched index)."""

    site: str
    heads: Sequence[int] | None = field(default=None, kw_only=True)
    positions: Sequence[int] | None = field(default=None, kw_only=True)
    rows: Sequence[int] | None = field(default=None, kw_only=True)  # batch rows (for batched sweeps)

    def __post_init__(self):
        for what in ("heads", "positions", "rows"):
            values = getattr(self, what)
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise InterventionError(f"{type(self).__name__} at {self.site}: {what}={values!r} must be a list of ints")
            values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
            if bad:
                raise InterventionError(f"{type(self).__name__} at {self.site}: {what} must be ints, got {bad[0]!r} "
                                        f"in {what}={values!r}")
            setattr(self, what, [int(v) for v in values])

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        """New values for ``selected`` (same shape, or broadcastable to it)."""
        raise NotImplementedError

    def needs_source(self) -> bool:
        """True when the intervention reads another run's activations at its sites."""
        return False

    def check(self, site: Site, module: torch.nn.Module) -> None:
        """Refuse, before the forward, what the module at ``site`` cannot do (nothing by default)."""


@dataclass(eq=False)
class Ablate(Intervention):
    """Zero, mean or resample ablation.

    ``how="mean"`` replaces with the mean over ``reference`` (a Run caching the site, or prompts);
    with no reference, the mean over the run's own batch. ``over="tokens"`` averages every real
    token (shape [d] or [head, d]); ``over="batch"`` averages rows position by position (prompts of
    equal length; required for scores/patterns). ``how="resample"`` gives each row the activation
    of another row of ``reference`` (or of its own batch), chosen by ``seed``.
    """

    how: Literal["zero", "mean", "resample"] = "zero"
    reference: Any = None
    over: Literal["tokens", "batch"] = "tokens"
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.how not in ("zero", "mean", "resample"):
            raise InterventionError(f"Ablate how={self.how!r}; valid: 'zero', 'mean', 'resample'")
        if self.over not in ("tokens", "batch"):
            raise InterventionError(f"Ablate over={self.over!r}; valid: 'tokens', 'batch'")

    def needs_source(self) -> bool:
        return self.how != "zero" and self.reference is not None

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        if self.how == "zero":
            return torch.zeros((), dtype=selected.dtype, device=selected.device)
        if self.how == "mean":
            mean = e.data if e.data is not None else site_mean(e.x, e.mask, e.sel.site, self.over)
            return e.sel.get(mean.to(e.x.device).expand_as(e.x))
        src, src_mask = e.data if e.data is not None else (e.x, e.mask)
        perm = resample_rows(e.x.shape[0], src.shape[0], self.seed, exclude_self=e.data is None)
        src = src[perm.to(src.device)]
        src_mask = src_mask[perm.to(src_mask.device)] if src_mask is not None else None
        check_aligned(self, e, src, src_mask)
        return e.sel.with_mask(src_mask).get(src)


@dataclass(eq=False)
class Patch(Intervention):
    """Put another run's activations here: ``source`` is a Run that cached the site, prompts, or a
    tensor of the site's full shape. Without ``positions`` source and target must have the same
    length and padding; with positions, row i's position p takes source row i's position p."""

    source: Any = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.source, torch.Tensor):
            _floating(self, self.source, "source")

    def needs_source(self) -> bool:
        return True

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        src, src_mask = e.data
        if src.shape[0] == 1 and e.x.shape[0] > 1:
            src = src.expand(e.x.shape[0], *src.shape[1:])
            src_mask = src_mask.expand(e.x.shape[0], -1) if src_mask is not None else None
        if src.shape[0] != e.x.shape[0]:
            raise InterventionError(
                f"Patch at {e.sel.site.name}: source has batch {src.shape[0]}, the run has "
                f"{e.x.shape[0]} (valid: equal, or a source of batch 1)"
            )
        check_aligned(self, e, src, src_mask)
        return e.sel.with_mask(src_mask).get(src)


@dataclass(eq=False)
class Add(Intervention):
    """Add ``coef * vector`` (steering). ``vector``: [d] (the site's last dim), or any shape that
    broadcasts to the selected slice, e.g. [n_heads_selected, d_head]."""

    vector: torch.Tensor = None
    coef: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        self.vector = _floating(self, torch.as_tensor(self.vector), "vector")
        if not torch.isfinite(self.vector).all():
            raise InterventionError(f"Add at {self.site}: the vector contains NaN or infinite values")
        if not torch.isfinite(torch.tensor(float(self.coef))):
            raise InterventionError(f"Add at {self.site}: coef={self.coef} is not finite")

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        v = self.vector.to(selected.device, selected.dtype)
        check_broadcast(self, v, selected, e)
        return selected + self.coef * v


@dataclass(eq=False)
class ProjectOut(Intervention):
    """Remove the component along ``direction`` ([d], the site's last dim): x - (x·u) u, u = d/|d|."""

    direction: torch.Tensor = None

    def __post_init__(self):
        super().__post_init__()
        self.direction = _floating(self, torch.as_tensor(self.direction), "direction")
        if not torch.isfinite(self.direction).all():
            raise InterventionError(f"ProjectOut at {self.site}: the direction contains NaN or inf")
        if float(self.direction.norm()) == 0.0:
            raise InterventionError(f"ProjectOut at {self.site}: the direction is zero")

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        u = self.direction.to(selected.device, selected.dtype)
        check_broadcast(self, u, selected, e)
        u = u / u.norm(dim=-1, keepdim=True)
        return selected - (selected * u).sum(-1, keepdim=True) * u


@dataclass(eq=False)
class Replace(Intervention):
    """Replace the selected slice by ``fn(selected)``, which must keep its shape. ``fn`` sees the
    slice in canonical order; on an image model's module, as the module gives it ([rows,
    channels, ...])."""

    fn: Callable[[torch.Tensor], torch.Tensor] = None

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        given = e.sel.natural(selected)
        new = self.fn(given)
        if not isinstance(new, torch.Tensor) or new.shape != given.shape:
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise InterventionError(
                f"Replace at {e.sel.site.name}: fn returned {got}, expected shape {tuple(given.shape)}"
            )
        return e.sel.canonical(new)


@dataclass(eq=False)
class Route(Intervention):
    """Change a mixture of experts' routing at its router site (``blocks.L.mlp.router``, logits
    [batch, pos, experts]): ``forbid`` experts are never chosen (their logits set to −inf; the router
    renormalises over the others by its family's rule), ``force`` experts always are (their logits set
    ``lead`` above the largest other logit, so they win the top-k and ``lead`` sets their weight).
    At most top-k experts can be forced. Ablating an expert's *output* instead is
    ``Ablate("blocks.L.mlp.experts.E.out")``: the routing weights then stay as they were."""

    force: Sequence[int] = ()
    forbid: Sequence[int] = ()
    lead: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        for name in ("force", "forbid"):
            given = getattr(self, name)
            if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
                raise InterventionError(f"Route at {self.site}: {name}={given!r}: give a list of expert numbers")
            experts = list(given)
            bad = [e for e in experts if isinstance(e, bool) or not isinstance(e, int)
                   and not (isinstance(e, torch.Tensor) and e.ndim == 0 and not e.is_floating_point()
                            and e.dtype != torch.bool)]
            if bad:
                raise InterventionError(f"Route at {self.site}: {name}={given!r}: experts are integers "
                                        f"({bad[0]!r} is {type(bad[0]).__name__})")
            setattr(self, name, [int(e) for e in experts])
        if not self.force and not self.forbid:
            raise InterventionError(f"Route at {self.site}: give force=[...] and/or forbid=[...] experts")
        both = set(self.force) & set(self.forbid)
        if both:
            raise InterventionError(f"Route at {self.site}: expert {min(both)} is both forced and forbidden")
        if not math.isfinite(float(self.lead)) or self.lead < 0:
            raise InterventionError(f"Route at {self.site}: lead={self.lead} must be finite and ≥ 0")

    def check(self, site: Site, module: torch.nn.Module) -> None:
        top_k = getattr(module, "top_k", None)
        if top_k is not None and len(self.force) > top_k:
            raise InterventionError(f"{type(self).__name__} at {site.name} forces {len(self.force)} experts; the router "
                                    f"chooses {top_k} per token (valid: at most {top_k})")
        n = getattr(module, "num_experts", None) or getattr(getattr(module, "weight", None), "shape", (None,))[0]
        if n is not None and top_k is not None and len(set(self.forbid)) > n - top_k:
            raise InterventionError(f"{type(self).__name__} at {site.name} forbids {len(set(self.forbid))} of {n} experts; "
                                    f"the router chooses {top_k} per token, so at most {n - top_k} can be forbidden "
                                    "(forbidding more leaves no finite choice: NaN logits)")

    def edit(self, selected: torch.Tensor, e: Edit) -> torch.Tensor:
        if e.sel.site.kind != "mlp.router":
            raise InterventionError(f"Route at {e.sel.site.name}: Route edits a router's logits; valid sites are "
                                    "blocks.L.mlp.router of a mixture of experts")
        n = selected.shape[-1]
        bad = [x for x in self.force + self.forbid if not 0 <= x < n]
        if bad:
            raise InterventionError(f"Route at {e.sel.site.name}: expert {bad[0]} does not exist (valid: 0..{n - 1})")
        new = selected.clone()
        if self.forbid:
            new[..., self.forbid] = float("-inf")
        if self.force:
            others = new.index_fill(-1, torch.tensor(self.force, device=new.device), float("-inf"))
            top = others.amax(-1, keepdim=True)
            new[..., self.force] = torch.where(torch.isfinite(top), top, torch.zeros_like(top)) + self.lead
        return new


def as_interventions(value: Any) -> list[Intervention]:
    """``interventions=`` as a list: one intervention or a sequence of them; a string (read letter by
    letter before) or anything else is a ``TypeError`` naming it."""
    if isinstance(value, Intervention):
        return [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"interventions={value!r}: give a list of interventions (ms.Ablate, ms.Patch, ms.Add, "
                        "ms.ProjectOut, ms.Replace, ms.Route)")
    return list(value)


# ----------------------------------------------------------------------------------------------
# Helpers shared by the interventions above


def _floating(iv: Intervention, t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` if it is a real floating-point tensor; an integer, boolean or complex one would be
    silently truncated or lose its imaginary part when cast to the site's dtype."""
    if not t.is_floating_point():
        raise InterventionError(f"{type(iv).__name__} at {iv.site}: the {what} has dtype {t.dtype}; it must be a real "
                                "floating-point tensor (float32, float16, bfloat16, float64: use .float())")
    return t


def site_mean(x: torch.Tensor, mask: torch.Tensor | None, site: Site, over: str) -> torch.Tensor:
    """Mean activation: over real tokens ([d] / [head, d]) or over rows ([1, ...]); for an image
    model's module, per channel over the batch and every spatial place ([1, C, 1, 1])."""
    if site.layout == "channel":
        return x.mean([0, *range(2, x.dim())], keepdim=True) if over == "tokens" else x.mean(0, keepdim=True)
    if over == "batch":
        return x.mean(0, keepdim=True)
    if site.layout == "pattern":
        raise InterventionError(f"mean ablation of {site.name} needs over='batch' (scores/patterns)")
    if mask is None or mask.shape[1] != x.shape[1]:
        return x.flatten(0, 1).mean(0)
    w = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))
    return (x * w).sum((0, 1)) / w.sum((0, 1))


def resample_rows(n_target: int, n_source: int, seed: int, exclude_self: bool) -> torch.Tensor:
    """Seeded source row for each target row; avoids a row's own index when sampling its batch."""
    gen = torch.Generator().manual_seed(seed)
    if exclude_self and n_source > 1:
        shift = torch.randint(1, n_source, (n_target,), generator=gen)
        return (torch.arange(n_target) + shift) % n_source
    return torch.randint(0, n_source, (n_target,), generator=gen)


def check_aligned(iv: Intervention, e: Edit, src: torch.Tensor, src_mask: torch.Tensor | None) -> None:
    """Source and target must have the same site shape (except batch), and, without positions,
    the same padding: otherwise real tokens would receive padding activations."""
    name = f"{type(iv).__name__} at {e.sel.site.name}"
    if iv.positions is None and src.shape[1:] != e.x.shape[1:]:
        raise InterventionError(
            f"{name}: source shape {tuple(src.shape)} does not match the run's {tuple(e.x.shape)}; "
            "prompts of different lengths need positions=[...] (counted from the right, e.g. [-1])"
        )
    canon = e.sel._canon
    if canon(src).shape[2:] != canon(e.x).shape[2:]:
        raise InterventionError(f"{name}: source shape {tuple(src.shape)} does not match the run's {tuple(e.x.shape)}")
    if iv.positions is None and src_mask is not None and e.mask is not None:
        if src_mask.shape == e.mask.shape and not torch.equal(src_mask.cpu(), e.mask.cpu()):
            raise InterventionError(
                f"{type(iv).__name__} at {e.sel.site.name}: source and run have different padding "
                "(prompt lengths differ); give positions=[...] counted from the right (e.g. [-1])"
            )


def check_broadcast(iv: Intervention, v: torch.Tensor, selected: torch.Tensor, e: Edit) -> None:
    try:
        torch.broadcast_shapes(v.shape, selected.shape)
    except RuntimeError:
        raise InterventionError(
            f"{type(iv).__name__} at {e.sel.site.name}: vector of shape {tuple(v.shape)} does not fit "
            f"the selected activations of shape {tuple(selected.shape)} (give [{selected.shape[-1]}])"
        ) from None
    if v.dim() and v.shape[-1] != selected.shape[-1]:
        raise InterventionError(
            f"{type(iv).__name__} at {e.sel.site.name}: vector has last dim {v.shape[-1]}, "
            f"the site has {selected.shape[-1]}"
        )


def source_of(iv: Intervention) -> Any:
    """The run, prompts or tensor an intervention reads from (Patch.source / Ablate.reference)."""
    return iv.source if isinstance(iv, Patch) else getattr(iv, "reference", None)


__all__ = [
    "Intervention",
    "Ablate",
    "Patch",
    "Add",
    "ProjectOut",
    "Replace",
    "InterventionError",
    "Selection",
]
