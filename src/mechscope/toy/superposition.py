"""Toy Models of Superposition (Elhage et al. 2022), trained here in seconds.

n sparse features x ∈ [0, 1]^n (each present with probability 1 − S, uniform when present) are
squeezed into m < n hidden dimensions and read back: h = W x, x' = ReLU(Wᵀ h + b), with loss
Σ_i I_i (x_i − x'_i)² and importance I_i = decay^i. Dense features get one dimension each, in
order of importance; sparse ones share dimensions in superposition — antipodal pairs, then
pentagons and other polytopes. Many models (every sparsity × ``instances`` seeds) train in one
batched tensor; the lowest-loss instance of each sparsity is kept, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..checks import positive_int
from ..results import Provenance, Result
from .common import ToyModel


def sparse_features(shape: tuple[int, ...], density: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[*shape, n] feature values: uniform in [0, 1] where present, present with probability
    ``density`` ([..., n], broadcast against the shape)."""
    values = torch.rand(shape, generator=generator)
    return values * (torch.rand(shape, generator=generator) < density)


def _fit(density: torch.Tensor, importance: torch.Tensor, m: int, *, steps: int, batch_size: int, lr: float,
         generator: torch.Generator, progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train one model per leading index of ``density`` [models, n] (importance [models, n]).
    Returns (W [models, m, n], b [models, n], loss [models] on 8·batch_size fresh samples)."""
    models, n = density.shape
    w = torch.randn(models, m, n, generator=generator) * math.sqrt(2.0 / (m + n))
    w.requires_grad_(True)
    b = torch.zeros(models, n, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=0.0)

    def loss_of(x: torch.Tensor) -> torch.Tensor:  # x [batch_size, models, n] -> [models]
        h = torch.einsum("kmn,bkn->bkm", w, x)
        out = torch.relu(torch.einsum("kmn,bkm->bkn", w, h) + b)
        return (importance * (x - out) ** 2).sum(-1).mean(0)

    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = loss_of(sparse_features((batch_size, models, n), density, generator)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = loss_of(sparse_features((8 * batch_size, models, n), density, generator))
    return w.detach(), b.detach(), final


def feature_dimensionality(w: torch.Tensor) -> torch.Tensor:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² for W [..., m, n] (columns W_i are features): 1 for a
    feature with a dimension of its own, 1/2 for an antipodal pair, 2/5 for a pentagon, 0 when
    not represented."""
    norms = w.norm(dim=-2, keepdim=True)
    unit = w / norms.clamp(min=1e-6)
    overlaps = (unit.transpose(-1, -2) @ w) ** 2  # [..., n (i), n (j)]
    return torch.where(norms[..., 0, :] > 1e-3, norms[..., 0, :] ** 2 / overlaps.sum(-1).clamp(min=1e-12), 0.0)


@dataclass
class Superposition(Result):
    """Best-of-instances toy models at each sparsity.

    W: [sparsities, m, n] (column i is feature i's direction); b: [sparsities, n];
    loss: [sparsities]; importance: [n]. A feature is *represented* when ‖W_i‖ > 0.5.
    """

    sparsities: list[float]
    importance: list[float]
    W: torch.Tensor
    b: torch.Tensor
    loss: torch.Tensor
    title: ClassVar[str] = "Toy model of superposition"

    @property
    def model(self):
        """The trained toy models (``ToyModel``, every instance) (kept in this process, not saved: ``Result.held``)."""
        return self.held("model")

    @property
    def norms(self) -> torch.Tensor:
        """‖W_i‖ per feature: [sparsities, n]."""
        return self.W.norm(dim=1)

    @property
    def dimensionality(self) -> torch.Tensor:
        """Feature dimensionality D_i per feature: [sparsities, n]."""
        return feature_dimensionality(self.W)

    def represented(self, k: int) -> list[int]:
        """The features represented at sparsity index ``k``."""
        return [i for i, v in enumerate(self.norms[k].tolist()) if v > 0.5]

    def dims_per_feature(self) -> list[float]:
        """m / ‖W‖_F²: hidden dimensions spent per (fully represented) feature, per sparsity."""
        return (self.W.shape[1] / (self.W ** 2).sum((1, 2))).tolist()

    def angles(self, k: int) -> list[float]:
        """Directions (degrees in [0, 360)) of the represented features at sparsity index ``k``
        (m = 2 only), sorted."""
        if self.W.shape[1] != 2:
            raise ValueError(f"angles need m = 2 hidden dimensions, this model has {self.W.shape[1]}")
        w = self.W[k]
        return sorted(float(torch.atan2(w[1, i], w[0, i]).rad2deg()) % 360 for i in self.represented(k))

    def geometry(self, k: int) -> str:
        """A name for the arrangement at sparsity index ``k``: 'orthogonal', 'antipodal pairs',
        'pentagon', … from the represented features' directions (m = 2) or dimensionalities."""
        rep = self.represented(k)
        if self.W.shape[1] == 2 and len(rep) >= 3:
            a = self.angles(k)
            gaps = [(a[(i + 1) % len(a)] - a[i]) % 360 for i in range(len(a))]
            if len(a) == 5 and max(abs(g - 72) for g in gaps) < 10:
                return "pentagon"
            unit = self.W[k][:, rep] / self.norms[k][rep]
            cos = unit.T @ unit
            pairs = int((cos < -0.95).sum()) // 2
            if pairs * 2 == len(rep):
                return "antipodal pairs"
            return f"{len(rep)} features, {pairs} antipodal pair(s)"
        dims = self.dimensionality[k][rep]
        if len(rep) and bool((dims > 0.9).all()):
            return "orthogonal" if len(rep) > 1 else "one feature"
        return f"{len(rep)} features in superposition"

    def summary(self) -> str:
        n, m = self.W.shape[2], self.W.shape[1]
        lines = [f"n={n} features in m={m} dimensions, importance {self.importance[1] / self.importance[0]:.2f}^i:"]
        for k, s in enumerate(self.sparsities):
            rep = self.represented(k)
            lines.append(f"  S={s:.3g}: {len(rep)} represented ({', '.join(map(str, rep))}): {self.geometry(k)}; "
                         f"{self.dims_per_feature()[k]:.2f} dims/feature, loss {float(self.loss[k]):.4f}")
        return "\n".join(lines)

    def evidence(self) -> dict:
        return {f"S={s:.3g}": {"represented": self.represented(k), "geometry": self.geometry(k),
                               "dims_per_feature": self.dims_per_feature()[k]}
                for k, s in enumerate(self.sparsities)}

    def figure(self):
        import matplotlib.pyplot as plt

        S, m, n = self.W.shape
        colors = plt.cm.viridis(torch.linspace(0.9, 0.1, n).numpy())
        if m == 2:
            fig, axes = plt.subplots(2, S, figsize=(2.4 * S, 4.6), squeeze=False, height_ratios=(2, 1))
            for k in range(S):
                ax = axes[0, k]
                for i in range(n):
                    ax.plot([0, float(self.W[k, 0, i])], [0, float(self.W[k, 1, i])], color=colors[i], lw=2)
                    ax.scatter([float(self.W[k, 0, i])], [float(self.W[k, 1, i])], color=colors[i], s=12)
                ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal", xticks=[], yticks=[],
                       title=f"S={self.sparsities[k]:.3g}\n{self.geometry(k)}")
                axes[1, k].bar(range(n), self.norms[k].numpy(), color=colors)
                axes[1, k].set(ylim=(0, 1.3), xlabel="feature", ylabel="‖W_i‖" if k == 0 else None)
            fig.suptitle(f"columns of W (n={n}, m=2; brighter = more important)", fontsize=10)
        else:
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
            inv = [1 / max(1e-9, 1 - s) for s in self.sparsities]
            axes[0].plot(inv, self.dims_per_feature(), "k-o", ms=3)
            for k, x in enumerate(inv):
                d = self.dimensionality[k]
                axes[0].scatter([x] * n, d.numpy(), s=4, alpha=0.3, color="tab:blue")
            for frac in (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 1 / 3):
                axes[0].axhline(frac, color="grey", lw=0.5, ls=":")
            axes[0].set(xscale="log", xlabel="1 / (1 − S)", ylabel="dimensions per feature", ylim=(0, 1.1),
                        title="dims/feature (line) and feature dimensionality (dots)")
            axes[1].imshow((self.W[-1].T @ self.W[-1]).numpy(), cmap="RdBu", vmin=-1, vmax=1)
            axes[1].set(title=f"WᵀW at S={self.sparsities[-1]:.3g}", xlabel="feature", ylabel="feature")
        fig.tight_layout()
        return fig


