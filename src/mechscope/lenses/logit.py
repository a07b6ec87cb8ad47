"""Lenses and decomposition: logit lens and direct logit attribution (DLA).

Logit lens: each layer's residual goes through the model's own final norm — so it is normalised
with *its own* statistics, not the final layer's — and the unembedding.

DLA: the final residual at a position is a sum of component outputs (embedding, every head, each
attention output bias, every MLP). With the final norm's scale taken from the run and held fixed
(the one approximation: a component's effect on that scale is ignored), the norm is linear, so
each component's logit contribution is ``W_U[t] · norm_fixed(component)`` and they sum, with the
norm's bias term and the unembedding bias, to the actual logit exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from .. import names
from ..models.model import Model
from ..models.offload import loaded
from ..models.weights import mlp_out_weights
from ..results import Provenance, Result
from ..models.sites import block_site, expert_site


# ----------------------------------------------------------------------------------------------
# Logit lens


@dataclass
class LogitLens(Result):
    """Each layer's residual decoded into tokens. Rows: ``embed`` then every ``resid_post``.

    target_prob / target_rank: [layers + 1, pos]; top_tokens: best token per (row, pos).
    """

    tokens: list[str]
    target: str
    rows: list[str]
    target_prob: torch.Tensor
    target_rank: torch.Tensor
    top_tokens: list[list[str]]
    top_prob: torch.Tensor
    title: ClassVar[str] = "Logit lens"

    def first_layer(self, position: int = -1, rank: int = 0) -> str | None:
        """The first row where the target reaches ``rank`` (0 = top-1) at ``position``."""
        hits = (self.target_rank[:, position] <= rank).nonzero()
        return self.rows[int(hits[0])] if len(hits) else None

    def summary(self) -> str:
        first = self.first_layer()
        p = self.target_prob[:, -1]
        best = int(p.argmax())
        return (f"Logit lens on {''.join(self.tokens)!r} -> {self.target!r}: at the last position the target is top-1 "
                f"from {first or 'no layer'}; its probability peaks at {float(p[best]):.2f} in {self.rows[best]} "
                f"and ends at {float(p[-1]):.2f}.")

    def evidence(self) -> dict:
        return {"first_top1": self.first_layer(), "final_prob": float(self.target_prob[-1, -1])}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.1 * len(self.tokens) + 2.5, 0.22 * len(self.rows) + 1.5))
        im = ax.imshow(self.target_prob.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(self.tokens)), [repr(t) for t in self.tokens], rotation=45, ha="right", fontsize=8)
        step = max(1, len(self.rows) // 16)
        ax.set_yticks(range(0, len(self.rows), step), self.rows[::step], fontsize=7)
        fig.colorbar(im, ax=ax, label=f"p({self.target!r})")
        ax.set_title(f"logit lens: probability of {self.target!r}", fontsize=9)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        """A grid: one row per layer, one column per position, the top token in each cell,
        shaded by the target's probability (hover a cell for numbers)."""
        grid = [{"name": row, "cells": [{"p": float(self.target_prob[r, i]), "rank": int(self.target_rank[r, i]),
                                         "top": self.top_tokens[r][i], "top_p": float(self.top_prob[r, i])}
                                        for i in range(len(self.tokens))]}
                for r, row in enumerate(self.rows)]
        return self._render("results/lens.html", grid=grid)


