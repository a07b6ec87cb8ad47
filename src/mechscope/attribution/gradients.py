"""Gradient attribution on language models: saliency, gradient × input, integrated gradients to
input tokens, layer attribution at any site, and Grad-CAM over positions.

Token attributions work at the ``embed`` site. The IG baseline is given as *token embeddings*
(``"pad"``, ``"zero"``, ``"mean"`` or a tensor [pos, d]); for models that add position
embeddings (GPT-2) these stay in place, so only the token part moves along the path. ``hold``
keeps positions at their input value (e.g. ``hold=[0]``: the first token, an attention sink).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal, Sequence

import torch

from ..models.interventions import Patch
from ..models.model import Model
from ..results import Provenance, Result
from ..models.run import Run
from .integrate import IGOutput, integrated_gradients
from .result import Attribution

Output = Literal["logit", "logprob", "prob"]


def objective(model: Model, target: str | int, foil: str | int | None = None, output: Output = "logit",
              position: int = -1) -> tuple[Callable[[Run], torch.Tensor], str]:
    """(F: run -> [batch], description): the target's logit / log-prob / prob (minus the foil's)."""
    t = model.token_id(target)
    f = model.token_id(foil) if foil is not None else None
    if output not in ("logit", "logprob", "prob"):
        raise ValueError(f"output={output!r}; valid: 'logit', 'logprob', 'prob'")

    def F(run: Run) -> torch.Tensor:
        logits = run.logits[:, position].float()
        vals = logits if output == "logit" else logits.log_softmax(-1) if output == "logprob" else logits.softmax(-1)
        return vals[:, t] - (vals[:, f] if f is not None else 0.0)

    name = f"{output}({model.tokenizer.decode([t])!r})" + (f" − {output}({model.tokenizer.decode([f])!r})" if f is not None else "")
    return F, name


def run_with_grads(model: Model, ids: torch.Tensor, F: Callable[[Run], torch.Tensor], grads: list[str],
                   **run_kwargs) -> tuple[Run, torch.Tensor]:
    """(run with gradients of ΣF at ``grads``, F per row [batch] detached)."""
    kept = {}

    def metric(run: Run) -> torch.Tensor:
        kept["v"] = F(run)
        return kept["v"].sum()

    run = model.run(ids, grads=grads, metric=metric, **run_kwargs)
    return run, kept["v"].detach()


def site_value_and_grad(model: Model, ids: torch.Tensor, site: str, F: Callable[[Run], torch.Tensor]):
    """points [k, *site_shape] -> (F [k], dF/dsite [k, *site_shape]): the site replaced by each point."""
    def vg(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        run, values = run_with_grads(model, ids.expand(points.shape[0], -1), F, [site],
                                     interventions=[Patch(site, source=points)])
        return values, run.grads[site]

    return vg


def _single(model: Model, prompt: str | torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    ids, mask = model.tokenize(prompt)
    if ids.shape[0] != 1:
        raise ValueError("token attribution takes one prompt at a time")
    tokens = [model.tokenizer.decode([int(i)]) for i in ids[0]]
    return ids, tokens


def embedding_parts(model: Model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embed-site activation [pos, d], token-embedding part of it [pos, d]) for one prompt."""
    run = model.run(ids, cache="embed")
    with torch.no_grad():
        tok = model.embed(ids.to(model.device))[0]
    return run.cache["embed"][0], tok


def token_baseline(model: Model, ids: torch.Tensor, kind: str | torch.Tensor) -> torch.Tensor:
    """Baseline token embeddings [pos, d]: "pad" (the pad token everywhere), "zero", "mean" (mean
    embedding of the vocabulary), or a user tensor [pos, d] / [d]."""
    emb = model.embed
    n = ids.shape[1]
    with torch.no_grad():
        if isinstance(kind, torch.Tensor):
            b = kind.to(model.device, emb.weight.dtype)
            return b.expand(n, -1) if b.dim() == 1 else b
        if kind == "pad":
            return emb(torch.full((1, n), model.pad_id, device=model.device))[0]
        if kind == "zero":
            return torch.zeros(n, model.cfg.d_model, device=model.device, dtype=emb.weight.dtype)
        if kind == "mean":
            return emb(torch.arange(model.cfg.vocab, device=model.device)).mean(0).expand(n, -1)
    raise ValueError(f"baseline={kind!r}; valid: 'pad', 'zero', 'mean' or a tensor of token embeddings")