def train_superposition(n: int = 5, m: int = 2, sparsities=(0.0, 0.75, 0.9), *, importance_decay: float = 0.9,
                        instances: int = 10, steps: int = 1500, batch_size: int = 1024, lr: float = 5e-3, seed: int = 0,
                        progress: bool = True) -> Superposition:
    """Train ``instances`` models per sparsity in parallel (AdamW, lr ``lr``, batches of fresh
    samples) and keep the lowest-loss one of each. Returns (the kept weights as a ``ToyModel``,
    the ``Superposition`` result)."""
    if not 0 < m < n:
        raise ValueError(f"need 0 < m < n (fewer hidden dimensions than features), got n={n}, m={m}")
    bad = [s for s in sparsities if not 0 <= s < 1]
    if bad:
        raise ValueError(f"sparsity must be in [0, 1), got {bad[0]}")
    for value, name in ((steps, "steps"), (batch_size, "batch_size"), (instances, "instances")):
        positive_int(value, name)
    gen = torch.Generator().manual_seed(seed)
    importance = importance_decay ** torch.arange(n, dtype=torch.float32)
    density = (1 - torch.tensor(sparsities, dtype=torch.float32)).repeat_interleave(instances)[:, None].expand(-1, n)
    w, b, loss = _fit(density.contiguous(), importance.expand(len(density), n), m, steps=steps, batch_size=batch_size, lr=lr,
                      generator=gen, progress=progress, desc=f"superposition n={n} m={m}")
    best = loss.view(len(sparsities), instances).argmin(1) + torch.arange(len(sparsities)) * instances
    params = dict(n=n, m=m, sparsities=list(sparsities), importance_decay=importance_decay, instances=instances,
                  steps=steps, batch_size=batch_size, lr=lr)
    toy = ToyModel(f"superposition-n{n}-m{m}", {"W": w[best], "b": b[best]}, params)
    result = Superposition(provenance=Provenance.of(toy, dataset="synthetic sparse features", seed=seed, **params),
                           sparsities=list(sparsities), importance=importance.tolist(), W=w[best], b=b[best],
                           loss=loss[best])
    return result.hold("model", toy)


