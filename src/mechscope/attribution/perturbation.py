"""Perturbation attribution: occlusion, LIME, KernelSHAP and exact Shapley values.

Everything works on a *coalition value function* ``v(masks) -> values``: masks [B, n] of bools
(True = feature present) to outputs [B]. Wrappers build it for token inputs (absent tokens are
replaced by the pad token, or any id) and for any callable on tabular input (absent features
take a background row's values, averaged over the background, as shap's KernelExplainer does).

KernelSHAP solves the Shapley-kernel weighted least squares with the efficiency constraint
eliminated exactly (so Σφ = v(all) − v(none) always holds) and with no regularisation. When the
budget covers every coalition it is exact; otherwise whole coalition sizes are enumerated from
the outside in while they fit and the rest are sampled in complementary pairs, as in shap.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
import torch

from ..models.model import Model
from ..results import Provenance
from .gradients import Output, objective
from .result import Attribution

ValueFn = Callable[[np.ndarray], np.ndarray]  # masks [B, n] bool -> values [B]
MAX_EXACT = 12


def shapley_values(v: ValueFn, n: int) -> tuple[np.ndarray, float, float]:
    """(φ [n], v(none), v(all)) by enumerating all 2^n coalitions (n ≤ 12). Numeric helper of
    ``exact_shapley``."""
    if n > MAX_EXACT:
        raise ValueError(f"exact Shapley values enumerate 2^n coalitions; n={n} > {MAX_EXACT}")
    masks = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    values = np.asarray(v(masks), dtype=np.float64)
    index = {tuple(m): i for i, m in enumerate(masks)}
    phi = np.zeros(n)
    fact = [math.factorial(k) for k in range(n + 1)]
    for m, val in zip(masks, values):
        s = int(m.sum())
        for i in np.flatnonzero(~m):
            with_i = m.copy()
            with_i[i] = True
            phi[i] += fact[s] * fact[n - s - 1] / fact[n] * (values[index[tuple(with_i)]] - val)
    return phi, float(values[0]), float(values[-1])


def _kernel_weight(n: int, s: int) -> float:
    return (n - 1) / (math.comb(n, s) * s * (n - s))


def shapley_kernel_samples(n: int, budget: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(masks [m, n], weights [m]) of coalitions (none/all excluded) for KernelSHAP."""
    rng = np.random.default_rng(seed)
    if 2 ** n - 2 <= budget:
        masks = np.array([m for m in itertools.product([False, True], repeat=n) if 0 < sum(m) < n], dtype=bool)
        weights = np.array([_kernel_weight(n, int(m.sum())) for m in masks])
        return masks, weights
    half = n // 2
    # kernel mass of each size pair (s, n − s), for s = 1 .. n/2
    pair_mass = np.array([(n - 1) / (s * (n - s)) * (1 if 2 * s == n else 2) for s in range(1, half + 1)])
    pair_mass /= pair_mass.sum()
    masks: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    left = budget
    enumerated = 0
    for s in range(1, half + 1):  # enumerate whole sizes from the outside in, while the budget
        pair = [s] if 2 * s == n else [s, n - s]  # would give them at least one sample each anyway
        count = sum(math.comb(n, k) for k in pair)
        share = pair_mass[s - 1] / pair_mass[s - 1:].sum()
        if left * share < count - 1e-8:
            break
        for k in pair:
            combos = np.array(list(itertools.combinations(range(n), k)))
            m = np.zeros((len(combos), n), dtype=bool)
            m[np.arange(len(combos))[:, None], combos] = True
            masks.append(m)
            weights.append(np.full(len(combos), _kernel_weight(n, k)))
        left -= count
        enumerated = s
    rest = list(range(enumerated + 1, half + 1))
    if rest and left >= 2:
        p = pair_mass[[s - 1 for s in rest]]
        mass = p.sum()  # the kernel mass (as a share of all sizes) left to the sampled coalitions
        sizes = rng.choice(rest, size=left // 2, p=p / mass)
        ranks = rng.random((len(sizes), n)).argsort(1).argsort(1)
        drawn = ranks < sizes[:, None]  # a uniformly random subset of each drawn size
        both = np.concatenate([drawn, ~drawn])  # and its complement
        unique, counts = np.unique(both, axis=0, return_counts=True)
        full_mass = sum(_kernel_weight(n, k) * math.comb(n, k) for k in range(1, n))
        masks.append(unique)
        weights.append(full_mass * mass * counts / counts.sum())
    if not masks:
        return np.zeros((0, n), dtype=bool), np.zeros(0)
    return np.concatenate(masks), np.concatenate(weights)
    return np.array(masks, dtype=bool), np.array(weights)


def kernel_shap_values(v: ValueFn, n: int, budget: int = 2048, seed: int = 0) -> tuple[np.ndarray, float, float, int]:
    """(φ [n], v(none), v(all), evaluations). Efficiency Σφ = v(all) − v(none) holds exactly.
    Numeric helper of ``kernel_shap``."""
    masks, weights = shapley_kernel_samples(n, budget, seed)
    ends = np.asarray(v(np.array([np.zeros(n, bool), np.ones(n, bool)])), dtype=np.float64)
    v0, v1 = float(ends[0]), float(ends[1])
    if n == 1:
        return np.array([v1 - v0]), v0, v1, 2
    y = np.asarray(v(masks), dtype=np.float64) - v0
    z = masks.astype(np.float64)
    delta = v1 - v0
    # eliminate φ_n = delta − Σ_{i<n} φ_i: y − z_n·delta = Σ_{i<n} (z_i − z_n) φ_i
    X = z[:, :-1] - z[:, -1:]
    t = y - z[:, -1] * delta
    XtW = X.T * weights
    try:  # normal equations: (n−1)×(n−1), fast; fall back to least squares if singular
        sol = np.linalg.solve(XtW @ X, XtW @ t)
    except np.linalg.LinAlgError:
        sw = np.sqrt(weights)
        sol, *_ = np.linalg.lstsq(X * sw[:, None], t * sw, rcond=None)
    phi = np.append(sol, delta - sol.sum())
    return phi, v0, v1, len(masks) + 2


def lime_weights(v: ValueFn, n: int, samples: int = 1000, seed: int = 0, kernel_width: float = 25.0,
                 alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """LIME (as lime's text explainer): random masks keeping a uniform number of features, weights
    from the cosine distance to the full input (×100, kernel width 25), weighted ridge with an
    intercept. Returns (coefficients [n], weighted R²)."""
    rng = np.random.default_rng(seed)
    masks = np.ones((samples, n), dtype=bool)
    for row in masks[1:]:
        off = rng.choice(n, rng.integers(1, n + 1), replace=False)
        row[off] = False
    y = np.asarray(v(masks), dtype=np.float64)
    z = masks.astype(np.float64)
    kept = z.sum(1)
    cos = np.where(kept > 0, kept / np.sqrt(np.maximum(kept, 1e-12) * n), 0.0)
    d = (1 - cos) * 100
    w = np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))
    X = np.hstack([z, np.ones((samples, 1))])
    W = w[:, None]
    reg = alpha * np.eye(n + 1)
    reg[-1, -1] = 0.0  # no penalty on the intercept
    coef = np.linalg.solve(X.T @ (X * W) + reg, X.T @ (w * y))
    pred = X @ coef
    mean = np.average(y, weights=w)
    r2 = 1 - np.sum(w * (y - pred) ** 2) / max(np.sum(w * (y - mean) ** 2), 1e-12)
    return coef[:-1], float(r2)


