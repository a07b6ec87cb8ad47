"""Linear probes: does a site carry a concept linearly, and how selectively?

``LinearProbe`` follows scikit-learn's conventions (``fit``, ``predict``, ``score``) on activation
matrices X [n, d]:

- ``logistic``: L2-regularised logistic regression, min ½‖w‖² + C Σ log(1 + e^{−ỹ(w·x+b)}) (ỹ = ±1;
  sklearn's objective and ``C``), fitted by L-BFGS in float64; ``score`` = accuracy.
- ``ridge``: continuous targets, min ‖y − Xw − b‖² + α‖w‖² in closed form; ``score`` = R².
- ``mass-mean`` (Marks & Tegmark 2023): w = μ₁ − μ₀, threshold at the midpoint of the class means'
  projections; ``iid=True`` classifies with Σ⁻¹w (Σ the pooled within-class covariance, ridge
  1e-3·tr Σ/d) while ``direction`` stays μ₁ − μ₀.

``direction`` is the probe's unit vector in activation space (towards class 1 / larger targets):
it can steer (``Add``) or be removed (``ProjectOut``, ``steering.directional_ablation``).

``probe_sweep(model, dataset, sites)`` caches every site in one pass over the prompts, fits a probe
per site on a split that never puts one group (a prompt template, a word) on both sides, and
reports test accuracy beside a **control task** (Hewitt & Liang 2019): each *type* (by default the
token at the probed position) gets a random label, the same probe is fitted to that, and
selectivity = task accuracy − control accuracy. A probe that can memorise types scores well on
the control task too, so high selectivity is the evidence that the site, not the probe, carries
the concept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..checks import positive_int
from ..models.model import Model
from ..results import Provenance, Result
from .datasets import DATASETS, ProbeDataset
from .steering import ControlVector

KINDS = ("logistic", "ridge", "mass-mean")


def _matrix(X, name: str = "X") -> torch.Tensor:
    X = torch.as_tensor(X).double()
    if X.dim() != 2:
        raise ValueError(f"{name} must be [n, d]; got shape {tuple(X.shape)}")
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


@dataclass
class LinearProbe:
    """A linear probe (see the module docstring). ``C``: inverse L2 strength (logistic);
    ``alpha``: L2 strength (ridge)."""

    kind: str = "logistic"
    C: float = 1.0
    alpha: float = 1.0
    iid: bool = False
    max_iter: int = 500
    coef_: torch.Tensor | None = field(default=None, repr=False)  # [d]
    intercept_: float = 0.0
    mean_diff_: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; valid: {', '.join(KINDS)}")

    def fit(self, X, y) -> "LinearProbe":
        X = _matrix(X)
        y = torch.as_tensor(y).double().flatten()
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"{X.shape[0]} rows of X but {y.shape[0]} labels")
        if self.kind != "ridge":
            classes = sorted(set(y.tolist()))
            if not set(classes) <= {0.0, 1.0} or len(classes) != 2:
                raise ValueError(f"{self.kind} probes need labels 0 and 1 (both present); got {classes[:5]}")
        if self.kind == "ridge":
            mx, my = X.mean(0), y.mean()
            Xc = X - mx
            A = Xc.T @ Xc + self.alpha * torch.eye(X.shape[1], dtype=torch.float64)
            self.coef_ = torch.linalg.solve(A, Xc.T @ (y - my))
            self.intercept_ = float(my - mx @ self.coef_)
        elif self.kind == "mass-mean":
            m1, m0 = X[y == 1].mean(0), X[y == 0].mean(0)
            self.mean_diff_ = m1 - m0
            w = self.mean_diff_
            if self.iid:
                Xc = torch.cat([X[y == 1] - m1, X[y == 0] - m0])
                cov = Xc.T @ Xc / max(len(Xc) - 1, 1)
                cov = cov + 1e-3 * cov.diagonal().mean() * torch.eye(X.shape[1], dtype=torch.float64)
                w = torch.linalg.solve(cov, w)
            self.coef_ = w
            self.intercept_ = float(-(m1 + m0) @ w / 2)
        else:
            self._fit_logistic(X, y)
        return self

    def _fit_logistic(self, X: torch.Tensor, y: torch.Tensor) -> None:
        sign = 2 * y - 1
        w = torch.zeros(X.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=self.max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            margin = sign * (X @ w[:-1] + w[-1])
            loss = 0.5 * (w[:-1] ** 2).sum() + self.C * torch.nn.functional.softplus(-margin).sum()
            loss.backward()
            return loss

        opt.step(closure)
        w = w.detach()
        self.coef_, self.intercept_ = w[:-1], float(w[-1])

    def _check_fitted(self) -> None:
        if self.coef_ is None:
            raise RuntimeError("the probe is not fitted: call fit(X, y) first")

    def decision_function(self, X) -> torch.Tensor:
        """w·x + b [n]."""
        self._check_fitted()
        X = _matrix(X)
        if X.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features; the probe was fitted on {self.coef_.shape[0]}")
        return X @ self.coef_ + self.intercept_

    def predict_proba(self, X) -> torch.Tensor:
        """P(class 1) [n] (logistic, mass-mean)."""
        if self.kind == "ridge":
            raise ValueError("a ridge probe predicts values, not probabilities")
        return torch.sigmoid(self.decision_function(X))

    def predict(self, X) -> torch.Tensor:
        s = self.decision_function(X)
        return s if self.kind == "ridge" else (s > 0).double()

    def score(self, X, y) -> float:
        """Accuracy (classifiers) or R² (ridge)."""
        y = torch.as_tensor(y).double().flatten()
        p = self.predict(X)
        if self.kind == "ridge":
            return float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum().clamp(min=1e-12))
        return float((p == y).double().mean())

    @property
    def direction(self) -> torch.Tensor:
        """Unit vector [d] in activation space, pointing to class 1 (or larger targets)."""
        self._check_fitted()
        w = self.mean_diff_ if self.kind == "mass-mean" else self.coef_
        return (w / w.norm().clamp(min=1e-12)).float()


def group_split(groups: Sequence[str], test_fraction: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices) with every group entirely on one side."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction}; it must be in (0, 1)")
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(f"a group split needs at least 2 groups; got {len(names)}")
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = min(max(1, round(test_fraction * len(names))), len(names) - 1)
    test_groups = {names[i] for i in order[:n_test]}
    test = torch.tensor([i for i, gr in enumerate(groups) if gr in test_groups])
    train = torch.tensor([i for i, gr in enumerate(groups) if gr not in test_groups])
    return train, test


def control_labels(types: Sequence, labels: Sequence[float], seed: int = 0) -> torch.Tensor:
    """Hewitt & Liang's control task: each distinct type gets a random label, drawn with the task's
    label frequencies, the same wherever the type occurs [n]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(labels).double()
    distinct = sorted(set(types), key=str)
    draw = y[torch.randint(0, len(y), (len(distinct),), generator=g)]
    table = dict(zip(distinct, draw.tolist()))
    return torch.tensor([table[t] for t in types], dtype=torch.float64)