def token_ig(model: Model, prompt: str | torch.Tensor, target: str | int, *, foil: str | int | None = None,
             output: Output = "logit", baseline: str | torch.Tensor = "pad", hold: Sequence[int] = (),
             steps: int = 64, method: str = "gausslegendre", batch_size: int = 16, adaptive: bool = False,
             tol: float = 0.01, max_steps: int = 1024) -> Attribution:
    """Integrated gradients of F (target logit by default) to each input token (summed over d).

    The result always carries the completeness gap, the path's roughness, and a warning when the
    gap exceeds ``tol`` · |F(x) − F(baseline)| — an unconverged attribution is never returned as if
    it were an answer.
    """
    ids, tokens = _single(model, prompt)
    F, name = objective(model, target, foil, output)
    a, tok = embedding_parts(model, ids)
    base = a - tok + token_baseline(model, ids, baseline)  # only the token part moves
    held = [p % len(tokens) for p in hold]
    if held:
        base[held] = a[held]
    ig = integrated_gradients(None, a, base, steps=steps, method=method, batch_size=batch_size, adaptive=adaptive,
                              tol=tol, max_steps=max_steps, vg=site_value_and_grad(model, ids, "embed", F))
    return _ig_result(model, prompt, tokens, ig.attributions.sum(-1), ig, name, tol,
                      dict(baseline=baseline if isinstance(baseline, str) else "user", hold=held, output=output))


def _ig_result(model: Model, prompt, labels: list[str], scores: torch.Tensor, ig: IGOutput, name: str, tol: float,
               params: dict) -> Attribution:
    warnings = []
    if not ig.converged:
        warnings.append(f"not converged: completeness gap {100 * ig.rel_gap:.3g}% of |F(x) − F(baseline)| "
                        f"(tolerance {100 * tol:.3g}%) after {ig.steps} steps ({ig.stop}); the path is rough "
                        f"(largest jump {100 * ig.max_jump:.3g}% of the difference, total variation {ig.variation:.3g}×). "
                        "Try adaptive=True, more steps, or hold the first token (hold=[0]).")
    details = {**params, "steps": ig.steps, "rule": ig.method, "stop": ig.stop, "max_jump": ig.max_jump,
               "variation": ig.variation, "tol": tol}
    return Attribution(
        provenance=Provenance.of(model, prompts=[prompt if isinstance(prompt, str) else prompt.tolist()],
                                 method="integrated_gradients", **{k: v for k, v in details.items()
                                                                   if isinstance(v, (int, float, str, list))}),
        labels=labels, scores=scores.detach().float().cpu(), method="integrated gradients", target=name,
        f_input=ig.f_input, f_baseline=ig.f_baseline, gap=ig.gap, converged=ig.converged, details=details,
        warnings=warnings,
    )


def _grad_at_embed(model: Model, ids: torch.Tensor, F) -> tuple[torch.Tensor, torch.Tensor, float]:
    run, values = run_with_grads(model, ids, F, ["embed"])
    return run.grads["embed"][0], values, float(values[0])


def saliency(model: Model, prompt: str | torch.Tensor, target: str | int, *, foil: str | int | None = None,
             output: Output = "logit") -> Attribution:
    """|dF/d embedding| per token (L2 norm over the embedding dimension)."""
    ids, tokens = _single(model, prompt)
    F, name = objective(model, target, foil, output)
    grad, _, value = _grad_at_embed(model, ids, F)
    return Attribution(provenance=Provenance.of(model, prompts=[str(prompt)], method="saliency", output=output),
                       labels=tokens, scores=grad.float().norm(dim=-1).cpu(), method="saliency", target=name,
                       f_input=value)


def grad_x_input(model: Model, prompt: str | torch.Tensor, target: str | int, *, foil: str | int | None = None,
                 output: Output = "logit") -> Attribution:
    """Token embedding · dF/d embedding per token (the first-order Taylor term from a zero token)."""
    ids, tokens = _single(model, prompt)
    F, name = objective(model, target, foil, output)
    grad, _, value = _grad_at_embed(model, ids, F)
    _, tok = embedding_parts(model, ids)
    return Attribution(provenance=Provenance.of(model, prompts=[str(prompt)], method="grad_x_input", output=output),
                       labels=tokens, scores=(grad.float() * tok.float()).sum(-1).cpu(), method="gradient × input",
                       target=name, f_input=value)