@torch.no_grad()
def logit_lens(model: Model, prompt: str, target: str | int | None = None) -> LogitLens:
    """Decode ``embed`` and every ``resid_post`` of ``prompt`` (one prompt) into token probabilities.

    ``target`` defaults to the model's own top prediction at the last position.
    """
    sites = ["embed", "blocks.*.resid_post"]
    run = model.run(prompt, cache=sites)
    if target is None:
        target = int(run.logits[0, -1].argmax())
    tid = model.token_id(target)
    norm = model.final_norm
    unembed = model.unembed
    sites = ["embed"] + [block_site(l, "resid_post") for l in range(model.cfg.n_layers)]
    probs, ranks, tops, top_p = [], [], [], []
    for name in sites:
        logits = model.capped(unembed(norm(run.cache[name][0])) * model.multiplier("logit")).float()  # as returned
        p = logits.softmax(-1)
        probs.append(p[:, tid])
        ranks.append((logits > logits[:, tid:tid + 1]).sum(-1))
        best = p.max(-1)
        top_p.append(best.values)
        tops.append([model.tokenizer.decode([int(i)]) for i in best.indices])
    return LogitLens(
        provenance=Provenance.of(model, prompts=[prompt], target=tid),
        tokens=run.str_tokens[0], target=model.tokenizer.decode([tid]),
        rows=["embed"] + [f"L{l}" for l in range(model.cfg.n_layers)],
        target_prob=torch.stack(probs).cpu(), target_rank=torch.stack(ranks).cpu(), top_tokens=tops,
        top_prob=torch.stack(top_p).cpu(),
    )


# ----------------------------------------------------------------------------------------------
# Direct logit attribution