def activations(model: Model, dataset: ProbeDataset, sites: str | Sequence[str], *, batch_size: int = 32,
                progress: bool = True) -> tuple[dict[str, torch.Tensor], list[int]]:
    """({site: [n, d] float32 at the probed position}, token id at that position per prompt): one
    forward per batch_size, caching only that position of only those sites."""
    positive_int(batch_size, "batch_size", "prompts per forward")
    names = [site.name for site in model._sites(sites)]
    widths: list[int] = []

    def collect(items: range) -> torch.Tensor:  # [k, 1 + Σ widths]: the token id, then every site's row
        chunk = dataset.prompts[items.start:items.stop]
        run = model.run(chunk, cache=names, cache_positions=[dataset.position])
        parts = [run.cache[name][:, 0].float().reshape(len(chunk), -1) for name in names]
        widths[:] = [p.shape[1] for p in parts]
        return torch.cat([run.tokens[:, dataset.position].float()[:, None].cpu(), *(p.cpu() for p in parts)], 1)

    key = f"probe activations {model.fingerprint} {names} {dataset!r}" if distributed.recording() else ""
    rows = distributed.sweep(len(dataset.prompts), collect, key=key, per=batch_size, desc=f"activations: {dataset.name}",
                             progress=progress)
    if not widths:  # every chunk came from the records (or another rank): the widths from one run
        collect(range(0, 1))
    split = rows[:, 1:].split(widths, dim=1)
    return {name: part.contiguous() for name, part in zip(names, split)}, rows[:, 0].long().tolist()


