"""Attention heads: their patterns as a result that draws itself (interactive in HTML)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import names
from ..checks import positive_int
from ..results import Provenance, Result
from ..models.run import Run
from ..models.sites import block_site


PAGE_WEIGHTS = 200_000  # attention weights one page embeds (each query's strongest keys beyond it)


def _short(weight: float) -> float:
    """A weight to 3 significant digits: a long prompt's weights are ~1/n, which 3 decimals flatten into ties."""
    return float(f"{weight:.3g}")


@dataclass
class AttentionPatterns(Result):
    """Every head's attention pattern of one layer on one prompt. pattern: [head, q_pos, k_pos]."""

    prompt: str
    tokens: list[str]
    layer: int
    pattern: torch.Tensor
    title: ClassVar[str] = "Attention patterns"

    @classmethod
    def of(cls, run: Run, layer: int, row: int = 0) -> "AttentionPatterns":
        """From a run that cached ``blocks.{layer}.attn.pattern`` (padding removed)."""
        pat = run.cache[block_site(layer, "attn.pattern")][row]
        real = run.mask[row].bool().to(pat.device)
        pat = pat[:, real][:, :, real].float().cpu()
        tokens = run.str_tokens[row]
        return cls(provenance=Provenance.of(run.model, prompts=["".join(tokens)], layer=layer),
                   prompt="".join(tokens), tokens=tokens, layer=layer, pattern=pat)

    def strongest(self, head: int) -> list[tuple[str, str, float]]:
        """For each query token, (query, most-attended key, weight) of ``head``."""
        best = self.pattern[head].max(-1)
        return [(self.tokens[q], self.tokens[int(k)], float(w)) for q, (w, k) in enumerate(zip(*best))]

    def summary(self) -> str:
        n_heads = self.pattern.shape[0]
        prev = [float(self.pattern[h].diagonal(-1).mean()) if len(self.tokens) > 1 else 0.0 for h in range(n_heads)]
        first = [float(self.pattern[h, 1:, 0].mean()) if len(self.tokens) > 1 else 1.0 for h in range(n_heads)]
        top_prev = max(range(n_heads), key=prev.__getitem__)
        return (f"Layer {self.layer}, {n_heads} heads on {self.prompt!r}: head {top_prev} attends most to the previous "
                f"token (mean {prev[top_prev]:.2f}); mean attention to the first token {sum(first) / n_heads:.2f}.")

    def evidence(self) -> dict:
        return {"layer": self.layer, "n_tokens": len(self.tokens)}

    def figure(self):
        import matplotlib.pyplot as plt

        n = self.pattern.shape[0]
        cols = min(n, 5)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
        for h, ax in enumerate(axes.flat):
            ax.axis("off")
            if h < n:
                ax.imshow(self.pattern[h].numpy(), cmap="Blues", vmin=0, vmax=1)
                ax.set_title(names.head(self.layer, h).label, fontsize=8)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        """Hover a token to see where the selected head attends from it; click a head to switch
        (the page's static script reads the pattern from a JSON block). A page holds at most
        ``PAGE_WEIGHTS`` weights: beyond that, each query's strongest keys (the full pattern stays in the
        result's tensors) — a 1,024-token prompt was a 61 MB page."""
        n_heads, n = self.pattern.shape[0], len(self.tokens)
        pattern = self.pattern.float().nan_to_num(0.0).clamp(0, 1)
        if n_heads * n * n <= PAGE_WEIGHTS:
            data = {"pattern": [[[_short(v) for v in row] for row in head] for head in pattern.tolist()]}
            top = None
        else:
            top = max(4, min(n, PAGE_WEIGHTS // max(1, n_heads * n)))
            weights, keys = pattern.topk(top, dim=-1)
            data = {"top": top, "keys": keys.tolist(),
                    "weights": [[[_short(v) for v in row] for row in head] for head in weights.tolist()]}
        data["tokens"] = self.tokens
        return self._render("results/attention.html", heads=n_heads, data=data, top=top)


# ----------------------------------------------------------------------------------------------
# Head detectors (Olsson et al. 2022) and ablation evidence


def repeated_random_tokens(model, batch: int = 8, length: int = 50, seed: int = 0, low: int = 1000,
                           high: int | None = None) -> torch.Tensor:
    """[batch, 2 * length] token ids: a random sequence followed by itself. Ids come from
    [low, high) (away from special tokens); the tiny models' small vocabularies are respected."""
    vocab = model.cfg.vocab
    high = min(high or vocab, vocab)
    low = min(low, max(3, high // 4))
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(low, high, (batch, length), generator=gen)
    return torch.cat([first, first], dim=1)


def pattern_scores(patterns: dict[int, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Detector scores [layers, heads] from attention patterns [batch, head, 2L, 2L] on repeated
    random tokens of half-length ``length``:

    previous-token: mean attention from i to i − 1 (every i ≥ 1);
    duplicate-token: mean attention from i to i − L (second half: the earlier copy of the same token);
    induction (prefix matching): mean attention from i to i − L + 1 (second half: the token that
    followed the earlier copy).
    """
    layers = sorted(patterns)
    out = {k: torch.zeros(len(layers), next(iter(patterns.values())).shape[1]) for k in ("previous", "duplicate", "induction")}
    for row, layer in enumerate(layers):
        p = patterns[layer].float()  # [batch, head, q, k]
        n = p.shape[-1]
        out["previous"][row] = p.diagonal(-1, -2, -1).mean((0, -1)).cpu()
        out["duplicate"][row] = p.diagonal(-length, -2, -1).mean((0, -1)).cpu()
        out["induction"][row] = p.diagonal(-(length - 1), -2, -1)[..., 1:].mean((0, -1)).cpu() if n > length else 0
    return out


@dataclass
class HeadScores(Result):
    """Per-head detector scores [layers, heads] with ablation evidence for the induction heads.

    evidence_losses: loss on the repeated half — "clean", "top-k zero", "top-k mean", and for k
    random heads of the same layers "random zero" / "random mean" as [seeds] tensors.
    """

    scores: dict[str, list[list[float]]]
    top_heads: list[str]
    k: int
    clean_loss: float
    ablated: dict[str, float]
    random_ablated: dict[str, list[float]]
    icl_score: float | None
    title: ClassVar[str] = "Attention head detectors"

    def top(self, k: int = 5, kind: str = "induction") -> list[tuple[str, float]]:
        """The ``k`` heads with the highest ``kind`` score (``top(k)``, as everywhere)."""
        if isinstance(k, str) or kind not in self.scores:
            raise TypeError(f"top(k={k!r}, kind={kind!r}): k is a number of heads and kind one of "
                            f"{', '.join(self.scores)} — call top(k, kind=...)")
        s = torch.as_tensor(self.scores[kind])
        flat = s.flatten()
        order = flat.argsort(descending=True)[:k].tolist()
        return [(names.head(*divmod(i, s.shape[1])).label, float(flat[i])) for i in order]

    def summary(self) -> str:
        lines = [f"{kind}: " + ", ".join(f"{n} {v:.2f}" for n, v in self.top(4, kind=kind))
                 for kind in ("induction", "previous", "duplicate")]
        for how in ("zero", "mean"):
            rnd = torch.tensor(self.random_ablated[how])
            lines.append(f"{how}-ablating the top {self.k} induction heads: loss on the repeat {self.clean_loss:.2f} -> "
                         f"{self.ablated[how]:.2f}; {self.k} random heads of the same layers: {float(rnd.mean()):.2f} "
                         f"± {float(rnd.std()) if len(rnd) > 1 else 0:.2f} ({len(rnd)} draws)")
        if self.icl_score is not None:
            lines.append(f"in-context learning score (loss late − early in the context): {self.icl_score:+.2f} nats")
        return "\n".join(lines)

    def evidence(self) -> dict:
        return {"top_induction": self.top(self.k, kind="induction"), "clean_loss": self.clean_loss, "ablated": self.ablated,
                "random_mean": {h: float(torch.tensor(v).mean()) for h, v in self.random_ablated.items()},
                "icl_score": self.icl_score}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 0.16 * len(self.scores["induction"]) + 2))
        for ax, kind in zip(axes, ("induction", "previous", "duplicate")):
            im = ax.imshow(torch.as_tensor(self.scores[kind]).numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
            ax.set_title(f"{kind} score", fontsize=9)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
        fig.colorbar(im, ax=list(axes), shrink=0.8)
        return fig


def repeat_loss(model, tokens: torch.Tensor, length: int, interventions=()) -> float:
    """Mean next-token loss over the second copy (predicting tokens L+1 .. 2L−1)."""
    with torch.no_grad():
        logits = model.run(tokens, interventions=list(interventions)).logits.float()
    logp = logits[:, length:-1].log_softmax(-1)
    return float(-logp.gather(-1, tokens[:, length + 1:, None].to(logp.device)).mean())


def icl_score(model, blocks: torch.Tensor, early: int = 50, late: int = 500, window: int = 10) -> float:
    """Olsson et al.'s in-context-learning score: loss at token ``late`` minus loss at ``early``,
    each averaged over ±``window`` positions and the blocks [n, > late + window] of natural text.
    Per-token losses are noisy: use many blocks (measured on SmolLM2, 8 blocks of Shakespeare give
    −0.06 or −0.72 depending on the blocks)."""
    with torch.no_grad():
        logits = model.run(blocks).logits.float()
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, blocks[:, 1:, None].to(logits.device))[..., 0]
    def around(c: int) -> torch.Tensor:
        return loss[:, max(0, c - window):c + window].mean()

    return float(around(late) - around(early))


def detect_heads(model, *, batch: int = 8, length: int = 50, k: int = 5, seeds: int = 5, seed: int = 0,
                 interventions=(), text_blocks: torch.Tensor | None = None, progress: bool = True) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head on repeated random
    tokens, with evidence: the loss on the repeat when the top-``k`` induction heads are zero- or
    mean-ablated, against ``k`` random heads drawn from the same layers (``seeds`` draws).

    ``text_blocks`` ([n, ≥ 510] natural-text token ids) adds the in-context-learning score.
    ``progress``: a bar over the forward passes (minutes on a real model).
    """
    from tqdm.auto import tqdm

    c = model.cfg
    for value, name in ((batch, "batch"), (length, "length"), (k, "k"), (seeds, "seeds")):
        positive_int(value, name)
    bar = tqdm(total=4 + 2 * seeds + (text_blocks is not None), desc="head detectors", disable=not progress,
               leave=False)
    tokens = repeated_random_tokens(model, batch, length, seed)
    run = model.run(tokens, cache="blocks.*.attn.pattern", interventions=list(interventions))
    bar.update()
    scores = pattern_scores({l: run.cache[block_site(l, "attn.pattern")] for l in range(c.n_layers)}, length)
    induction = scores["induction"]
    flat = induction.flatten().argsort(descending=True)[:k].tolist()
    top = [(i // c.n_heads, i % c.n_heads) for i in flat]

    def ablations(heads, how):
        by_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            by_layer.setdefault(layer, []).append(head)
        from ..models.interventions import Ablate

        return [*interventions, *(Ablate(block_site(l, "attn.z"), heads=hs, how=how) for l, hs in by_layer.items())]

    def loss(ivs) -> float:
        value = repeat_loss(model, tokens, length, ivs)
        bar.update()
        return value

    clean = loss(interventions)
    ablated = {how: loss(ablations(top, how)) for how in ("zero", "mean")}
    gen = torch.Generator().manual_seed(seed + 1)
    layers = [l for l, _ in top]
    random_ablated = {"zero": [], "mean": []}
    for _ in range(seeds):
        heads = set()
        while len(heads) < k:  # k distinct random heads, in the layers the top heads come from
            layer = layers[int(torch.randint(len(layers), (1,), generator=gen))]
            heads.add((layer, int(torch.randint(c.n_heads, (1,), generator=gen))))
        for how in ("zero", "mean"):
            random_ablated[how].append(loss(ablations(sorted(heads), how)))
    icl = icl_score(model, text_blocks) if text_blocks is not None else None
    bar.update(text_blocks is not None)
    bar.close()
    return HeadScores(
        provenance=Provenance.of(model, dataset="repeated random tokens", seed=seed, batch=batch, length=length, k=k,
                                 seeds=seeds),
        scores={kind: v.tolist() for kind, v in scores.items()}, top_heads=[names.head(l, h).label for l, h in top], k=k,
        clean_loss=clean, ablated=ablated, random_ablated=random_ablated, icl_score=icl,
    )


# ----------------------------------------------------------------------------------------------
# Weight-based head circuits: copying (OV eigenvalues) and composition (Elhage et al. 2021)


@dataclass
class HeadCircuits(Result):
    """copying: [layers, heads], Σ Re λ / Σ |λ| of each head's full OV circuit W_E·W_V·W_O·W_U
    (1 = copies its input token); composition: kind -> [n, n] scores from sender head (row) to
    receiver head (column), n = layers × heads, zero unless the sender's layer is earlier.
    Linear approximations: norms, biases and rotary embeddings are left out."""

    n_heads: int
    copying: torch.Tensor
    composition: dict[str, list[list[float]]]
    title: ClassVar[str] = "Head circuits: copying and composition"

    def name(self, i: int) -> str:
        return names.head(*divmod(i, self.n_heads)).label

    def top_pairs(self, kind: str, k: int = 5) -> list[tuple[str, str, float]]:
        s = torch.as_tensor(self.composition[kind])
        flat = s.flatten().argsort(descending=True)[:k].tolist()
        n = s.shape[0]
        return [(self.name(i // n), self.name(i % n), float(s.flatten()[i])) for i in flat]

    def summary(self) -> str:
        c = self.copying.flatten()
        top = c.argsort(descending=True)[:5].tolist()
        lines = ["copying: " + ", ".join(f"{self.name(i)} {float(c[i]):.2f}" for i in top)]
        lines += [f"{kind}-composition: " + ", ".join(f"{a}→{b} {v:.3f}" for a, b, v in self.top_pairs(kind, 4))
                  for kind in ("q", "k", "v")]
        return "\n".join(lines)

    def evidence(self) -> dict:
        return {kind: self.top_pairs(kind, 5) for kind in ("q", "k", "v")}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
        im = axes[0].imshow(self.copying.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        axes[0].set_title("copying score", fontsize=9)
        fig.colorbar(im, ax=axes[0])
        for ax, kind in zip(axes[1:], ("q", "k", "v")):
            im = ax.imshow(torch.as_tensor(self.composition[kind]).numpy(), cmap="Blues", aspect="auto")
            ax.set_title(f"{kind}-composition (sender → receiver)", fontsize=9)
            fig.colorbar(im, ax=ax)
        fig.tight_layout()
        return fig


def _r(a: torch.Tensor) -> torch.Tensor:
    """R of a batched thin QR: ||Q R X|| = ||R X|| for any X."""
    return torch.linalg.qr(a, mode="r")[1]


@torch.no_grad()
def head_circuits(model) -> HeadCircuits:
    """Copying scores of every head and Q/K/V-composition scores of every pair of heads.

    Composition of sender A into receiver B (Elhage et al.): ‖W_OV^A · M^B‖_F / (‖W_OV^A‖_F ‖M^B‖_F)
    with M = W_QK (Q), W_QKᵀ (K) or W_OV (V); computed on d_head × d_head cores via QR."""
    from ..models.weights import attention_weights, embedding_weights

    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    w_e, w_u = embedding_weights(model)
    ue = w_u @ w_e  # [d, d]
    qs, ks, vs, os_ = [], [], [], []
    for layer in range(c.n_layers):
        wq, wk, wv, wo = attention_weights(model, layer)
        kv = torch.arange(c.n_heads) // group
        qs.append(wq), ks.append(wk[kv]), vs.append(wv[kv]), os_.append(wo)
    W_Q, W_K, W_V, W_O = (torch.cat(x) for x in (qs, ks, vs, os_))  # [n, d, dh] ×3, [n, dh, d]
    n = W_Q.shape[0]
    core = W_O @ ue @ W_V  # [n, dh, dh]: shares its nonzero eigenvalues with W_E W_V W_O W_U
    eig = torch.linalg.eigvals(core.double())
    copying = (eig.real.sum(-1) / eig.abs().sum(-1)).float().reshape(c.n_layers, c.n_heads)

    r_v, r_q, r_k = _r(W_V), _r(W_Q), _r(W_K)  # [n, dh, dh]
    r_o = _r(W_O.transpose(1, 2)).transpose(1, 2)  # W_O = (Q R)ᵀ = Rᵀ Qᵀ: right factor Rᵀ
    ov_norm = (r_v @ W_O).flatten(1).norm(dim=-1)  # ‖W_V W_O‖
    qk_norm = (W_Q @ r_k.transpose(1, 2)).flatten(1).norm(dim=-1)  # ‖W_Q W_Kᵀ‖
    ovb_norm = ov_norm
    layer_of = torch.arange(n) // c.n_heads
    comp = {kind: torch.zeros(n, n) for kind in ("q", "k", "v")}
    for b in range(n):
        senders = (layer_of < layer_of[b]).nonzero().flatten()
        if len(senders) == 0:
            continue
        left = r_v[senders] @ W_O[senders]  # [s, dh, d]: R_V^A W_O^A
        q_core = left @ W_Q[b] @ r_k[b].T  # ‖W_V W_O W_Q W_Kᵀ‖
        k_core = left @ W_K[b] @ r_q[b].T  # ‖W_V W_O W_K W_Qᵀ‖
        v_core = left @ W_V[b] @ r_o[b]  # ‖W_V W_O W_V W_O‖
        comp["q"][senders, b] = q_core.flatten(1).norm(dim=-1) / (ov_norm[senders] * qk_norm[b])
        comp["k"][senders, b] = k_core.flatten(1).norm(dim=-1) / (ov_norm[senders] * qk_norm[b])
        comp["v"][senders, b] = v_core.flatten(1).norm(dim=-1) / (ov_norm[senders] * ovb_norm[b])
    return HeadCircuits(provenance=Provenance.of(model, method="weights"), n_heads=c.n_heads, copying=copying,
                        composition={k: v.tolist() for k, v in comp.items()})