PHASES = ("not represented", "dedicated dimension", "superposition")


@dataclass
class SuperpositionPhases(Result):
    """Phase diagram of the extra feature in n=2, m=1 (the paper's Figure "phase change"): feature 0
    has importance 1, feature 1 ``importances[r]`` and both density ``densities[d]``.

    phase [importances, densities]: 0 feature 1 not represented, 1 feature 1 takes the dimension
    alone (feature 0 dropped), 2 both stored, antipodally, in superposition. W: [R, D, 2].
    """

    importances: list[float]
    densities: list[float]
    phase: torch.Tensor
    W: torch.Tensor
    title: ClassVar[str] = "Superposition phase diagram"

    def summary(self) -> str:
        counts = {name: int((self.phase == i).sum()) for i, name in enumerate(PHASES)}
        sparse = self.phase[:, 0]
        dense = self.phase[:, -1]
        return (f"n=2 features in m=1 dimension over {len(self.importances)} relative importances × "
                f"{len(self.densities)} densities: " + ", ".join(f"{c} {n}" for n, c in counts.items()) +
                f"; at density {self.densities[0]:.3g}: {', '.join(PHASES[int(p)] for p in sparse.unique())}; "
                f"at density {self.densities[-1]:.3g}: {', '.join(PHASES[int(p)] for p in dense.unique())}")

    def evidence(self) -> dict:
        return {"counts": {name: int((self.phase == i).sum()) for i, name in enumerate(PHASES)}}

    def figure(self):
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        fig, ax = plt.subplots(figsize=(5.2, 4))
        im = ax.imshow(self.phase.numpy(), origin="lower", aspect="auto",
                       cmap=ListedColormap(["#ddd", "#4c72b0", "#dd8452"]), vmin=-0.5, vmax=2.5)
        ax.set_xticks(range(len(self.densities)), [f"{d:.2g}" for d in self.densities], rotation=60, fontsize=7)
        ax.set_yticks(range(len(self.importances)), [f"{r:.2g}" for r in self.importances], fontsize=7)
        ax.set(xlabel="feature density 1 − S", ylabel="relative importance of feature 1",
               title="n=2, m=1: what happens to the extra feature")
        cbar = fig.colorbar(im, ticks=range(3))
        cbar.ax.set_yticklabels(PHASES, fontsize=7)
        fig.tight_layout()
        return fig


def superposition_phases(importances=None, densities=None, *, instances: int = 4, steps: int = 3000,
                         batch_size: int = 512, lr: float = 1e-2, seed: int = 0,
                         progress: bool = True) -> SuperpositionPhases:
    """Train n=2, m=1 models over a grid of relative importance × density (all cells and
    ``instances`` seeds each in one batch_size) and classify what the best instance does with feature 1."""
    importances = list(importances or torch.logspace(-1, 1, 9).tolist())
    densities = list(densities or torch.logspace(-2, 0, 9).tolist())
    R, D = len(importances), len(densities)
    imp = torch.stack([torch.ones(R), torch.tensor(importances, dtype=torch.float32)], -1)  # [R, 2]
    imp = imp[:, None, None].expand(R, D, instances, 2).reshape(-1, 2)
    den = torch.tensor(densities, dtype=torch.float32)[None, :, None, None].expand(R, D, instances, 2).reshape(-1, 2)
    gen = torch.Generator().manual_seed(seed)
    w, _, loss = _fit(den.contiguous(), imp.contiguous(), 1, steps=steps, batch_size=batch_size, lr=lr, generator=gen,
                      progress=progress, desc="superposition phases")
    best = loss.view(R * D, instances).argmin(1) + torch.arange(R * D) * instances
    w = w[best, 0].view(R, D, 2)
    on = w.abs() > 0.5
    phase = torch.where(on[..., 1] & on[..., 0], 2, torch.where(on[..., 1], 1, 0))
    params = dict(importances=importances, densities=densities, instances=instances, steps=steps, batch_size=batch_size, lr=lr)
    toy = ToyModel("superposition-n2-m1-grid", {"W": w}, params)
    return SuperpositionPhases(
        provenance=Provenance.of(toy, dataset="synthetic sparse features", seed=seed, **params),
        importances=importances, densities=densities, phase=phase, W=w)


