"""Sweeps over components, batched: many edited copies of a prompt go through one forward pass.

``ablation_scan`` ablates each attention head (or each layer's attention and MLP output) of a
model, one per batch row, and reports the change in the target token's log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from tqdm.auto import tqdm

from .. import names
from .. import distributed
from ..models.interventions import Ablate, Intervention
from ..models.model import Model
from ..circuits.paths import DIRECTIONS
from ..results import Provenance, Result
from ..models.sites import block_site


@dataclass
class AblationScan(Result):
    """Effect of ablating each component on log P(target | prompt) at the last position.

    effect: [layers, heads] (``components="heads"``) or [2, layers] (rows: attn.out, mlp.out);
    each entry is ablated minus clean log-probability (negative: the component helped).
    """

    prompt: str
    target: str
    components: str
    how: str
    clean_logprob: float
    effect: torch.Tensor
    title: ClassVar[str] = "Ablation scan"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k components whose ablation lowers the target's log-probability most."""
        flat = self.effect.flatten()
        order = flat.argsort()[:k].tolist()
        return [(self.component_name(i), float(flat[i])) for i in order]

    def component_name(self, flat_index: int) -> str:
        rows, cols = self.effect.shape
        r, c = divmod(flat_index, cols)
        if self.components == "heads":
            return names.head(r, c).label
        return names.layer_part("attn" if r == 0 else "mlp", c).label

    def evidence(self) -> dict:
        return {"clean_logprob": self.clean_logprob, "largest_drops": self.top(5)}

    def summary(self) -> str:
        tops = ", ".join(f"{name} {eff:+.2f}" for name, eff in self.top(5))
        return (
            f"{self.how}-ablating each {'head' if self.components == 'heads' else 'attention/MLP layer'} "
            f"on {self.prompt!r} -> {self.target!r} (clean log p = {self.clean_logprob:.2f}).\n"
            f"Largest drops in log p: {tops}"
        )

    def figure(self):
        import matplotlib.pyplot as plt

        eff = self.effect.float()
        lim = float(eff.abs().max()) or 1.0
        if self.components == "heads":
            fig, ax = plt.subplots(figsize=(0.35 * eff.shape[1] + 2.5, 0.22 * eff.shape[0] + 1.5))
            im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
        else:
            fig, ax = plt.subplots(figsize=(0.22 * eff.shape[1] + 2.5, 1.8))
            im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_yticks([0, 1], ["attn", "mlp"])
            ax.set_xlabel("layer")
        fig.colorbar(im, ax=ax, label="Δ log p(target)")
        ax.set_title(f"{self.how}-ablation: {self.prompt!r} → {self.target!r}", fontsize=9)
        fig.tight_layout()
        return fig


def ablation_scan(
    model: Model,
    prompt: str,
    target: str,
    *,
    components: Literal["heads", "layers"] = "heads",
    how: Literal["zero", "mean"] = "zero",
    batch_size: int = 64,
    progress: bool = True,
) -> AblationScan:
    """Ablate every head (or every attn/MLP layer output) of ``model`` and measure Δ log p(target).

    One forward pass per ``batch_size`` components: row i of a batch carries ablation i. With
    ``how="mean"`` the mean is taken over the prompt's own tokens.
    """
    target_ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(target_ids) != 1:
        raise ValueError(f"target {target!r} is {len(target_ids)} tokens; give a single-token target")
    tid = target_ids[0]
    c = model.cfg
    if components == "heads":
        jobs = [(block_site(l, "attn.z"), [h]) for l in range(c.n_layers) for h in range(c.n_heads)]
        shape = (c.n_layers, c.n_heads)
    elif components == "layers":
        jobs = [(block_site(l, k), None) for k in ("attn.out", "mlp.out") for l in range(c.n_layers)]
        shape = (2, c.n_layers)
    else:
        raise ValueError(f"components={components!r}; valid: 'heads', 'layers'")
    reference = model.run(prompt, cache=sorted({site for site, _ in jobs})) if how == "mean" else None
    clean = model.run(prompt).logits[0, -1].float().log_softmax(-1)[tid]
    effects = []
    for start in tqdm(range(0, len(jobs), batch_size), desc="ablation scan", disable=not progress):
        chunk = jobs[start:start + batch_size]
        ivs: list[Intervention] = [
            Ablate(site, how=how, heads=heads, rows=[i], reference=reference) for i, (site, heads) in enumerate(chunk)
        ]
        run = model.run([prompt] * len(chunk), interventions=ivs)
        effects.append(run.logits[:, -1].float().log_softmax(-1)[:, tid] - clean)
    effect = torch.cat(effects).reshape(shape)
    return AblationScan(
        provenance=Provenance.of(model, prompts=[prompt, target], components=components, how=how),
        prompt=prompt, target=target, components=components, how=how,
        clean_logprob=float(clean), effect=effect,
    )


