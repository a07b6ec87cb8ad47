"""Properties proved over input regions: output bounds and local robustness, as results.

``output_bounds(net, region, method)`` bounds every output over a box (``ibp``, ``crown``: sound
and fast; ``milp``: exact, ReLU/LeakyReLU only). ``robustness(net, x, eps)`` proves that the
predicted class cannot change within the L∞ ball (verified), or finds an input where it does
(falsified — the counterexample is re-run through the network before it is reported), or says
it could not decide (unknown: CROWN's margin bound is not positive and no exact search was run).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..results import Provenance, Result
from .bounds import crown, gradient_bounds, ibp, sample_range
from .milp import exact_bounds, largest_decrease, optimise
from .network import as_layers, run_layers

METHODS = ("ibp", "crown", "milp")


@dataclass
class Box:
    """An input region: lower ≤ x ≤ upper elementwise (tensors of the network's input shape)."""

    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self):
        if self.lower.shape != self.upper.shape:
            raise ValueError(f"box bounds differ in shape: {tuple(self.lower.shape)} vs {tuple(self.upper.shape)}")
        if torch.isnan(self.lower).any() or torch.isnan(self.upper).any():
            raise ValueError("box bounds contain NaN")
        bad = (self.lower > self.upper).nonzero()
        if len(bad):
            i = tuple(bad[0].tolist())
            raise ValueError(f"empty box: lower {float(self.lower[i]):.4g} > upper {float(self.upper[i]):.4g} at {i}")

    @classmethod
    def linf(cls, x: torch.Tensor, eps: float, clip: tuple[float, float] | None = None) -> "Box":
        """The L∞ ball of radius eps around x (clipped to ``clip``, e.g. (0, 1) for images)."""
        if eps < 0:
            raise ValueError(f"eps={eps}; the radius must be ≥ 0")
        lo, hi = x - eps, x + eps
        if clip is not None:
            lo, hi = lo.clamp(*clip), hi.clamp(*clip)
        return cls(lo, hi)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape)


@dataclass
class Bounds(Result):
    """Bounds on every output of a network over a box; ``sampled``: the range seen on random
    inputs (an inner estimate: sound bounds must contain it)."""

    method: str
    lower: torch.Tensor
    upper: torch.Tensor
    sampled_lower: torch.Tensor
    sampled_upper: torch.Tensor
    seconds: float
    title: ClassVar[str] = "Output bounds"

    def summary(self) -> str:
        rows = ", ".join(f"y{i} ∈ [{float(l):.4g}, {float(u):.4g}]" for i, (l, u) in
                         enumerate(zip(self.lower[:6], self.upper[:6])))
        slack = float(((self.upper - self.lower) / (self.sampled_upper - self.sampled_lower).clamp(min=1e-12)).mean())
        return (f"{self.method} bounds over the box in {self.seconds:.3f} s: {rows}"
                f"{' …' if len(self.lower) > 6 else ''}; width {slack:.2f}× the sampled range")

    def evidence(self) -> dict:
        return {"method": self.method, "lower": self.lower.tolist()[:20], "upper": self.upper.tolist()[:20]}

    def figure(self):
        import matplotlib.pyplot as plt

        k = len(self.lower)
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), 3))
        idx = torch.arange(k).numpy()
        ax.vlines(idx, self.lower.numpy(), self.upper.numpy(), lw=6, alpha=0.4, label=f"{self.method} bounds")
        ax.vlines(idx, self.sampled_lower.numpy(), self.sampled_upper.numpy(), lw=2, color="k", label="sampled range")
        ax.set(xlabel="output", ylabel="value", xticks=idx)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


@dataclass
class Verdict(Result):
    """Whether a property holds over a region: ``verified`` (proved), ``falsified`` (with a
    counterexample the network confirms) or ``unknown``. ``margin``: how far from failing, as the
    method sees it — robustness: min_j (y_label − y_j) (a lower bound, exact under MILP);
    monotonicity: the lower bound of ∂f_k/∂x_i, or minus the largest fall under MILP."""

    property: str
    status: str
    method: str
    margin: float
    counterexample: torch.Tensor | None
    seconds: float
    title: ClassVar[str] = "Verification"

    def summary(self) -> str:
        extra = ""
        if self.counterexample is not None:
            extra = "; counterexample found (confirmed by re-running the network)"
        return f"{self.property}: {self.status.upper()} by {self.method} in {self.seconds:.3f} s (margin {self.margin:+.4g}){extra}"

    def evidence(self) -> dict:
        return {"status": self.status, "method": self.method, "margin": self.margin}


def _layers(net: nn.Module, region: Box):
    return as_layers(net, region.shape)


def _provenance(net: nn.Module, region: Box, **params) -> Provenance:
    """Provenance of a verification: the network (by weights) and the region (hashed)."""
    from ..models.model import fingerprint_of

    return Provenance(model=getattr(net, "name", type(net).__name__), fingerprint=fingerprint_of(net, {}),
                      dataset="input box", dataset_hash=hashlib.blake2b(
                          torch.cat([region.lower.flatten(), region.upper.flatten()]).double().numpy().tobytes(),
                          digest_size=8).hexdigest(), params=params)