def occlusion_values(v: ValueFn, n: int) -> tuple[np.ndarray, float]:
    """(v(all) − v(all but feature i) per feature, v(all)). Numeric helper of ``occlusion``."""
    masks = np.ones((n + 1, n), dtype=bool)
    masks[np.arange(1, n + 1), np.arange(n)] = False
    vals = np.asarray(v(masks), dtype=np.float64)
    return vals[0] - vals[1:], float(vals[0])


# ----------------------------------------------------------------------------------------------
# The same on any value function, as results


def _of_value_fn(v: ValueFn, n: int, method: str, phi: np.ndarray, f_input: float | None, f_baseline: float | None,
                 details: dict, **params) -> Attribution:
    name = getattr(v, "__name__", type(v).__name__)
    gap = float(np.sum(phi) - (f_input - f_baseline)) if f_input is not None and f_baseline is not None else None
    return Attribution(provenance=Provenance(model=name, fingerprint="", params={"n": n, **params}),
                       labels=[f"x{i}" for i in range(n)], scores=torch.as_tensor(np.asarray(phi, dtype=np.float64)),
                       method=method, target=f"v = {name}", f_input=f_input, f_baseline=f_baseline, gap=gap,
                       details=details)


def exact_shapley(v: ValueFn, n: int) -> Attribution:
    """Exact Shapley values of the n features of ``v`` (all 2^n coalitions; n ≤ 12)."""
    phi, v0, v1 = shapley_values(v, n)
    return _of_value_fn(v, n, "Shapley values (exact)", phi, v1, v0, {"evaluations": 2 ** n})


def kernel_shap(v: ValueFn, n: int, budget: int = 2048, seed: int = 0) -> Attribution:
    """KernelSHAP estimates for the n features of ``v`` with ``budget`` evaluations (see the module
    docstring)."""
    phi, v0, v1, evals = kernel_shap_values(v, n, budget, seed)
    return _of_value_fn(v, n, "KernelSHAP", phi, v1, v0, {"evaluations": evals}, budget=budget, seed=seed)


