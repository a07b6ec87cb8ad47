"""Edge-level runs: every receiver of the component graph gets its own residual input.

A receiver's input is the sum of what its senders wrote (``Graph``). Cutting edge u → r replaces
u's share of r's input by u's *ablated* output (the corrupted prompt's, the mean, or another
prompt's), leaving every other reader of u untouched:

    input_r = resid_r + Σ_u (1 − keep[u, r]) · (ablated_u − current_u)

Heads read through their own query/key/value: the engine adds, to the output of the q/k/v
projection, ``(norm(x + δ_r) − norm(x)) · W_r`` for each head's slice — the model's own norm
module and projection weights, so nothing is re-implemented and an all-kept mask leaves the
output bit for bit. Where a q/k norm spans all heads (OLMo 2/3, OLMoE) head h's query is slice h
of ``q_norm(q_proj(x) + (norm(x + δ_h) − norm(x)) · W)``: the whole projection reads head h's
input, and h keeps its own slice (all kept: the model; all cut: the corrupted run). MLPs and the
logits read through a pre-hook on their norm.

One forward carries ``copies`` different masks (rows ``c·n … (c+1)·n − 1`` for copy c): the
faithfulness curve and ACDC's speculative steps are batched. Copies whose masks agree on every
receiver of the first L blocks are identical there, so those blocks run once (n rows) and the rows
are tiled at block L: path patching into a late head costs a fraction of full forwards. With ``grad=True`` the engine adds a
zero leaf to every receiver's input and returns ∂metric/∂input_r — what EAP needs.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from ..models.hooks import tiled
from ..models.hookset import HookSet
from ..models.model import Model
from ..models.placement import head_inputs, logits_input, mlp_input, mlp_senders, site_places
from ..models.sites import Site, parse
from .graph import Graph
from ..models.sites import block_site

ABLATIONS = ("corrupted", "mean", "resample", "zero")


@dataclass
class EdgeRun:
    """What one edge-level forward returned. logits: [rows, vocab] at each row's last token;
    grads: receiver index -> ∂metric/∂input [rows, pos, d_model] (``grad=True`` only)."""

    logits: torch.Tensor
    grads: dict[int, torch.Tensor] = field(default_factory=dict)


class _State:
    """Shared by the hooks of one edge-level forward."""

    def __init__(self, model: Model, graph: Graph, rows: int, *, keep: torch.Tensor | None = None,
                 ablated: torch.Tensor | None = None, grad: bool = False, embed: torch.Tensor | None = None,
                 record: bool = False, extra: list | None = None):
        self.model, self.graph, self.rows = model, graph, rows
        self.extra = [(w[None] if w.dim() == 2 else w, src) for w, src in (extra or [])]
        self.keep, self.ablated, self.grad, self.embed = keep, ablated, grad, embed
        self.recording = record or keep is not None or bool(self.extra)
        self.current: torch.Tensor | None = None  # [rows, pos, senders − offset, d] sender outputs of this run
        self.offset, self.early = 0, None  # senders before offset: [prompts, pos, offset, d], the same in every copy
        self.leaves: list[tuple[torch.Tensor, list[int]]] = []
        self.totals: dict[int, torch.Tensor] = {}
        self.tiles = 1  # > 1 while the copies still share their rows (see ``tile``)
        self.ablated_totals = None
        if ablated is not None:  # [n or 1, pos, senders + 1, d]: running sums over senders
            z = torch.zeros_like(ablated[:, :, :1], dtype=torch.float32)
            self.ablated_totals = torch.cat([z, ablated.to(torch.float32).cumsum(2)], 2)

    def record(self, start: int, out: torch.Tensor) -> None:
        """Store senders' outputs [rows, pos, k, d] at sender indices start … start + k − 1, and
        the running sum of everything recorded so far (``totals[prefix]``)."""
        if not self.recording:
            return
        if self.current is None:
            self.current = torch.zeros(*out.shape[:2], len(self.graph.senders) - self.offset, out.shape[-1],
                                       dtype=torch.float32, device=out.device)
            self.totals = self.totals or {0: torch.zeros(*out.shape[:2], out.shape[-1], device=out.device)}
        out = out.detach().to(torch.float32)
        self.current[:, :, start - self.offset:start - self.offset + out.shape[2]] = out
        self.totals[start + out.shape[2]] = self.totals[start] + out.sum(2)

    def share_until(self, layer: int, keep: torch.Tensor) -> None:
        """Run one copy's rows until block ``layer``, where ``tile`` makes the copies."""
        self.tiles, self.split, self.full_keep = keep.shape[0], layer, keep
        self.keep, self.rows = keep[:1], self.rows // keep.shape[0]

    def tile(self, _prompts: int) -> None:
        """The rows were just repeated once per copy: switch to every copy's mask; the senders
        recorded so far stay shared by the copies (``early``)."""
        g = self.graph
        self.keep, self.rows = self.full_keep, self.rows * self.tiles
        self.offset = g.sender_start[self.split] if self.split < g.n_layers else len(g.senders)
        self.early, self.current = self.current[:, :, :self.offset], None
        self.totals = {self.offset: self.totals[self.offset].repeat(self.tiles, 1, 1)}

    def delta_for(self, receivers: list[int], like: torch.Tensor) -> torch.Tensor | None:
        """[rows, pos, len(receivers), d]: ablation shift (+ a zero leaf for gradients) per
        receiver; None when nothing changes (the forward then stays bit for bit the model's)."""
        delta = None
        if self.keep is not None:
            up = self.graph.upstream(receivers[0])
            keep = self.keep[:, :up, receivers].to(like.device, torch.float32)  # [copies, up, R]
            cut = 1.0 - keep
            if bool(cut.any()):
                delta = self._shift(up, keep, cut).to(like.dtype)
        for weight, source in self.extra:  # further sources: Σ_u w_ur (source_u − current_u)
            up = self.graph.upstream(receivers[0])
            w = weight[:, :up, receivers].to(like.device, torch.float32)
            if bool(w.any()):
                shift = self._shift(up, 1.0 - w, w, source, force_cut=True).to(like.dtype)
                delta = shift if delta is None else delta + shift
        if self.grad:
            leaf = torch.zeros(*like.shape[:2], len(receivers), like.shape[-1], dtype=like.dtype,
                               device=like.device, requires_grad=True)
            self.leaves.append((leaf, receivers))
            delta = leaf if delta is None else delta + leaf
        return delta

    def _shift(self, up: int, keep: torch.Tensor, cut: torch.Tensor, source: torch.Tensor | None = None,
               force_cut: bool = False) -> torch.Tensor:
        """Σ_u cut_ur (ablated_u − current_u) over the senders u < up, summed over whichever of
        the cut or the kept senders are fewer: Σ_cut = Σ_all − Σ_kept, and Σ_all is a difference of
        running sums (sparse circuits cost little, dense ones too)."""
        copies, n = keep.shape[0], self.rows // keep.shape[0]
        dev = keep.device
        abl = (self.ablated if source is None else source).to(dev, torch.float32)  # [n or 1, pos, senders, d]
        kept_any, cut_any = keep.amax((0, 2)) > 0, cut.amax((0, 2)) > 0
        use_kept = int(kept_any.sum()) < int(cut_any.sum()) and not force_cut
        idx = (kept_any if use_kept else cut_any).nonzero().flatten()
        w = (keep if use_kept else cut)[:, idx]  # [copies, k, R]
        part = torch.einsum("npkd,ckr->cnprd", abl[:, :, idx], w) - self._weighted_current(idx, w, n)
        if use_kept:
            every = self.ablated_totals[:, :, up].to(dev) - self.totals[up].view(copies, n, *self.totals[up].shape[1:])
            part = every[:, :, :, None] - part
        part = part.expand(copies, n, *part.shape[2:])
        return part.reshape(self.rows, part.shape[2], part.shape[3], -1)


    def _weighted_current(self, idx: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor | float:
        """Σ_k w[c, k, r] · current[c, n, pos, idx_k, d] -> [copies, n, pos, R, d] (0 if no k);
        senders before ``offset`` are read once for all copies."""
        out: torch.Tensor | float = 0.0
        early = idx < self.offset
        if bool(early.any()):
            out = torch.einsum("npkd,ckr->cnprd", self.early[:, :, idx[early]], w[:, early])
        if not bool(early.all()):
            cur = self.current.view(w.shape[0], n, *self.current.shape[1:])
            out = out + torch.einsum("cnpkd,ckr->cnprd", cur[:, :, :, idx[~early] - self.offset], w[:, ~early])
        return out


class _Senders:
    """The ``Processor`` of the sender sites (``placement.Processor``): records each sender's output
    at its index — a head's from ``attn.z`` (``Model.head_outputs``) — and puts ``state.embed`` in
    place of the embedding where it is given."""

    def __init__(self, state: _State, index: dict[str, int]):
        self.state, self.index = state, index

    def process(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        state = self.state
        if site.kind == "embed" and state.embed is not None:
            x = state.embed.to(x.device, x.dtype)
        if state.recording:
            state.record(self.index[site.name],
                         state.model.head_outputs(x, site.layer) if site.kind == "attn.z" else x[:, :, None])
        return x

    def keeps(self, site: Site) -> bool:
        return False

    def edits(self, site: Site) -> bool:
        return False

    def check(self, site: Site, module: nn.Module) -> None:
        return None


@contextmanager
def _edge_hooks(state: _State) -> Iterator[None]:
    """Hooks of one edge-level forward, all from the placement layer: the senders' sites (what the
    embedding, each head and each MLP or expert add to the residual) and each receiver's input."""
    model, graph = state.model, state.graph
    senders = [parse("embed")]
    index = {"embed": 0}
    for l in range(graph.n_layers):
        z = parse(block_site(l, "attn.z"))
        index[z.name] = graph.sender_start[l]
        senders.append(z)
        if graph.has_mlp:
            for i, site in enumerate(mlp_senders(model, l)):
                index[site.name] = graph.sender_start[l] + graph.n_heads + i
                senders.append(site)
    recorder = _Senders(state, index)
    with HookSet(model.hf) as hooks:
        placed = senders if state.recording else senders[:1]  # the embedding may be replaced in any run
        own = {place.sites[0].name: place for place in site_places(model, placed)}
        own["embed"].install(hooks, recorder)
        for l in range(graph.n_layers):
            heads = list(graph.attn_receivers[l])
            reading = head_inputs(model, l).install(hooks, lambda like, r=heads: state.delta_for(r, like))
            if state.recording:
                own[block_site(l, "attn.z")].install(hooks, recorder)
            if graph.has_mlp:
                mlp = [graph.mlp_receiver(l)]
                mlp_input(model, l).install(hooks, lambda like, r=mlp: state.delta_for(r, like), reading)
                for site in mlp_senders(model, l) if state.recording else ():
                    place = own.pop(site.name, None)
                    if place is not None:  # (one place holds a block's experts)
                        place.install(hooks, recorder)
        logits_input(model).install(hooks, lambda like: state.delta_for([len(graph.receivers) - 1], like))
        with tiled(model, state.tiles, state.split, state.tile) if state.tiles > 1 else nullcontext():
            yield


def tokens_of(model: Model, prompts: list[list[int]], copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [copies · n, pos] for ``prompts`` tiled ``copies`` times (left-padded)."""
    return model.tokenize(list(prompts) * copies)


def _shared_blocks(graph: Graph, keep: torch.Tensor) -> int:
    """How many leading blocks read the same edges in every copy of ``keep`` [copies, S, R]."""
    differs = (keep != keep[:1]).any(0).any(0).nonzero()  # receivers whose edges differ between copies
    if len(differs) == 0:
        return graph.n_layers
    per = len(graph.attn_receivers[0]) + int(graph.has_mlp)
    return int(differs[0]) // per if int(differs[0]) < len(graph.receivers) - 1 else graph.n_layers


def edge_run(model: Model, graph: Graph, prompts: list[list[int]], *, keep: torch.Tensor | None = None,
             ablated: torch.Tensor | None = None, grad_metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
             embed: torch.Tensor | None = None, extra: list[tuple[torch.Tensor, torch.Tensor]] = (),
             all_positions: bool = False) -> EdgeRun:
    """One forward over ``prompts`` (tiled once per mask copy) with edges cut.

    keep: [copies, senders, receivers] (or [senders, receivers]) masks, 1 = edge kept; ablated:
    [n or 1, pos, senders, d_model] sender outputs to patch in where an edge is cut (see
    ``sender_outputs``). grad_metric: logits [rows, vocab] -> scalar; when given, returns the
    gradient at every receiver's input. embed: [rows, pos, d_model] replaces the embedding output
    (integrated gradients on the inputs). extra: further (weight [copies, S, R], outputs [n, pos, S, d])
    pairs; each adds Σ_u weight_ur (outputs_u − current_u) to receiver r's input (edges read from
    different sources, as causal scrubbing needs). all_positions: logits (and the metric's input)
    [rows, pos, vocab] rather than the last position's [rows, vocab]."""
    if keep is not None:
        if ablated is None:
            raise ValueError("keep=... cuts edges and needs ablated=... (the outputs patched in)")
        keep = keep[None] if keep.dim() == 2 else keep
        want = (len(graph.senders), len(graph.receivers))
        if tuple(keep.shape[1:]) != want:
            raise ValueError(f"edge mask has shape {tuple(keep.shape)}; this model's graph needs [copies, {want[0]}, {want[1]}]")
    copies = 1 if keep is None else keep.shape[0]
    if embed is not None:
        copies = embed.shape[0] // len(prompts)
    shared = 0
    if copies > 1 and embed is None and grad_metric is None and not extra:
        shared = _shared_blocks(graph, keep)
    ids, mask = tokens_of(model, prompts, 1 if shared else copies)
    state = _State(model, graph, len(prompts) * copies, keep=keep, ablated=ablated, grad=grad_metric is not None,
                   embed=embed, extra=list(extra))
    if shared:
        state.share_until(shared, keep)
    with torch.set_grad_enabled(grad_metric is not None), _edge_hooks(state):
        out = model.hf(**model.hf_inputs(ids, mask), use_cache=False, logits_to_keep=0 if all_positions else 1)
    logits = out.logits if all_positions else out.logits[:, -1]
    run = EdgeRun(logits=logits.detach())
    if grad_metric is not None:
        value = grad_metric(logits)
        got = torch.autograd.grad(value, [leaf for leaf, _ in state.leaves], allow_unused=True)
        for (leaf, receivers), g in zip(state.leaves, got):
            g = torch.zeros_like(leaf) if g is None else g
            for i, r in enumerate(receivers):
                run.grads[r] = g[:, :, i].detach()
    return run


def sender_outputs(model: Model, graph: Graph, prompts: list[list[int]]) -> torch.Tensor:
    """Every sender's output on ``prompts``: [n, pos, senders, d_model] (float32, no gradients;
    positions are left-padded like the prompts' batch, padded entries zero)."""
    ids, mask = tokens_of(model, prompts)
    state = _State(model, graph, ids.shape[0], record=True)
    with torch.no_grad(), _edge_hooks(state):
        model.hf(**model.hf_inputs(ids, mask), use_cache=False, logits_to_keep=1)
    return (state.current.float() * mask[:, :, None, None].to(state.current.device)).cpu()


def ablated_outputs(clean: torch.Tensor, corrupted: torch.Tensor, mask: torch.Tensor, how: str,
                    seed: int = 0) -> torch.Tensor:
    """The sender outputs patched in where an edge is cut: the pair's corrupted prompt
    (``corrupted``), the mean over the corrupted prompts per position from the right (``mean``;
    [1, pos, senders, d]), another pair's corrupted prompt (``resample``, a derangement), or nothing
    (``zero``: the edge removed)."""
    if how == "corrupted":
        return corrupted
    if how == "mean":
        m = mask[:, :, None, None].float()
        return (corrupted * m).sum(0, keepdim=True) / m.sum(0, keepdim=True).clamp(min=1)
    if how == "resample":
        n = corrupted.shape[0]
        if n < 2:
            raise ValueError("resample ablation needs at least 2 pairs")
        g = torch.Generator().manual_seed(seed)
        shift = int(torch.randint(1, n, (1,), generator=g))
        return corrupted[(torch.arange(n) + shift) % n]
    if how == "zero":
        return torch.zeros_like(corrupted[:1])
    raise ValueError(f"ablation={how!r}; valid: {', '.join(ABLATIONS)}")
