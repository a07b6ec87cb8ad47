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

from ..models.hooks import _first_input, _output, _with_first_input, expert_shares, model_lock, tiled
from ..models.model import Model
from ..models.offload import loaded
from .graph import Graph

ABLATIONS = ("corrupted", "mean", "resample", "zero")


def _weight_rows(module: nn.Module) -> torch.Tensor:
    """A projection's weight as [out_features, in_features] (GPT-2's Conv1D stores [in, out])."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.T


def _qkv_slices(model: Model) -> list[tuple[str, list[tuple[int, torch.Tensor]]]]:
    """For each q/k/v projection module of a block: (path, [(local receiver index, out rows)]).

    Local receiver indices follow ``Graph.attn_receivers`` (queries, keys, values)."""
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
        self.x: torch.Tensor | None = None  # the block's residual input (what its attention norm reads)
        self.norm: nn.Module | None = None
        self.experts: tuple[torch.Tensor, torch.Tensor] | None = None  # a MoE block's expert shares and their sum
        self.joint: torch.Tensor | None = None  # [rows, pos, k, out]: each receiver's move of a q/k projection
        self.delta: torch.Tensor | None = None  # [rows, pos, R_attn, d] for the current block
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


@contextmanager
def _edge_hooks(state: _State) -> Iterator[None]:
    model, graph = state.model, state.graph
    hf, a, c = model.hf, model.adapter, model.cfg
    handles = []
    block = lambda l, rel: hf.get_submodule(f"{a.blocks}.{l}.{rel}")  # noqa: E731
    slices = _qkv_slices(model)

    embed_scale, resid_scale = model.multiplier("embedding"), model.multiplier("residual")  # Granite

    def on_embed(_m, _args, out):
        x = _output(out)
        if state.embed is not None:
            x = state.embed.to(x.device, x.dtype)
        state.record(0, (x * embed_scale if embed_scale != 1.0 else x)[:, :, None])  # what enters the residual
        return x if state.embed is not None else None

    def on_embed_input(_m, args, kwargs):  # OPT: the embedding sum is block 0's input
        x = on_embed(_m, args, _first_input(args, kwargs))
        return None if x is None else _with_first_input(args, kwargs, x)

    def on_attn_norm(l):
        norm = block(l, a.attn_norm) if a.attn_norm else None  # None: attention reads the residual itself

        def hook(_m, args, kwargs):
            state.x = _first_input(args, kwargs)
            state.delta = state.delta_for(list(graph.attn_receivers[l]), state.x)
            state.norm = norm
        return hook

    def moved_by(local: list[tuple[int, torch.Tensor]], normed: torch.Tensor) -> torch.Tensor:
        """[rows, pos, k, d]: how each receiver's own input moves what the projection reads."""
        x = state.x
        shift = state.delta[:, :, torch.tensor([i for i, _ in local], device=x.device)]
        return shift if state.norm is None else state.norm.forward(x[:, :, None] + shift) - normed[:, :, None]

    def on_qkv(l, local: list[tuple[int, torch.Tensor]], module: nn.Module):
        out_rows = torch.cat([r for _, r in local])

        def hook(_m, args, out):
            if state.delta is None:
                return None
            moved = moved_by(local, args[0])
            with loaded(module):  # an offloaded projection's weights are on meta in its hooks
                w = _weight_rows(module)[out_rows.to(out.device)].view(len(local), -1, moved.shape[-1])
                add = torch.einsum("bpkd,ked->bpke", moved.to(w.dtype), w).flatten(-2)
            return out + torch.zeros_like(out).index_add(-1, out_rows.to(out.device), add.to(out.dtype))
        return hook

    def on_joint_qk(local: list[tuple[int, torch.Tensor]], module: nn.Module, norm: nn.Module):
        """A q or k projection whose norm spans all heads: each receiver moves the whole projection
        (kept for ``on_norm``), and keeps its own slice of the normalised result."""
        def on_proj(_m, args, _out):
            if state.delta is None:
                state.joint = None
                return
            moved = moved_by(local, args[0])
            with loaded(module):
                w = _weight_rows(module)
                state.joint = torch.einsum("bpkd,ed->bpke", moved.to(w.dtype), w)  # [rows, pos, k, out]

        def on_norm(_m, args, out):
            if state.joint is None:
                return None
            u, whole = args[0], state.joint
            state.joint = None
            normed = norm.forward(u[:, :, None] + whole.to(u.dtype))  # [rows, pos, k, out]
            new = out.clone()
            for i, (_, rows) in enumerate(local):
                new[..., rows.to(out.device)] = normed[:, :, i, rows.to(out.device)]
            return new
        return on_proj, on_norm

    def on_z(l):
        def hook(_m, args, kwargs):
            if state.recording:
                z = _first_input(args, kwargs).unflatten(-1, (c.n_heads, -1))
                state.record(graph.sender_start[l], model.head_outputs(z, l))
        return hook

    def on_mid(l):
        def hook(_m, args, kwargs):
            x = _first_input(args, kwargs)
            delta = state.delta_for([graph.mlp_receiver(l)], state.x)
            return None if delta is None else _with_first_input(args, kwargs, x + delta[:, :, 0].reshape(x.shape))
        return hook

    def on_shared_mlp(l):
        def hook(_m, args, kwargs):
            delta = state.delta_for([graph.mlp_receiver(l)], state.x)
            if delta is None:
                return None
            return _with_first_input(args, kwargs, state.norm.forward(state.x + delta[:, :, 0]))
        return hook

    def on_mlp(l):
        def hook(_m, _args, out):
            y = _output(out).view(*state.x.shape[:2], -1)  # (OPT's MLP runs on flattened rows)
            state.record(graph.sender_start[l] + c.n_heads, (y * resid_scale if resid_scale != 1.0 else y)[:, :, None])
        return hook

    def on_experts(_m, args, out):  # a mixture of experts: keep each expert's share for on_moe to record
        if state.recording:
            hidden, index, weights = (list(args) + [None, None])[:3]
            with torch.no_grad():
                state.experts = (torch.stack(expert_shares(_m, hidden, index, weights, range(graph.n_experts)), 1),
                                 _output(out).detach())

    def on_moe(l):
        def hook(_m, _args, out):
            if not state.recording:
                return
            y = _output(out).detach()
            parts, total = state.experts  # [tokens, E, d], [tokens, d]
            shares = [parts.view(*y.shape[:2], *parts.shape[1:])]
            if graph.shared_expert:  # Qwen2-MoE: the block's output beyond its routed experts
                shares.append((y - total.view(y.shape))[:, :, None])
            state.record(graph.sender_start[l] + c.n_heads, torch.cat(shares, 2))
        return hook

    def on_final(_m, args, kwargs):
        x = _first_input(args, kwargs)
        delta = state.delta_for([len(graph.receivers) - 1], x)
        return None if delta is None else _with_first_input(args, kwargs, x + delta[:, :, 0])

    lock = model_lock(hf)
    lock.acquire()
    try:
        if a.embed_io == "input":
            handles.append(hf.get_submodule(a.embed).register_forward_pre_hook(on_embed_input, with_kwargs=True))
        else:
            handles.append(hf.get_submodule(a.embed).register_forward_hook(on_embed))
        for l in range(c.n_layers):
            handles.append(block(l, a.attn_norm or a.attn).register_forward_pre_hook(on_attn_norm(l), with_kwargs=True))
            for j, (path, local) in enumerate(slices):
                mod = block(l, path)
                if a.joint_qk_norm and j < 2:  # separate q and k projections, each with its all-heads norm
                    on_proj, on_norm = on_joint_qk(local, mod, block(l, a.joint_qk_norm[j]))
                    handles.append(mod.register_forward_hook(on_proj))
                    handles.append(block(l, a.joint_qk_norm[j]).register_forward_hook(on_norm))
                else:
                    handles.append(mod.register_forward_hook(on_qkv(l, local, mod)))
            handles.append(block(l, a.out_proj).register_forward_pre_hook(on_z(l), with_kwargs=True))
            if graph.has_mlp:
                if a.mid_norm is not None:
                    handles.append(block(l, a.mid_norm).register_forward_pre_hook(on_mid(l), with_kwargs=True))
                else:  # Cohere: the MLP reads attention's normalised input; it gets norm(x + its own δ)
                    handles.append(block(l, a.mlp).register_forward_pre_hook(on_shared_mlp(l), with_kwargs=True))
                if graph.n_experts:
                    handles.append(block(l, a.experts).register_forward_hook(on_experts))
                    handles.append(block(l, a.mlp_out_path).register_forward_hook(on_moe(l)))
                else:
                    handles.append(block(l, a.mlp_out_path).register_forward_hook(on_mlp(l)))
        handles.append(hf.get_submodule(a.final_norm).register_forward_pre_hook(on_final, with_kwargs=True))
        with tiled(model, state.tiles, state.split, state.tile) if state.tiles > 1 else nullcontext():
            yield
    finally:
        for h in handles:
            h.remove()
        lock.release()


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
