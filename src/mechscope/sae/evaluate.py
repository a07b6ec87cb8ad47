"""How good a dictionary is: reconstruction, sparsity, and what splicing it does to the model.

Over rows y [n, d] (targets), reconstructions ŷ and latents f [n, width]:

    L0          = (1/n) Σ_rows #{i : f_i ≠ 0}
    MSE         = (1/(n·d)) Σ_rows Σ_j (y_j − ŷ_j)²           (per element, raw units)
    FVU         = Σ_rows ‖y − ŷ‖² / Σ_rows ‖y − ȳ‖²           (about the mean ȳ; 1 − FVU = explained variance)
    density_i   = (1/n) #{rows : f_i > 0};  dead: density 0;  dense: density > 0.1
    MMCS        = (1/m) Σ_true max_learned cos(g_true, d_learned)   (dictionary recovery)

With the dictionary spliced into the model (``splice``, no error term) at every position but the
first of each block (the attention sink, which stores do not hold), over next-token losses at
those positions:

    CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_orig)      (1: as good as the model)
    KL           = mean over positions of KL(p_orig ‖ p_sae)       (nats; also KL(p_orig ‖ p_zero))

where CE_zero zero-ablates the target site at the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..checks import positive_int
from ..models.interventions import Ablate
from ..models.model import Model
from ..results import Provenance, Result
from .config import SAEError
from .trainer import worse_than_zero
from .dictionary import SparseCoder
from .features import splice
from .store import ActivationStore


def ce_recovered(ce_orig: float, ce_sae: float, ce_zero: float) -> float:
    """(CE_zero − CE_sae) / (CE_zero − CE_orig)."""
    if ce_zero == ce_orig:
        raise SAEError(f"zero-ablating the site does not change the loss (CE {ce_orig}); CE recovered is undefined")
    return (ce_zero - ce_sae) / (ce_zero - ce_orig)


@dataclass
class SAEEvaluation(Result):
    """A dictionary's scores (formulas in ``mechscope.sae.evaluate``); ``density`` [width];
    ``hist`` over ``edges`` (log10 density; dead latents counted apart in ``dead``)."""

    arch: str
    site: str
    width: int
    n_tokens: int
    l0: float
    mse: float
    fvu: float
    ce_orig: float | None
    ce_sae: float | None
    ce_zero: float | None
    ce_recovered: float | None
    kl_sae: float | None
    kl_zero: float | None
    dead: float
    dense: float
    density: torch.Tensor
    edges: torch.Tensor
    hist: torch.Tensor
    title: ClassVar[str] = "SAE evaluation"

    def summary(self) -> str:
        s = (f"{self.arch} × {self.width} at {self.site} over {self.n_tokens:,} tokens: L0 {self.l0:.1f}, "
             f"FVU {self.fvu:.4f}, MSE {self.mse:.4g}, dead {self.dead:.1%}, dense {self.dense:.1%}")
        s += worse_than_zero(self.fvu)
        if self.ce_recovered is not None:
            s += (f"\n  CE: model {self.ce_orig:.4f}, spliced {self.ce_sae:.4f}, zero-ablated {self.ce_zero:.4f} → "
                  f"CE loss recovered {self.ce_recovered:.3f}; KL(orig‖sae) {self.kl_sae:.4f} (zero: {self.kl_zero:.4f})")
        return s

    def evidence(self) -> dict:
        keys = ("l0", "fvu", "ce_recovered", "kl_sae", "dead", "dense")
        return {k: (round(getattr(self, k), 5) if getattr(self, k) is not None else None) for k in keys}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 2.6))
        centres = ((self.edges[1:] + self.edges[:-1]) / 2).numpy()
        ax.bar(centres, self.hist.numpy(), width=float(self.edges[1] - self.edges[0]), color="C0")
        ax.set(xlabel="log10 feature density", ylabel="features",
               title=f"{self.arch} × {self.width}: L0 {self.l0:.1f}, dead {self.dead:.1%}")
        fig.tight_layout()
        return fig


def _density_hist(density: torch.Tensor, bins: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    live = density[density > 0].double().log10()
    lo = float(live.min()) if len(live) else -6.0
    edges = torch.linspace(min(lo, -6.0), 0.0, bins + 1)
    return edges, torch.histc(live.float(), bins, float(edges[0]), 0.0) if len(live) else torch.zeros(bins)


class _Totals:
    """Running sums for L0 / MSE / FVU / density over chunks of rows."""

    def __init__(self, width: int):
        self.n, self.nz, self.sq, self.sy, self.syy, self.fired = 0, 0.0, 0.0, None, 0.0, torch.zeros(width, dtype=torch.float64)

    def add(self, f: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor) -> None:
        f, y, y_hat = f.reshape(-1, f.shape[-1]), y.reshape(-1, y.shape[-1]).double(), y_hat.reshape(-1, y.shape[-1]).double()
        self.n += len(y)
        self.nz += float((f != 0).sum())
        self.sq += float((y - y_hat).pow(2).sum())
        self.sy = y.sum(0) if self.sy is None else self.sy + y.sum(0)
        self.syy += float(y.pow(2).sum())
        self.fired += (f > 0).double().sum(0).cpu()

    def scores(self) -> dict:
        var = self.syy - float(self.sy.pow(2).sum()) / self.n
        density = (self.fired / self.n).float()
        return {"n_tokens": self.n, "l0": self.nz / self.n, "mse": self.sq / (self.n * len(self.sy)),
                "fvu": self.sq / max(var, 1e-30), "density": density, "dead": float((density == 0).float().mean()),
                "dense": float((density > 0.1).float().mean())}


@torch.no_grad()
def reconstruction(sae: SparseCoder, data, target=None, batch_size: int = 8192) -> dict:
    """L0, MSE, FVU, density, dead and dense fractions on stored activations (store or tensor)."""
    positive_int(batch_size, "batch_size", "rows per pass")
    t = _Totals(sae.cfg.width)
    if isinstance(data, ActivationStore):
        xs = data.batches(batch_size, shuffle=False)
        ys = target.batches(batch_size, shuffle=False) if target is not None else None
        pairs = zip(xs, ys) if ys is not None else ((x, x) for x in xs)
    else:
        tgt = target if target is not None else data
        pairs = ((data[i:i + batch_size], tgt[i:i + batch_size]) for i in range(0, len(data), batch_size))
    for x, y in pairs:
        x = x.to(sae.W_enc.device, torch.float32)
        f = sae.encode(x)
        t.add(f, y.to(x.device), sae.decode(f, x))
    return t.scores()


@torch.no_grad()
def evaluate(sae: SparseCoder, model: Model, tokens: torch.Tensor | None = None, *, n_blocks: int = 32,
             context: int = 128, batch_size: int = 8, drop_first: bool = True, progress: bool = True) -> SAEEvaluation:
    """Score ``sae`` spliced into ``model`` over ``tokens`` [blocks, context] (default: held-out
    blocks of the embedded corpus, the ``test`` split): reconstruction and CE recovered / KL.
    ``drop_first``: leave each block's first position (the attention sink) alone and score the
    predictions made after it; False splices and zero-ablates every position and scores every
    prediction (as SAELens's ``get_recons_loss`` does)."""
    c = sae.cfg
    if c.site is None:
        raise SAEError("this dictionary has no site in its config; it cannot be spliced into a model")
    if tokens is None:
        from ..data import token_blocks

        tokens = token_blocks(model.tokenizer, n_blocks, context, split="test")
    first = 1 if drop_first else 0
    positions = list(range(first, tokens.shape[1]))  # every position but (by default) the attention sink at 0
    target = c.target_site or c.site
    totals = _Totals(c.width)
    ce = torch.zeros(3, dtype=torch.float64)
    kl = torch.zeros(2, dtype=torch.float64)
    count = 0
    for b0 in tqdm(range(0, len(tokens), batch_size), desc=f"evaluate {c.arch} SAE", disable=not progress, leave=False):
        chunk = tokens[b0:b0 + batch_size]
        record: dict = {}
        runs = [model.run(chunk), model.run(chunk, interventions=splice(sae, positions=positions, record=record)),
                model.run(chunk, interventions=[Ablate(target, how="zero", positions=positions)])]
        totals.add(record["latents"], record["target"], record["reconstruction"])
        losses = [r.token_loss()[:, first:] for r in runs]  # predictions made at spliced positions
        ce += torch.stack([l.nansum().double() for l in losses]).cpu()
        count += int((~losses[0].isnan()).sum())
        logp = [r.logits[:, first:-1].float().log_softmax(-1) for r in runs]
        real = (runs[0].mask[:, first:-1] * runs[0].mask[:, first + 1:]).bool().to(logp[0].device)
        for j in (0, 1):
            kl_pos = (logp[0].exp() * (logp[0] - logp[j + 1])).sum(-1)
            kl[j] += float(kl_pos[real].sum())
    ce /= max(count, 1)
    kl /= max(count, 1)
    s = totals.scores()
    edges, hist = _density_hist(s["density"])
    ce_o, ce_s, ce_z = (float(v) for v in ce)
    return SAEEvaluation(
        provenance=Provenance.of(model, dataset="shakespeare test blocks", arch=c.arch, width=c.width, k=c.k,
                                 site=c.site, target_site=c.target_site, n_blocks=len(tokens),
                                 context=int(tokens.shape[1]), drop_first=drop_first),
        arch=c.arch, site=target, width=c.width, n_tokens=s["n_tokens"], l0=s["l0"], mse=s["mse"], fvu=s["fvu"],
        ce_orig=ce_o, ce_sae=ce_s, ce_zero=ce_z, ce_recovered=ce_recovered(ce_o, ce_s, ce_z),
        kl_sae=float(kl[0]), kl_zero=float(kl[1]), dead=s["dead"], dense=s["dense"], density=s["density"],
        edges=edges, hist=hist)


@dataclass
class ReplacementFidelity(Result):
    """Transcoders for many layers, scored together on held-out text: per layer (``layers``) FVU and
    L0 of each on the model's own inputs; with all of them spliced in at once (no error terms — the
    replacement model) the next-token CE against the model's and zero-ablated MLPs', CE recovered,
    KL(p_model ‖ p_replacement) and how often the top-1 prediction agrees."""

    layers: list[int]
    fvu: list[float]
    l0: list[float]
    ce_orig: float
    ce_replacement: float
    ce_zero: float
    ce_recovered: float
    kl: float
    top1_agreement: float
    n_tokens: int
    title: ClassVar[str] = "Replacement-model fidelity"

    def evidence(self) -> dict:
        return {"ce_recovered": self.ce_recovered, "kl": self.kl, "top1_agreement": self.top1_agreement,
                "mean_fvu": sum(self.fvu) / len(self.fvu)}

    def summary(self) -> str:
        per = ", ".join(f"L{layer} {f:.3f}" for layer, f in zip(self.layers, self.fvu))
        return (f"{len(self.layers)} transcoders spliced together over {self.n_tokens:,} held-out tokens: CE "
                f"{self.ce_orig:.3f} → {self.ce_replacement:.3f} (zero-ablated MLPs {self.ce_zero:.3f}), CE recovered "
                f"{self.ce_recovered:.3f}, KL {self.kl:.3f} nats, top-1 agreement {self.top1_agreement:.1%}.\n"
                f"FVU per layer: {per}; mean L0 {sum(self.l0) / len(self.l0):.1f}")

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.bar(self.layers, self.fvu)
        ax.set(xlabel="layer", ylabel="FVU", title=f"CE recovered {self.ce_recovered:.3f}, top-1 agreement "
                                                      f"{self.top1_agreement:.1%}")
        fig.tight_layout()
        return fig


def evaluate_transcoders(model: Model, transcoders, tokens: torch.Tensor | None = None, *, n_blocks: int = 32,
                         context: int = 128, batch_size: int = 8, progress: bool = True) -> ReplacementFidelity:
    """Score per-layer transcoders (a list, dict by layer or ``TranscoderSet``) on ``tokens``
    [blocks, context] (default: held-out blocks of the embedded corpus); see ``ReplacementFidelity``.
    The first position of each block (the attention sink) is left alone, as in ``evaluate``."""
    coders = getattr(transcoders, "coders", transcoders)
    coders = dict(coders) if isinstance(coders, dict) else dict(enumerate(coders))
    coders = {layer: c for layer, c in coders.items() if c is not None}
    if not coders:
        raise SAEError("no transcoders to evaluate")
    if tokens is None:
        from ..data import token_blocks

        tokens = token_blocks(model.tokenizer, n_blocks, context, split="test")
    positions = list(range(1, tokens.shape[1]))
    layers = sorted(coders)
    splices = [iv for layer in layers for iv in splice(coders[layer], positions=positions)]
    zero = [Ablate(coders[layer].cfg.target_site, how="zero", positions=positions) for layer in layers]
    sites = [s for layer in layers for s in (coders[layer].cfg.site, coders[layer].cfg.target_site)]
    err = torch.zeros(len(layers), dtype=torch.float64)
    var = torch.zeros(len(layers), dtype=torch.float64)
    sums = torch.zeros(len(layers), coders[layers[0]].cfg.d_out, dtype=torch.float64)
    nnz = torch.zeros(len(layers), dtype=torch.float64)
    ce = torch.zeros(3, dtype=torch.float64)
    kl, agree, count, rows = 0.0, 0, 0, 0
    for b0 in tqdm(range(0, len(tokens), batch_size), desc="evaluate transcoders", disable=not progress, leave=False):
        chunk = tokens[b0:b0 + batch_size]
        with torch.no_grad():
            clean = model.run(chunk, cache=sites)
            for i, layer in enumerate(layers):
                c = coders[layer]
                x = clean.cache[c.cfg.site][:, 1:].reshape(-1, c.cfg.d_in).to(c.W_enc.device).float()
                y = clean.cache[c.cfg.target_site][:, 1:].reshape(-1, c.cfg.d_out).double()
                f = c.encode(x)
                err[i] += (c.decode(f, x).double().cpu() - y.cpu()).pow(2).sum()
                var[i] += y.pow(2).sum().cpu()
                sums[i] += y.sum(0).cpu()
                nnz[i] += float((f != 0).sum())
            rows += int(chunk.shape[0]) * len(positions)
            runs = [clean, model.run(chunk, interventions=splices), model.run(chunk, interventions=zero)]
        losses = [r.token_loss()[:, 1:] for r in runs]
        ce += torch.stack([v.nansum().double() for v in losses]).cpu()
        count += int((~losses[0].isnan()).sum())
        logp = [r.logits[:, 1:-1].float().log_softmax(-1) for r in runs[:2]]
        kl += float((logp[0].exp() * (logp[0] - logp[1])).sum(-1).sum())
        agree += int((runs[0].logits[:, 1:].argmax(-1) == runs[1].logits[:, 1:].argmax(-1)).sum())
    total_var = var - sums.pow(2).sum(1) / max(rows, 1)
    fvus = (err / total_var.clamp(min=1e-30)).tolist()
    ce /= max(count, 1)
    ce_o, ce_r, ce_z = (float(v) for v in ce)
    return ReplacementFidelity(
        provenance=Provenance.of(model, dataset="held-out blocks", n_blocks=len(tokens), context=int(tokens.shape[1]),
                                 layers=layers),
        layers=layers, fvu=fvus, l0=(nnz / max(rows, 1)).tolist(), ce_orig=ce_o, ce_replacement=ce_r, ce_zero=ce_z,
        ce_recovered=ce_recovered(ce_o, ce_r, ce_z), kl=kl / max(count, 1),
        top1_agreement=agree / max(1, int(tokens.shape[0]) * len(positions)), n_tokens=rows)