# ----------------------------------------------------------------------------------------------
# Activation patching sweeps over a task (clean/corrupted pairs), batched

SWEEPS: dict[str, tuple[str, bool, bool]] = {  # name -> (site template, per head, per position)
    "resid": ("blocks.{l}.resid_pre", False, True),
    "attn": ("blocks.{l}.attn.out", False, True),
    "mlp": ("blocks.{l}.mlp.out", False, True),
    "heads": ("blocks.{l}.attn.z", True, False),
    "head_pos": ("blocks.{l}.attn.z", True, True),
    "q": ("blocks.{l}.attn.q", True, False),
    "k": ("blocks.{l}.attn.k", True, False),
    "v": ("blocks.{l}.attn.v", True, False),
}


@dataclass(eq=False)
class _MaskedPatch(Intervention):
    """Where ``where`` is true take ``source``; one edit carries every patch of a batched sweep."""

    source: torch.Tensor = None
    where: torch.Tensor = None

    def edit(self, selected: torch.Tensor, e) -> torch.Tensor:
        return torch.where(self.where.to(selected.device), self.source.to(selected.device, selected.dtype), selected)


@dataclass
class PatchingSweep(Result):
    """Activation patching of every component of a sweep on a task.

    effect: normalised metric, (M_patched − M_corrupted) / (M_clean − M_corrupted) with M the
    task metric averaged over pairs: 1 = the clean behaviour, 0 = the corrupted one. Shape
    [layers, pos] (resid/attn/mlp), [layers, heads] (heads, q, k, v) or [layers, heads, pos]
    (head_pos). ``denoising`` patches clean activations into the corrupted run (which components
    suffice to restore the behaviour); ``noising`` patches corrupted ones into the clean run (which
    are necessary).
    """

    task: str
    sweep: str
    direction: str
    metric: str
    clean_metric: float
    corrupted_metric: float
    positions: list[str]
    effect: torch.Tensor
    method: str = "activation"
    title: ClassVar[str] = "Activation patching"

    def name(self, index: tuple[int, ...]) -> str:
        l, *rest = index
        if self.sweep in ("heads", "q", "k", "v"):
            return names.head(l, rest[0], self.sweep if self.sweep in ("q", "k", "v") else None).label
        if self.sweep == "head_pos":
            return f"{names.head(l, rest[0]).label}@{rest[1]}"
        return f"{self.sweep}{l}@{rest[0]}"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k components whose patching moves the metric most (largest |effect − baseline|)."""
        base = 0.0 if self.direction == "denoising" else 1.0
        flat = (self.effect - base).abs().flatten()
        idx = flat.argsort(descending=True)[:k]
        return [(self.name(tuple(int(i) for i in torch.unravel_index(j, self.effect.shape))),
                 float(self.effect.flatten()[j])) for j in idx]

    def summary(self) -> str:
        what = "attribution patching (gradient estimate)" if self.method == "attribution" else "patching"
        return (f"{self.direction} {what} of {self.sweep} on {self.task} ({self.metric}: clean "
                f"{self.clean_metric:.3f}, corrupted {self.corrupted_metric:.3f}); normalised effect (1 = clean): "
                + ", ".join(f"{n} {v:+.2f}" for n, v in self.top(6)))

    def evidence(self) -> dict:
        return {"top": self.top(10), "clean_metric": self.clean_metric, "corrupted_metric": self.corrupted_metric}

    def figure(self):
        import matplotlib.pyplot as plt

        eff = self.effect.float()
        if eff.dim() == 3:  # head_pos: the heads × positions grid of each layer, stacked
            eff = eff.reshape(-1, eff.shape[-1])
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * eff.shape[1] + 2.5), 0.2 * eff.shape[0] + 1.8))
        lim = max(float(eff.abs().max()), 1e-6)
        im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        if self.sweep in SWEEPS and SWEEPS[self.sweep][2]:
            ax.set_xticks(range(len(self.positions)), [repr(t) for t in self.positions], rotation=70, fontsize=6)
        else:
            ax.set_xlabel("head")
        ax.set_ylabel("layer" if self.effect.dim() == 2 else "layer × head")
        ax.set_title(f"{self.direction} {self.method} patching: {self.sweep} on {self.task}", fontsize=9)
        fig.colorbar(im, ax=ax, label="normalised metric (1 = clean)")
        fig.tight_layout()
        return fig


def _jobs(model: Model, sweep: str, n_pos: int) -> tuple[list[tuple[int, int | None, int | None]], tuple[int, ...]]:
    _, per_head, per_pos = SWEEPS[sweep]
    c = model.cfg
    heads = c.n_kv_heads if sweep in ("k", "v") else c.n_heads
    shape = (c.n_layers, *((heads,) if per_head else ()), *((n_pos,) if per_pos else ()))
    jobs = [(l, h, p) for l in range(c.n_layers) for h in (range(heads) if per_head else [None])
            for p in (range(n_pos) if per_pos else [None])]
    return jobs, shape


def _prepare(model: Model, task, sweep: str, direction: str):
    """Checks, then (per_head, per_pos, target prompts, sites, clean metric, corrupted metric,
    source run caching the sites) shared by activation and attribution patching."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; valid: {', '.join(SWEEPS)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}; valid: 'denoising' (clean into corrupted), 'noising' (corrupted into clean)")
    template, per_head, per_pos = SWEEPS[sweep]
    lengths = {len(c) for c in task.clean}
    if per_pos and len(lengths) > 1:
        raise ValueError(f"the {sweep!r} sweep patches position by position, but the task's prompts have "
                         f"{len(lengths)} token lengths {sorted(lengths)}; use task.one_length()")
    target_ids, source_ids = (task.corrupted, task.clean) if direction == "denoising" else (task.clean, task.corrupted)
    sites = [template.format(l=l) for l in range(model.cfg.n_layers)]
    with torch.no_grad():
        clean_m = float(task.run_metric(model, "clean").mean())
        corrupted_m = float(task.run_metric(model, "corrupted").mean())
        source = model.run(source_ids, cache=sites)
    if abs(clean_m - corrupted_m) < 1e-6:
        raise ValueError(f"clean and corrupted metric are equal ({clean_m:.4g}) on {task.name}: nothing to patch")
    return per_head, per_pos, target_ids, sites, clean_m, corrupted_m, source