def frozen_norm(norm: nn.Module, x_final: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The final norm as a linear map with ``x_final``'s scale held fixed: (apply, bias).

    x_final: [..., d]. apply(c) maps a component [..., d] to its normalised contribution; bias is
    the norm's additive term (zero for RMSNorm). Supports LayerNorms (incl. Cohere's) and RMSNorms
    (incl. Gemma's ``1 + weight``).
    """
    from ..models.norms import centres, is_identity, norm_eps, norm_gain

    x = x_final.float()
    if is_identity(norm):  # no final norm (compiled programs)
        return (lambda c: c.float()), torch.zeros(x.shape[-1])
    with loaded(norm):
        gain = norm_gain(norm).to(x.device) if getattr(norm, "weight", None) is not None else 1.0
        bias = getattr(norm, "bias", None)
        bias = bias.detach().float().clone() if bias is not None else torch.zeros(x.shape[-1])
    if centres(norm):  # LayerNorm (Cohere's has no bias)
        scale = (x.var(-1, keepdim=True, unbiased=False) + norm_eps(norm)).rsqrt()
        return (lambda c: (c.float() - c.float().mean(-1, keepdim=True)) * scale * gain), bias
    scale = (x.pow(2).mean(-1, keepdim=True) + norm_eps(norm)).rsqrt()
    return (lambda c: c.float() * scale * gain), bias


@dataclass
class LogitAttribution(Result):
    """Direct contributions of components to a logit (or a logit difference) at one position.

    components: names ("embed", "L3H2", "L3 attn bias", "MLP3", or "L5 N123" for neurons);
    values: [n_components]; ``total`` = their sum plus ``rest`` (norm and unembedding biases,
    or the contributions not listed), which equals ``actual`` up to fp error.
    """

    tokens: list[str]
    position: int
    target: str
    foil: str | None
    components: list[str]
    values: torch.Tensor
    rest: float
    actual: float
    heads_grid: torch.Tensor | None = None  # [layers, heads] of head contributions, for the figure
    softcap: float | None = None  # the model soft-caps its logits at ±softcap; the values are pre-cap
    title: ClassVar[str] = "Direct logit attribution"

    @property
    def total(self) -> float:
        return float(self.values.sum()) + self.rest

    def top(self, k: int = 5, sign: int = 1) -> list[tuple[str, float]]:
        order = (self.values * sign).argsort(descending=True)[:k].tolist()
        return [(self.components[i], float(self.values[i])) for i in order]

    def summary(self) -> str:
        what = f"logit({self.target!r})" + (f" − logit({self.foil!r})" if self.foil else "")
        pos = ", ".join(f"{n} {v:+.2f}" for n, v in self.top(5))
        neg = ", ".join(f"{n} {v:+.2f}" for n, v in self.top(3, sign=-1))
        return (f"DLA of {what} at position {self.position} ({self.tokens[self.position]!r}): "
                f"components sum to {self.total:.3f}, actual {self.actual:.3f} (final norm scale frozen"
                + (f"; logits before the model's soft-cap at ±{self.softcap:g}" if self.softcap else "") + ").\n"
                f"Most positive: {pos}\nMost negative: {neg}")

    def evidence(self) -> dict:
        return {"actual": self.actual, "sum": self.total, "top": self.top(5)}

    def figure(self):
        import matplotlib.pyplot as plt

        if self.heads_grid is not None:
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.18 * self.heads_grid.shape[0] + 2),
                                         gridspec_kw={"width_ratios": [1, 1.3]})
            lim = float(self.heads_grid.abs().max()) or 1.0
            im = a1.imshow(self.heads_grid.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            a1.set_xlabel("head")
            a1.set_ylabel("layer")
            a1.set_title("heads", fontsize=9)
            fig.colorbar(im, ax=a1)
            ax = a2
        else:
            fig, ax = plt.subplots(figsize=(6, 3))
        top = self.top(8) + self.top(4, sign=-1)[::-1]
        ax.barh(range(len(top))[::-1], [v for _, v in top], color=["#2b6cb0" if v >= 0 else "#c53030" for _, v in top])
        ax.set_yticks(range(len(top))[::-1], [n for n, _ in top], fontsize=8)
        ax.set_title("largest contributions", fontsize=9)
        fig.tight_layout()
        return fig


def _logit_direction(model: Model, target: str | int, foil: str | int | None) -> tuple[torch.Tensor, int, int | None]:
    t = model.token_id(target)
    f = model.token_id(foil) if foil is not None else None
    with loaded(model.unembed):
        w_u = model.unembed.weight
        direction = w_u[t].float() - (w_u[f].float() if f is not None else 0.0)
    return direction * model.multiplier("logit"), t, f  # Granite / Cohere scale the logits


@torch.no_grad()
def direct_logit_attribution(model: Model, prompt: str, target: str | int, foil: str | int | None = None,
                             position: int = -1) -> LogitAttribution:
    """Contribution of the embedding, every head, attention biases and every MLP to
    ``logit(target) [- logit(foil)]`` at ``position`` of ``prompt`` (one prompt). In a mixture of
    experts each expert is a component (``MLP3E2``) and ``MLP3 rest`` holds the rest of the block (a
    shared expert, or nothing but float rounding)."""
    c = model.cfg
    sites = ["embed", "blocks.*.attn.z", "blocks.*.mlp.out", block_site(c.n_layers - 1, "resid_post"), "logits"]
    experts = model.n_experts  # mixtures of experts: one component per expert, and the rest of the block
    run = model.run(prompt, cache=sites + (["blocks.*.mlp.experts.*.out"] if experts else []))
    n_tok = run.tokens.shape[1]
    if not -n_tok <= position < n_tok:
        raise ValueError(f"position {position} out of range for {n_tok} tokens")
    pos = position % n_tok
    direction, t, f = _logit_direction(model, target, foil)
    apply, norm_bias = frozen_norm(model.final_norm,
                                   run.cache[block_site(c.n_layers - 1, "resid_post")][0, pos])
    dev = direction.device

    def logit_of(component: torch.Tensor) -> torch.Tensor:  # [..., d] -> [...]
        return apply(component.to(dev)) @ direction

    labels, values = ["embed"], [logit_of(run.cache["embed"][0, pos])]
    grid = torch.zeros(c.n_layers, c.n_heads)
    for layer in range(c.n_layers):
        heads = model.head_outputs(run.cache[block_site(layer, "attn.z")][:, pos:pos + 1], layer)[0, 0]  # [head, d]
        contrib = logit_of(heads)
        grid[layer] = contrib.cpu()
        labels += [names.head(layer, h).label for h in range(c.n_heads)]
        values += list(contrib)
        _, bias = model.out_proj(layer)
        if bias is not None:
            labels.append(f"L{layer} attn bias")
            values.append(logit_of(bias.float()))
        block_out = run.cache[block_site(layer, "mlp.out")][0, pos]
        for e in range(experts):
            share = run.cache[expert_site(layer, e)][0, pos]
            labels.append(names.expert(layer, e).label)
            values.append(logit_of(share))
            block_out = block_out - share
        labels.append(names.mlp(layer).label + (" rest" if experts else ""))  # a shared expert, float rounding
        values.append(logit_of(block_out))
    with loaded(model.unembed):
        unembed_bias = None if model.unembed.bias is None else model.unembed.bias.detach().clone()
    rest = float(norm_bias.to(dev) @ direction)
    if unembed_bias is not None:
        rest += float(unembed_bias[t] - (unembed_bias[f] if f is not None else 0.0)) * model.multiplier("logit")
    logits = run.cache["logits"][0, pos].float()
    actual = float(logits[t] - (logits[f] if f is not None else 0.0))
    return LogitAttribution(
        provenance=Provenance.of(model, prompts=[prompt], target=t, foil=f, position=position),
        tokens=run.str_tokens[0], position=pos, target=model.tokenizer.decode([t]),
        foil=model.tokenizer.decode([f]) if f is not None else None, components=labels,
        values=torch.stack([v.float().cpu() for v in values]), rest=rest, actual=actual, heads_grid=grid,
        softcap=model.logit_softcap,
    )


@torch.no_grad()
def neuron_attribution(model: Model, prompt: str, layer: int, target: str | int, foil: str | int | None = None,
                       position: int = -1) -> LogitAttribution:
    """Per-neuron DLA of one MLP layer: neuron n contributes post[n] · W_down[:, n] through the
    frozen final norm (and, for Gemma 2/3, the MLP's post-norm with its scale frozen). ``rest`` is
    the layer's down-projection bias plus everything else."""
    c = model.cfg
    a = model.adapter
    if a.mlp_down is None:
        raise ValueError(f"{c.family} is a mixture of experts: its MLP has no single down projection (no neurons "
                         "to attribute); DLA gives the whole MoE block (MLP<layer>)")
    raw = f"{a.blocks}.{layer}.{a.mlp}.output"  # the MLP's own output (before a post-norm, where there is one)
    run = model.run(prompt, cache=[block_site(layer, "mlp.post"), block_site(c.n_layers - 1, "resid_post"), "logits",
                                   *([raw] if a.mlp_out else [])])
    n_tok = run.tokens.shape[1]
    pos = position % n_tok
    direction, t, f = _logit_direction(model, target, foil)
    apply, _ = frozen_norm(model.final_norm,
                           run.cache[block_site(c.n_layers - 1, "resid_post")][0, pos])
    w_out = mlp_out_weights(model, layer)
    if a.mlp_out:  # Gemma 2/3: the MLP's output passes a post-norm; its scale is frozen, as the final norm's
        from ..models.norms import frozen_rms_scale

        w_out = w_out * frozen_rms_scale(model.hf.get_submodule(f"{a.blocks}.{layer}.{a.mlp_out}"), run.cache[raw][0, pos])
    per_unit = apply(w_out * model.multiplier("residual")) @ direction  # one unit of each neuron: [d_mlp]
    values = run.cache[block_site(layer, "mlp.post")][0, pos].float() * per_unit
    logits = run.cache["logits"][0, pos].float()
    actual = float(logits[t] - (logits[f] if f is not None else 0.0))
    return LogitAttribution(
        provenance=Provenance.of(model, prompts=[prompt], target=t, foil=f, position=position, layer=layer),
        tokens=run.str_tokens[0], position=pos, target=model.tokenizer.decode([t]),
        foil=model.tokenizer.decode([f]) if f is not None else None,
        components=[names.neuron(layer, n).label for n in range(values.shape[0])], values=values.cpu(),
        rest=actual - float(values.sum()), actual=actual,
    )