def output_bounds(net: nn.Module, region: Box, method: str = "crown", samples: int = 10_000) -> Bounds:
    """Bounds on every output of ``net`` over ``region`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(METHODS)}")
    layers = _layers(net, region)
    t = time.perf_counter()
    if method == "ibp":
        lo, hi, _ = ibp(layers, region.lower, region.upper)
    elif method == "crown":
        lo, hi, _ = crown(layers, region.lower, region.upper)
    else:
        lo, hi, _ = exact_bounds(layers, region.lower, region.upper)
    seconds = time.perf_counter() - t
    s_lo, s_hi = sample_range(layers, region.lower, region.upper, samples)
    return Bounds(provenance=_provenance(net, region, method=method), method=method, lower=lo, upper=hi,
                  sampled_lower=s_lo, sampled_upper=s_hi, seconds=seconds)


def robustness(net: nn.Module, x: torch.Tensor, eps: float, *, label: int | None = None, method: str = "crown",
               clip: tuple[float, float] | None = None, time_limit: float | None = None) -> Verdict:
    """Can any input within L∞ distance eps of x change the class from ``label`` (default: the
    predicted one)? CROWN bounds each margin y_label − y_j from below; MILP finds the worst one."""
    if method not in ("crown", "milp"):
        raise ValueError(f"method={method!r}; valid: 'crown', 'milp'")
    region = Box.linf(x, eps, clip)
    layers = _layers(net, region)
    logits = run_layers(layers, x.double().flatten()[None])[0]
    label = int(logits.argmax()) if label is None else int(label)
    k = logits.numel()
    if not 0 <= label < k:
        raise ValueError(f"label {label} out of range: the network has {k} outputs")
    others = [j for j in range(k) if j != label]
    spec = torch.zeros(len(others), k, dtype=torch.float64)
    spec[:, label] = 1.0
    spec[torch.arange(len(others)), others] = -1.0
    prop = f"class {label} stable within L∞ ε={eps:g}"
    t = time.perf_counter()
    if method == "crown":
        lo, _, _ = crown(layers, region.lower, region.upper, spec)
        margin = float(lo.min())
        status = "verified" if margin > 0 else "unknown"
        return Verdict(provenance=_provenance(net, region, method=method, eps=eps, label=label), property=prop,
                       status=status, method=method, margin=margin, counterexample=None,
                       seconds=time.perf_counter() - t)
    worst, witness, status = float("inf"), None, "verified"
    for row in spec:
        opt = optimise(layers, region.lower, region.upper, row, time_limit=time_limit)
        if opt.status != "optimal":
            status = "unknown"
            continue
        if opt.value < worst:
            worst, witness = opt.value, opt.x
    counterexample = None
    if worst <= 0 and witness is not None:
        out = run_layers(layers, witness[None])[0]
        if int(out.argmax()) != label or float(out[label] - out[others].max()) <= 0:  # the network confirms it
            status, counterexample = "falsified", witness.reshape(region.shape)
    return Verdict(provenance=_provenance(net, region, method=method, eps=eps, label=label), property=prop,
                   status=status, method=method, margin=worst, counterexample=counterexample,
                   seconds=time.perf_counter() - t)


def monotonicity(net: nn.Module, region: Box, *, input_index: int, output_index: int = 0, method: str = "bounds",
                 time_limit: float | None = None) -> Verdict:
    """Is output k non-decreasing in input i over the box? ``bounds``: interval bounds on ∂f_k/∂x_i
    (verified when ≥ 0 everywhere, else unknown); ``milp`` (ReLU/LeakyReLU): the largest fall
    f_k(x) − f_k(x') with x' = x except x'_i ≥ x_i, exactly — verified when ≤ 0, falsified with the
    pair [x, x'] (confirmed by re-running the network) when > 0."""
    if method not in ("bounds", "milp"):
        raise ValueError(f"method={method!r}; valid: 'bounds', 'milp'")
    layers = _layers(net, region)
    n_out = layers[-1].W.shape[0]
    if not 0 <= output_index < n_out:
        raise ValueError(f"output index {output_index} out of range: the network has {n_out} outputs")
    prop = f"output {output_index} non-decreasing in input {input_index} over the box"
    prov = _provenance(net, region, method=method, input_index=input_index, output_index=output_index)
    t = time.perf_counter()
    if method == "bounds":
        g_lo, _ = gradient_bounds(layers, region.lower.double().flatten(), region.upper.double().flatten(), input_index)
        margin = float(g_lo[output_index])
        return Verdict(provenance=prov, property=prop, status="verified" if margin >= 0 else "unknown",
                       method="gradient bounds", margin=margin, counterexample=None, seconds=time.perf_counter() - t)
    if not 0 <= input_index < region.lower.numel():
        raise ValueError(f"input index {input_index} out of range: the network has {region.lower.numel()} inputs")
    fall, x, x2, status = largest_decrease(layers, region.lower, region.upper, input_index, output_index, time_limit)
    counterexample = None
    if status != "optimal":
        status = "unknown"
    elif fall <= 1e-9:
        status = "verified"
    else:
        ys = run_layers(layers, torch.stack([x, x2]))[:, output_index]
        status = "unknown"
        if float(ys[1]) < float(ys[0]):  # the network confirms: input i grew, the output fell
            status, counterexample = "falsified", torch.stack([x, x2]).reshape(2, *region.shape)
    return Verdict(provenance=prov, property=prop, status=status, method=method, margin=-fall,
                   counterexample=counterexample, seconds=time.perf_counter() - t)