def activation_patching(model: Model, task, sweep: str = "heads", *, direction: str = "denoising",
                        batch_size: int = 256, progress: bool = True) -> PatchingSweep:
    """Patch each component of ``sweep`` (see ``SWEEPS``) from the source prompts into the
    target run and measure the task metric, normalised to [corrupted, clean].

    Batched: a forward carries up to ``batch_size`` rows — ⌊batch_size / pairs⌋ patched copies of
    the whole task, each copy with its own patch (one masked edit per site) — instead of one
    forward per patched index; the blocks before a forward's first patched layer run once for all
    its copies. Position sweeps need pairs of one token length (``task.one_length()``). Under
    torchrun each rank patches its share of the components and every rank returns the whole sweep
    (``distributed``).
    """
    per_head, per_pos, target_ids, sites, clean_m, corrupted_m, source = _prepare(model, task, sweep, direction)
    n = len(task)
    span = clean_m - corrupted_m
    n_pos = max(len(c) for c in task.clean)
    jobs, shape = _jobs(model, sweep, n_pos)
    per_forward = max(1, batch_size // n)

    def patch(items: range) -> torch.Tensor:  # [len(items)]: the metric with each job's patch
        chunk = jobs[items.start:items.stop]
        rows = len(chunk) * n
        edits = {}
        for j, (l, h, p) in enumerate(chunk):
            site = sites[l]
            if site not in edits:
                src = source.cache[site]
                where = torch.zeros((rows, n_pos, *((src.shape[2],) if src.dim() == 4 else ()), 1), dtype=torch.bool)
                edits[site] = (src.repeat(len(chunk), *([1] * (src.dim() - 1))), where)
            where = edits[site][1]
            block = where[j * n:(j + 1) * n]
            pos = slice(None) if p is None else p
            if h is None:
                block[:, pos] = True
            else:
                block[:, pos, h] = True
        ivs = [_MaskedPatch(site, source=src, where=where) for site, (src, where) in edits.items()]
        with torch.no_grad():  # copy j = rows j·n … (j+1)·n − 1; blocks before the first patched one run once
            run = model.run(target_ids, interventions=ivs, copies=len(chunk), shared_blocks=chunk[0][0])
        return task.score(task.read(run.logits)).view(len(chunk), n).mean(1)

    key = f"activation patching {model.fingerprint} {sweep} {direction} {task!r}"
    values = distributed.sweep(len(jobs), patch, key=key, per=per_forward, desc=f"patching {sweep}", progress=progress)
    effect = (values - corrupted_m) / span
    first = model.tokenizer.convert_ids_to_tokens(task.clean[0]) if per_pos else []
    return PatchingSweep(
        provenance=Provenance.of(model, prompts=task.texts or task.clean, dataset=f"{task.name} v{task.version}",
                                 seed=task.seed, sweep=sweep, direction=direction, pairs=n),
        task=task.name, sweep=sweep, direction=direction, metric=task.metric, clean_metric=clean_m,
        corrupted_metric=corrupted_m, positions=list(first), effect=effect.reshape(shape),
    )


def attribution_patching(model: Model, task, sweep: str = "heads", *, direction: str = "denoising") -> PatchingSweep:
    """The first-order estimate of ``activation_patching`` (Nanda 2023; Syed et al. 2023) from two
    forwards and one backward: ΔM ≈ (a_source − a_target) · ∂M/∂a at the target run, summed over
    what one patch replaces (d_model; d_head; every position for whole-head sweeps) and averaged
    over pairs, then normalised like ``activation_patching``. Exact where M is linear in a."""
    per_head, per_pos, target_ids, sites, clean_m, corrupted_m, source = _prepare(model, task, sweep, direction)
    span = clean_m - corrupted_m
    target = model.run(target_ids, cache=sites, grads=sites, metric=lambda run: task.score(task.read(run.logits)).mean())
    rows = []
    for site in sites:
        delta = (source.cache[site].float() - target.cache[site].float()) * target.grads[site].float()
        per = delta.sum(-1).sum(0)  # over d and pairs: [pos] or [pos, head] (the mean over pairs is taken
        # by the metric itself, which averages pairs)
        if per_head:
            per = per.T  # [head, pos]
            rows.append(per if per_pos else per.sum(-1))
        else:
            rows.append(per)
    base = 0.0 if direction == "denoising" else 1.0
    effect = base + torch.stack(rows) / span
    first = model.tokenizer.convert_ids_to_tokens(task.clean[0]) if per_pos else []
    return PatchingSweep(
        provenance=Provenance.of(model, prompts=task.texts or task.clean, dataset=f"{task.name} v{task.version}",
                                 seed=task.seed, sweep=sweep, direction=direction, pairs=len(task), method="attribution"),
        task=task.name, sweep=sweep, direction=direction, metric=task.metric, clean_metric=clean_m,
        corrupted_metric=corrupted_m, positions=list(first), effect=effect.cpu(), method="attribution",
    )


@dataclass
class PatchingComparison(Result):
    """Attribution patching against activation patching of the same sweep: the two effect tensors
    (flattened, same order), their Pearson correlation and the largest disagreements."""

    task: str
    sweep: str
    direction: str
    names: list[str]
    actual: torch.Tensor
    estimate: torch.Tensor
    correlation: float
    title: ClassVar[str] = "Attribution vs activation patching"

    def summary(self) -> str:
        gap = (self.estimate - self.actual).abs()
        worst = gap.argsort(descending=True)[:3].tolist()
        return (f"attribution patching vs activation patching ({self.direction} {self.sweep} on {self.task}, "
                f"{len(self.names)} components): Pearson r = {self.correlation:.3f}; largest gaps: "
                + ", ".join(f"{self.names[i]} {float(self.estimate[i]):+.2f} vs {float(self.actual[i]):+.2f}" for i in worst))

    def evidence(self) -> dict:
        return {"correlation": self.correlation, "components": len(self.names)}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.4, 4.2))
        ax.scatter(self.actual.numpy(), self.estimate.numpy(), s=8, alpha=0.7)
        lo = float(min(self.actual.min(), self.estimate.min()))
        hi = float(max(self.actual.max(), self.estimate.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="activation patching (normalised)", ylabel="attribution patching (estimate)",
               title=f"{self.sweep} on {self.task}: r = {self.correlation:.3f}")
        fig.tight_layout()
        return fig


def compare_patching(actual: PatchingSweep, estimate: PatchingSweep) -> PatchingComparison:
    """How well ``estimate`` (attribution patching) tracks ``actual`` (activation patching)."""
    if (actual.sweep, actual.direction, actual.task) != (estimate.sweep, estimate.direction, estimate.task) \
            or actual.effect.shape != estimate.effect.shape:
        raise ValueError(f"compare the same sweep: {actual.sweep}/{actual.direction}/{actual.task} "
                         f"{tuple(actual.effect.shape)} vs {estimate.sweep}/{estimate.direction}/{estimate.task} "
                         f"{tuple(estimate.effect.shape)}")
    a, e = actual.effect.flatten().float(), estimate.effect.flatten().float()
    r = float(torch.corrcoef(torch.stack([a, e]))[0, 1]) if a.std() > 0 and e.std() > 0 else float("nan")
    labels = [actual.name(tuple(int(i) for i in torch.unravel_index(torch.tensor(j), actual.effect.shape)))
              for j in range(a.numel())]
    return PatchingComparison(provenance=estimate.provenance, task=actual.task, sweep=actual.sweep,
                              direction=actual.direction, names=labels, actual=a, estimate=e, correlation=r)