# ----------------------------------------------------------------------------------------------
# Layer attribution


@dataclass
class SiteAttribution(Result):
    """Attribution to the units of one site: scores [pos, units] (units: heads, neurons, or one
    'resid' column for residual sites, where the d_model dimension is summed)."""

    site: str
    tokens: list[str]
    units: list[str]
    scores: torch.Tensor
    method: str
    target: str
    gap: float | None = None
    converged: bool | None = None
    warnings: list[str] = field(default_factory=list)
    title: ClassVar[str] = "Layer attribution"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        flat = self.scores.flatten()
        order = flat.abs().argsort(descending=True)[:k].tolist()
        n = self.scores.shape[1]
        return [(f"{self.tokens[i // n]!r} {self.units[i % n]}", float(flat[i])) for i in order]

    def summary(self) -> str:
        text = (f"{self.method} at {self.site} for {self.target}: "
                + ", ".join(f"{name} {v:+.3g}" for name, v in self.top(5)))
        if self.gap is not None:
            text += f"\ncompleteness gap {self.gap:+.3g} ({'converged' if self.converged else 'NOT converged'})"
        return text + "".join(f"\nWARNING: {w}" for w in self.warnings)

    def evidence(self) -> dict:
        return {"site": self.site, "top": self.top(5), "gap": self.gap, "converged": self.converged}

    def figure(self):
        import matplotlib.pyplot as plt

        s = self.scores.float()
        lim = float(s.abs().max()) or 1.0
        fig, ax = plt.subplots(figsize=(min(14, 0.3 * s.shape[1] + 3), 0.35 * s.shape[0] + 1.5))
        im = ax.imshow(s.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(self.tokens)), [repr(t) for t in self.tokens], fontsize=8)
        if s.shape[1] <= 40:
            ax.set_xticks(range(len(self.units)), self.units, fontsize=7, rotation=90)
        fig.colorbar(im, ax=ax)
        ax.set_title(f"{self.method} at {self.site}", fontsize=9)
        fig.tight_layout()
        return fig


def _units(model: Model, site: str, shape: torch.Size) -> tuple[list[str], Callable[[torch.Tensor], torch.Tensor]]:
    """Unit names of a site and how to reduce [pos, ...] scores to [pos, units]."""
    kind = site.split(".", 2)[2] if site.startswith("blocks.") else site
    if kind in ("attn.q", "attn.k", "attn.v", "attn.z"):
        return [f"H{h}" for h in range(shape[1])], lambda s: s.sum(-1)
    if kind in ("mlp.pre", "mlp.post"):
        return [f"N{n}" for n in range(shape[1])], lambda s: s
    if kind in ("attn.scores", "attn.pattern"):
        raise ValueError(f"layer attribution at {site} is not supported; use attn.z for heads")
    return ["resid"], lambda s: s.sum(-1, keepdim=True)


def layer_attribution(model: Model, prompt: str, site: str, target: str | int, *, foil: str | int | None = None,
                      output: Output = "logit", method: Literal["ig", "grad_x_act"] = "ig",
                      baseline: str | None = None, steps: int = 32, batch_size: int = 16, adaptive: bool = False,
                      tol: float = 0.01) -> SiteAttribution:
    """Which heads / neurons / positions of ``site`` matter for F.

    ``method="grad_x_act"``: activation · gradient. ``method="ig"``: integrated gradients of the
    site's activation from a baseline activation — zeros, or the same site on ``baseline`` (a
    prompt of the same length, e.g. a corrupted prompt).
    """
    ids, tokens = _single(model, prompt)
    F, name = objective(model, target, foil, output)
    run = model.run(ids, cache=site)
    act = run.cache[site][0]
    units, reduce = _units(model, site, act.shape)
    if method == "grad_x_act":
        g = run_with_grads(model, ids, F, [site])[0].grads[site][0]
        scores = reduce(act.float() * g.float())
        return SiteAttribution(provenance=Provenance.of(model, prompts=[prompt], site=site, method=method),
                               site=site, tokens=tokens, units=units, scores=scores.cpu(), method="activation × gradient",
                               target=name, warnings=[])
    if method != "ig":
        raise ValueError(f"method={method!r}; valid: 'ig', 'grad_x_act'")
    if baseline is None:
        base = torch.zeros_like(act)
    else:
        base = model.run(baseline, cache=site).cache[site][0]
        if base.shape != act.shape:
            raise ValueError(f"baseline prompt gives {site} of shape {tuple(base.shape)}, the prompt {tuple(act.shape)}; "
                             "use a baseline prompt of the same length")
    ig = integrated_gradients(None, act, base, steps=steps, batch_size=batch_size, adaptive=adaptive, tol=tol,
                              vg=site_value_and_grad(model, ids, site, F))
    warnings = [] if ig.converged else [f"not converged: gap {100 * ig.rel_gap:.3g}% after {ig.steps} steps ({ig.stop})"]
    return SiteAttribution(provenance=Provenance.of(model, prompts=[prompt, baseline], site=site, method=method, steps=ig.steps),
                           site=site, tokens=tokens, units=units, scores=reduce(ig.attributions.float()).cpu(),
                           method="integrated gradients", target=name, gap=ig.gap, converged=ig.converged,
                           warnings=warnings)