@dataclass
class Interference(Result):
    """Proved bounds on how much a toy model of superposition reports an **absent** feature.

    For the model x' = ReLU(WᵀW x + b) on x ∈ [0, 1]^n and each represented feature i, the exact
    maximum of x'_i (MILP over the input boxes; ``mechscope.verify``) when x_i = 0 and at most
    ``k`` other features are active, for k = 1, 2 and n − 1 (any); and whether x'_i is proved
    non-decreasing in x_i. ``max_false``: [3, n] (rows k = 1, 2, any; NaN for features not
    represented)."""

    sparsity: float
    features: list[int]
    max_false: torch.Tensor
    monotone: list[bool]
    seconds: float
    title: ClassVar[str] = "Verified interference in superposition"

    def summary(self) -> str:
        rows = ["one other feature", "two others", "any others"]
        lines = [f"S={self.sparsity:.3g}, features {self.features}: the largest output for an absent feature "
                 f"(exact, MILP, {self.seconds:.2f} s):"]
        for r, name in enumerate(rows):
            vals = ", ".join(f"x'{i} ≤ {float(self.max_false[r, i]):.3f}" for i in self.features)
            lines.append(f"  {name} active: {vals}")
        proved = [i for i, ok in zip(self.features, self.monotone) if ok]
        lines.append(f"  x'_i proved non-decreasing in x_i for features {proved}")
        return "\n".join(lines)

    def evidence(self) -> dict:
        rows = [[None if v != v else round(v, 6) for v in row] for row in self.max_false.tolist()]  # JSON: no NaN
        return {"sparsity": self.sparsity, "max_false": rows, "monotone": self.monotone}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        width = 0.27
        idx = torch.tensor(self.features, dtype=torch.float32)
        for r, name in enumerate(["1 other active", "2 others", "any"]):
            ax.bar((idx + (r - 1) * width).numpy(), self.max_false[r, self.features].numpy(), width, label=name)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="feature i (absent)", ylabel="max x'_i (proved)", xticks=idx.numpy(),
               title="How much an absent feature can be reported")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def interference(result: Superposition, k: int = -1) -> Interference:
    """Prove the interference bounds of the model at sparsity index ``k`` (see ``Interference``)."""
    import itertools
    import time

    from torch import nn

    from ..verify import Box, as_network, monotonicity, optimise

    W, b = result.W[k].detach().double(), result.b[k].detach().double()
    m, n = W.shape
    module = nn.Sequential(nn.Linear(n, m, bias=False), nn.Linear(m, n), nn.ReLU()).double()
    with torch.no_grad():
        module[0].weight.copy_(W)
        module[1].weight.copy_(W.T)
        module[1].bias.copy_(b)
    net = as_network(module, n, "superposition toy")
    features = result.represented(k)
    max_false = torch.full((3, n), float("nan"), dtype=torch.float64)
    t = time.perf_counter()
    for i in features:
        others = [j for j in range(n) if j != i]
        for r, size in enumerate((1, 2, n - 1)):
            best = -float("inf")
            for active in itertools.combinations(others, min(size, len(others))):
                upper = torch.zeros(n, dtype=torch.float64)
                upper[list(active)] = 1.0
                c = torch.zeros(n, dtype=torch.float64)
                c[i] = 1.0
                best = max(best, optimise(net, torch.zeros(n, dtype=torch.float64), upper, c, maximise=True).value)
            max_false[r, i] = best
    full = Box(torch.zeros(n), torch.ones(n))
    monotone = [monotonicity(net, full, input_index=i, output_index=i, method="milp").status == "verified"
                for i in features]
    return Interference(provenance=Provenance(model=result.provenance.model, fingerprint=result.provenance.fingerprint,
                                              dataset="input boxes in [0, 1]^n", params={"k": k}),
                        sparsity=float(result.sparsities[k]), features=features, max_false=max_false,
                        monotone=monotone, seconds=time.perf_counter() - t)