@dataclass
class ProbeSweep(Result):
    """Probe accuracy per site, with the control task and selectivity (see the module docstring)."""

    dataset: str
    kind: str
    sites: list[str]
    train_score: list[float]
    test_score: list[float]
    control_score: list[float]
    n_train: int
    n_test: int
    directions: torch.Tensor  # [sites, d]: each probe's unit direction
    title: ClassVar[str] = "Probe sweep"

    @property
    def selectivity(self) -> list[float]:
        return [t - c for t, c in zip(self.test_score, self.control_score)]

    def control_vector(self, site: str, scale: float = 1.0):
        """The probe's unit direction at ``site`` × ``scale`` as a ``steering.ControlVector``: steer
        with ``.interventions(coef)``, or remove it with ``steering.directional_ablation``."""

        if site not in self.sites:
            raise ValueError(f"no probe at {site!r}; probed sites: {', '.join(self.sites[:5])}"
                             f"{' …' if len(self.sites) > 5 else ''}")
        v = self.directions[self.sites.index(site)] * scale
        return ControlVector(provenance=self.provenance, method=f"{self.kind} probe", sites=[site], vectors=v[None],
                             pairs=[])

    def best(self) -> tuple[str, float]:
        i = max(range(len(self.sites)), key=lambda k: self.test_score[k])
        return self.sites[i], self.test_score[i]

    def summary(self) -> str:
        site, acc = self.best()
        i = self.sites.index(site)
        return (f"{self.kind} probes for {self.dataset!r} on {len(self.sites)} sites ({self.n_train} train / "
                f"{self.n_test} test prompts, groups never split): best {site} test {acc:.3f}, control "
                f"{self.control_score[i]:.3f}, selectivity {self.selectivity[i]:+.3f}; first site "
                f"{self.test_score[0]:.3f}, last {self.test_score[-1]:.3f}")

    def evidence(self) -> dict:
        site, acc = self.best()
        return {"best_site": site, "test_score": acc, "selectivity": self.selectivity[self.sites.index(site)]}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(5, 0.22 * len(self.sites) + 2), 3))
        x = list(range(len(self.sites)))
        ax.plot(x, self.test_score, "o-", label="test (task)")
        ax.plot(x, self.control_score, "s--", label="test (control task)")
        ax.plot(x, self.selectivity, "^:", label="selectivity")
        ax.set(xlabel="site", ylabel="accuracy" if self.kind != "ridge" else "R²", title=f"probes: {self.dataset}")
        labels = [s.replace("blocks.", "").replace(".resid_post", "") for s in self.sites]
        ax.set_xticks(x, labels, rotation=90 if len(x) > 12 else 0, fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def probe_sweep(model: Model, dataset: ProbeDataset | str, sites: str | Sequence[str] = "blocks.*.resid_post", *,
                kind: str = "logistic", C: float = 1.0, alpha: float = 1.0, test_fraction: float = 0.3, seed: int = 0,
                batch_size: int = 32, progress: bool = True, cached: dict[str, torch.Tensor] | None = None) -> ProbeSweep:
    """Fit one probe per site (activations cached once for all sites; ``cached`` reuses them) and
    report task and control-task accuracy on a group split."""
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; embedded: {', '.join(DATASETS)}")
        dataset = DATASETS[dataset](model)
    acts, tokens = (cached, None) if cached is not None else activations(model, dataset, sites, batch_size=batch_size,
                                                                         progress=progress)
    if dataset.types is None and tokens is None:
        raise ValueError("cached activations need dataset.types for the control task")
    types = dataset.types if dataset.types is not None else tokens
    y = torch.tensor(dataset.labels, dtype=torch.float64)
    train, test = group_split(dataset.groups, test_fraction, seed)
    if len(set(types)) < 2:
        raise ValueError(f"dataset {dataset.name!r}: every example has the same control type ({types[0]!r}), so the "
                         "control task would be constant; give dataset.types (e.g. the word a probe could memorise)")
    ctrl = control_labels(types, dataset.labels, seed) if kind != "ridge" else \
        y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    names = list(acts)

    def fit(items: range) -> torch.Tensor:  # [k, 3 + d]: train, test and control score, then the unit direction
        out = []
        for name in (names[i] for i in items):
            X = acts[name].double()
            mu, sd = X[train].mean(0), X[train].std(0).clamp(min=1e-6)  # standardise on the training rows
            Z = (X - mu) / sd
            probe = LinearProbe(kind, C=C, alpha=alpha).fit(Z[train], y[train])
            control = LinearProbe(kind, C=C, alpha=alpha)
            if kind == "ridge" or len(set(ctrl[train].tolist())) == 2:
                c = control.fit(Z[train], ctrl[train]).score(Z[test], ctrl[test])
            else:  # every training type drew the same label: the control probe can only guess it
                c = float((ctrl[test] == ctrl[train][0]).double().mean())
            d = probe.direction.double() * (sd if kind == "mass-mean" else 1 / sd)  # back to raw activation space
            scores = torch.tensor([probe.score(Z[train], y[train]), probe.score(Z[test], y[test]), c], dtype=torch.float64)
            out.append(torch.cat([scores, d / d.norm()]))
        return torch.stack(out)

    widths = {acts[n].shape[1] for n in names}
    if len(widths) == 1:  # one width: the sites' probes are divided among ranks
        key = ""
        if distributed.recording():
            from ..models.fingerprint import fingerprint_of

            key = f"probes {kind} {C} {alpha} {test_fraction} {seed} {dataset!r} {fingerprint_of(acts, {})}"
        fitted = distributed.sweep(len(names), fit, key=key, desc="probes", progress=progress)
    else:
        fitted = [fit(range(i, i + 1))[0] for i in tqdm(range(len(names)), desc="probes", disable=not progress, leave=False)]
    tr, te, co = ([float(f[j]) for f in fitted] for j in range(3))
    dirs = [f[3:].float() for f in fitted]
    params = dict(kind=kind, C=C, alpha=alpha, test_fraction=test_fraction)
    prov = Provenance.of(model, prompts=dataset.prompts, dataset=dataset.name, seed=seed, **params) if model is not None \
        else Provenance(model="given activations", fingerprint="", dataset=dataset.name, seed=seed, params=params)
    return ProbeSweep(provenance=prov,
                      dataset=dataset.name, kind=kind, sites=names, train_score=tr, test_score=te, control_score=co,
                      n_train=len(train), n_test=len(test), directions=torch.stack(dirs))