def layer_conductance(model: Model, prompt: str, site: str, target: str | int, *, foil: str | int | None = None,
                      output: Output = "logit", baseline: str | torch.Tensor = "pad", hold: Sequence[int] = (),
                      steps: int = 64, batch_size: int = 16, tol: float = 0.01) -> SiteAttribution:
    """Conductance of each unit of ``site``: how much of F's change along the *input* IG path
    (token embeddings, as in ``token_ig``) flows through the unit, ∫ ∂F/∂y · dy/dα dα, computed
    by the trapezoid rule on ``steps`` + 1 points. Summed over every unit of a site that all
    information passes through (e.g. a resid_pre) it equals F(x) − F(baseline) (completeness)."""
    ids, tokens = _single(model, prompt)
    F, name = objective(model, target, foil, output)
    a, tok = embedding_parts(model, ids)
    base = a - tok + token_baseline(model, ids, baseline)
    held = [p % len(tokens) for p in hold]
    if held:
        base[held] = a[held]
    alphas = torch.linspace(0, 1, steps + 1, dtype=a.dtype, device=a.device)
    values, acts, grads = [], [], []
    for start in range(0, len(alphas), batch_size):
        al = alphas[start:start + batch_size]
        points = base.unsqueeze(0) + al.view(-1, 1, 1) * (a - base).unsqueeze(0)
        run, v = run_with_grads(model, ids.expand(len(al), -1), F, [site], cache=[site],
                                interventions=[Patch("embed", source=points)])
        values.append(v.double().cpu())
        acts.append(run.cache[site].float())
        grads.append(run.grads[site].float())
    y, g = torch.cat(acts), torch.cat(grads)
    cond = (0.5 * (g[1:] + g[:-1]) * (y[1:] - y[:-1])).sum(0)  # [pos, ...]
    units, reduce = _units(model, site, cond.shape)
    f_path = torch.cat(values)
    delta = float(f_path[-1] - f_path[0])
    gap = float(cond.sum()) - delta
    converged = abs(gap) <= tol * max(abs(delta), 1e-12)
    warnings = [] if converged else [f"conductance does not add up: gap {gap:+.3g} of {delta:.3g} after {steps} steps "
                                     "(more steps; hold=[0]; or the site is not one every path crosses)"]
    return SiteAttribution(provenance=Provenance.of(model, prompts=[prompt], site=site, method="conductance", steps=steps),
                           site=site, tokens=tokens, units=units, scores=reduce(cond).cpu(), method="conductance",
                           target=name, gap=gap, converged=converged, warnings=warnings)


def gradcam(model: Model, prompt: str, site: str, target: str | int, *, foil: str | int | None = None,
            output: Output = "logit") -> Attribution:
    """Grad-CAM over positions: ReLU(Σ_c w_c · a[pos, c]) with w_c the position-mean gradient of
    F with respect to channel c of ``site`` (a residual, MLP or head site; heads are flattened)."""
    ids, tokens = _single(model, prompt)
    F, name = objective(model, target, foil, output)
    run = model.run(ids, cache=site, grads=[site], metric=lambda r: F(r).sum())
    act = run.cache[site][0].float().flatten(1)
    weights = run.grads[site][0].float().flatten(1).mean(0)
    cam = torch.relu(act @ weights)
    return Attribution(provenance=Provenance.of(model, prompts=[prompt], site=site, method="gradcam"),
                       labels=tokens, scores=cam.cpu(), method=f"Grad-CAM at {site}", target=name)