def lime(v: ValueFn, n: int, samples: int = 1000, seed: int = 0, kernel_width: float = 25.0,
         alpha: float = 1.0) -> Attribution:
    """LIME coefficients of the n features of ``v`` (see ``lime_weights``); ``details["r2"]`` is the
    weighted fit."""
    coef, r2 = lime_weights(v, n, samples, seed, kernel_width, alpha)
    return _of_value_fn(v, n, "LIME", coef, None, None, {"r2": r2}, samples=samples, seed=seed,
                        kernel_width=kernel_width, alpha=alpha)


def occlusion(v: ValueFn, n: int) -> Attribution:
    """v(all) − v(all but feature i) for each of the n features of ``v``."""
    diff, v_all = occlusion_values(v, n)
    return _of_value_fn(v, n, "occlusion", diff, v_all, None, {"evaluations": n + 1})


# ----------------------------------------------------------------------------------------------
# Value functions


def token_value_fn(model: Model, ids: torch.Tensor, F, mask_id: int, batch_size: int = 64) -> ValueFn:
    """Coalitions of tokens: absent tokens become ``mask_id``; F evaluated in batches."""
    def v(masks: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(masks), batch_size):
            m = torch.as_tensor(masks[start:start + batch_size])
            batch = torch.where(m, ids.expand(len(m), -1), torch.full_like(ids.expand(len(m), -1), mask_id))
            with torch.no_grad():
                out.append(F(model.run(batch)).double().cpu().numpy())
        return np.concatenate(out)

    return v


def tabular_value_fn(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: np.ndarray) -> ValueFn:
    """Coalitions of columns of ``x`` [n]: absent columns take each background row's values [m, n];
    the value is the mean of f over the background rows."""
    x, background = np.asarray(x, dtype=np.float64), np.atleast_2d(np.asarray(background, dtype=np.float64))

    def v(masks: np.ndarray) -> np.ndarray:
        rows = np.where(masks[:, None, :], x[None, None, :], background[None, :, :])  # [B, m, n]
        out = np.asarray(f(rows.reshape(-1, x.shape[0])), dtype=np.float64).reshape(len(masks), len(background))
        return out.mean(1)

    return v


def token_perturbation(model: Model, prompt: str, target: str | int, *, method: str = "shap",
                       foil: str | int | None = None, output: Output = "logit", mask: str | int = "pad",
                       budget: int = 512, seed: int = 0, hold: Sequence[int] = ()) -> Attribution:
    """Occlusion, LIME, KernelSHAP or exact Shapley values of F over the prompt's tokens.

    ``mask``: the id that replaces an absent token ("pad", "unk", or an int). ``hold``: positions
    always present (e.g. [0], the first token). ``budget``: model evaluations for shap/lime.
    """
    ids, _ = model.tokenize(prompt)
    if ids.shape[0] != 1:
        raise ValueError("token attribution takes one prompt at a time")
    tokens = [model.tokenizer.decode([int(i)]) for i in ids[0]]
    F, name = objective(model, target, foil, output)
    if mask == "pad":
        mask_id = model.pad_id
    elif mask == "unk":
        if model.tokenizer.unk_token_id is None:
            raise ValueError("this tokenizer has no unk token; use mask='pad' or an id")
        mask_id = model.tokenizer.unk_token_id
    else:
        mask_id = model.token_id(mask)
    free = [i for i in range(len(tokens)) if i not in {h % len(tokens) for h in hold}]
    base_v = token_value_fn(model, ids, F, mask_id)

    def v(masks: np.ndarray) -> np.ndarray:  # coalitions over the free positions only
        full = np.ones((len(masks), len(tokens)), dtype=bool)
        full[:, free] = masks
        return base_v(full)

    n = len(free)
    details = {"mask_id": mask_id, "hold": sorted(set(range(len(tokens))) - set(free)), "output": output}
    f_in = f_base = gap = None
    if method == "occlusion":
        phi, f_in = occlusion_values(v, n)
        label = "occlusion"
    elif method == "shap":
        if n <= MAX_EXACT and 2 ** n <= budget:
            phi, f_base, f_in = shapley_values(v, n)
            label, details["evaluations"] = "Shapley values (exact)", 2 ** n
        else:
            phi, f_base, f_in, evals = kernel_shap_values(v, n, budget, seed)
            label, details["evaluations"] = "KernelSHAP", evals
        gap = float(phi.sum() - (f_in - f_base))
    elif method == "lime":
        phi, r2 = lime_weights(v, n, samples=budget, seed=seed)
        label, details["r2"] = "LIME", r2
    else:
        raise ValueError(f"method={method!r}; valid: 'occlusion', 'shap', 'lime'")
    scores = torch.zeros(len(tokens), dtype=torch.float64)
    scores[free] = torch.as_tensor(phi, dtype=torch.float64)
    return Attribution(provenance=Provenance.of(model, prompts=[prompt], method=method, budget=budget, seed=seed),
                       labels=tokens, scores=scores.float(), method=label, target=name, f_input=f_in,
                       f_baseline=f_base, gap=gap, details=details)
