"""Properties proved over input regions, as results.

``output_bounds(net, region, method)`` bounds every output over a box (``ibp``, ``crown``: sound
and fast; ``milp``: exact, ReLU/LeakyReLU only). ``check(net, prop, method)`` decides a
``Property`` (VNNLIB's meaning: the property fails when some input of a case's box makes the
outputs satisfy every row of one of its disjuncts A y ≤ b): verified (proved), falsified (a
counterexample, re-run through the network before it is reported) or unknown (the method could
not decide: a bound that is not tight enough, or a time limit). ``robustness`` (the class cannot
change within an L∞ ball) and ``monotonicity`` are properties of this kind.

Methods: ``ibp`` / ``crown`` (one bound, plus the network run at the box centre and CROWN's worst
corner for a quick counterexample), ``milp`` (exact, ReLU / LeakyReLU: decides whether an input
satisfies a disjunct — a feasibility problem, much faster than optimising the margin; the exact
margin is ``largest_violation``'s), ``bab`` (branch and bound on the input box with CROWN, any
supported activation).

Verdict margins: > 0 proved by that much (a lower bound on min over disjuncts of the largest
row slack A_j y − b_j); ≤ 0 at a counterexample, how far it violates. A MILP proof that CROWN
could not give reports margin 0 (decided, not measured).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..results import Provenance, Result
from .bab import disjunct_margin, stack_disjuncts, branch_and_bound, satisfied
from .bounds import crown_intervals, crown_lower, gradient_intervals, ibp_intervals, sample_range
from .milp import exact_intervals, largest_decrease, largest_violation
from .network import Network, as_network

BOUND_METHODS = ("ibp", "crown", "milp")
CHECK_METHODS = ("ibp", "crown", "milp", "bab")
CONFIRM_TOL = 1e-6  # a MILP optimum may break a row by HiGHS's feasibility tolerance (1e-7, scaled)


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
class Property:
    """A property of a network's outputs over input regions, in VNNLIB's form: it fails when for
    some case (box, disjuncts) an input in the box gives outputs y with A y ≤ b for every row of
    one disjunct (A [rows, outputs], b [rows])."""

    cases: list[tuple[Box, list[tuple[torch.Tensor, torch.Tensor]]]]
    name: str = "property"

    def __post_init__(self):
        if not self.cases:
            raise ValueError(f"property {self.name!r} has no cases")
        for box, disjuncts in self.cases:
            if not disjuncts:
                raise ValueError(f"property {self.name!r}: a case has no output condition")
            for A, b in disjuncts:
                if A.dim() != 2 or b.shape != (A.shape[0],):
                    raise ValueError(f"property {self.name!r}: a disjunct needs A [rows, outputs] and b [rows]; "
                                     f"got {tuple(A.shape)} and {tuple(b.shape)}")
                if torch.isnan(A).any() or torch.isnan(b).any():
                    raise ValueError(f"property {self.name!r}: NaN in an output condition")

    @classmethod
    def robustness(cls, x: torch.Tensor, eps: float, label: int, n_classes: int,
                   clip: tuple[float, float] | None = None) -> "Property":
        """The class stays ``label`` within the L∞ ball: it fails if y_label − y_j ≤ 0 for some j."""
        if not 0 <= label < n_classes:
            raise ValueError(f"label {label} out of range: the network has {n_classes} outputs")
        disjuncts = []
        for j in range(n_classes):
            if j != label:
                A = torch.zeros(1, n_classes, dtype=torch.float64)
                A[0, label], A[0, j] = 1.0, -1.0
                disjuncts.append((A, torch.zeros(1, dtype=torch.float64)))
        return cls([(Box.linf(x, eps, clip), disjuncts)], f"class {label} stable within L∞ ε={eps:g}")


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
    method sees it — properties: see the module docstring (robustness: min_j (y_label − y_j));
    monotonicity: the lower bound of ∂f_k/∂x_i, or minus the largest fall under MILP."""

    property: str
    status: str
    method: str
    margin: float
    counterexample: torch.Tensor | None
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. boxes searched, cases, the network
    title: ClassVar[str] = "Verification"

    def summary(self) -> str:
        extra = ""
        if self.counterexample is not None:
            extra = "; counterexample found (confirmed by re-running the network)"
        return f"{self.property}: {self.status.upper()} by {self.method} in {self.seconds:.3f} s (margin {self.margin:+.4g}){extra}"

    def evidence(self) -> dict:
        margin = self.margin if abs(self.margin) < float("inf") else None  # JSON has no NaN / inf
        return {"status": self.status, "method": self.method, "margin": margin, **self.detail}


def _network(net: nn.Module | Network, shape: tuple[int, ...]) -> Network:
    net = net if isinstance(net, Network) else as_network(net, shape, getattr(net, "name", None))
    if net.n_inputs != int(torch.tensor(shape).prod()):
        raise ValueError(f"the region has shape {shape} ({int(torch.tensor(shape).prod())} values); "
                         f"the network takes {net.n_inputs} inputs")
    return net


def _provenance(net: Network, boxes: list[Box], **params) -> Provenance:
    """Provenance of a verification: the network (by weights) and the region (hashed)."""
    data = torch.cat([t.double().flatten() for box in boxes for t in (box.lower, box.upper)])
    return Provenance(model=net.name, fingerprint=net.fingerprint(), dataset="input box",
                      dataset_hash=hashlib.blake2b(data.numpy().tobytes(), digest_size=8).hexdigest(), params=params)


def output_bounds(net: nn.Module | Network, region: Box, method: str = "crown", samples: int = 10_000) -> Bounds:
    """Bounds on every output of ``net`` over ``region`` (see the module docstring)."""
    if method not in BOUND_METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(BOUND_METHODS)}")
    network = _network(net, region.shape)
    t = time.perf_counter()
    if method == "ibp":
        lo, hi, _ = ibp_intervals(network, region.lower, region.upper)
    elif method == "crown":
        lo, hi, _ = crown_intervals(network, region.lower, region.upper)
    else:
        lo, hi, _ = exact_intervals(network, region.lower, region.upper)
    seconds = time.perf_counter() - t
    s_lo, s_hi = sample_range(network, region.lower, region.upper, samples)
    return Bounds(provenance=_provenance(network, [region], method=method), method=method, lower=lo, upper=hi,
                  sampled_lower=s_lo, sampled_upper=s_hi, seconds=seconds)


def _one_bound(network: Network, box: Box, disjuncts, method: str):
    """(margin, counterexample or None) of one case by a single IBP or CROWN bound and a quick attack."""
    A, b, group = stack_disjuncts(disjuncts)
    L, U = box.lower.double().reshape(1, -1), box.upper.double().reshape(1, -1)
    if method == "ibp":
        lo, hi, _ = ibp_intervals(network, L, U)
        lb = lo @ A.clamp(min=0).T + hi @ A.clamp(max=0).T
        points = (L + U) / 2
    else:
        lb, coef = crown_lower(network, L, U, A)
        per_group = torch.zeros(1, int(group.max()) + 1, L.shape[1], dtype=torch.float64).index_add_(1, group, coef)
        points = torch.cat([(L + U) / 2, torch.where(per_group > 0, L[:, None], U[:, None])[0]])
    hit = satisfied(network, points, A, b, group)
    if hit.any():  # the margin of the counterexample itself (≤ 0)
        x = points[hit.nonzero()[0, 0]]
        return float(disjunct_margin(network(x[None]) @ A.T - b, group, int(group.max()) + 1)[0]), x
    return float(disjunct_margin(lb.reshape(1, -1) - b, group, int(group.max()) + 1)[0]), None


def check(net: nn.Module | Network, prop: Property, method: str = "bab", *, timeout: float | None = 60.0) -> Verdict:
    """Decide ``prop`` for ``net`` (see the module docstring); ``timeout`` in seconds for the whole
    check (MILP and BaB; None: no limit)."""
    if method not in CHECK_METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(CHECK_METHODS)}")
    network = _network(net, prop.cases[0][0].shape)
    t0 = time.perf_counter()
    margin, status, witness, boxes = float("inf"), "verified", None, 0
    for box, disjuncts in prop.cases:
        left = None if timeout is None else max(timeout - (time.perf_counter() - t0), 1e-3)
        if method in ("ibp", "crown"):
            m, x = _one_bound(network, box, disjuncts, method)
            case_status = "falsified" if x is not None else ("verified" if m > 0 else "unknown")
        elif method == "bab":
            found = branch_and_bound(network, box.lower, box.upper, disjuncts, timeout=left)
            m, x, case_status, boxes = found.margin, found.counterexample, found.status, boxes + found.boxes
        else:  # MILP: a quick attack and CROWN's bound first, then decide each disjunct exactly
            m, x = _one_bound(network, box, disjuncts, "crown")
            case_status = "falsified" if x is not None else "verified"
            for A, b in ([] if x is not None else disjuncts):
                left = None if timeout is None else max(timeout - (time.perf_counter() - t0), 1e-3)
                opt = largest_violation(network, box.lower, box.upper, A, b, left, decide=True)
                if opt.status == "infeasible":
                    continue  # proved impossible
                A_, b_, g_ = stack_disjuncts([(A, b)])
                if opt.x.isfinite().all() and bool(satisfied(network, opt.x[None], A_, b_, g_, CONFIRM_TOL)[0]):
                    x, case_status = opt.x, "falsified"
                    m = float(disjunct_margin(network(x[None]) @ A_.T - b_, g_, 1)[0])
                    break
                case_status = "unknown"  # time out, or a point the network does not confirm
            m = max(m, 0.0) if case_status == "verified" else m
        margin = float("nan") if m != m or margin != margin else min(margin, m)  # NaN: nothing known
        if case_status == "falsified":
            status, witness = "falsified", x.reshape(box.shape)
            break
        if case_status == "unknown":
            status = "unknown"
    detail = {"cases": len(prop.cases), "network": network.name}
    if method == "bab":
        detail["boxes"] = boxes
    return Verdict(provenance=_provenance(network, [box for box, _ in prop.cases], method=method, timeout=timeout),
                   property=prop.name, status=status, method=method, margin=margin, counterexample=witness,
                   seconds=time.perf_counter() - t0, detail=detail)


def robustness(net: nn.Module | Network, x: torch.Tensor, eps: float, *, label: int | None = None,
               method: str = "crown", clip: tuple[float, float] | None = None,
               timeout: float | None = 60.0) -> Verdict:
    """Can any input within L∞ distance eps of x change the class from ``label`` (default: the
    predicted one)? A ``Property.robustness`` checked by ``check``; margin = min_j (y_label − y_j)
    as the method bounds it."""
    network = _network(net, tuple(x.shape))
    logits = network(x.double().reshape(1, -1))[0]
    label = int(logits.argmax()) if label is None else int(label)
    return check(network, Property.robustness(x, eps, label, logits.numel(), clip), method, timeout=timeout)


def monotonicity(net: nn.Module | Network, region: Box, *, input_index: int, output_index: int = 0,
                 method: str = "bounds", time_limit: float | None = None) -> Verdict:
    """Is output k non-decreasing in input i over the box? ``bounds``: interval bounds on ∂f_k/∂x_i
    (verified when ≥ 0 everywhere, else unknown); ``milp`` (ReLU/LeakyReLU): the largest fall
    f_k(x) − f_k(x') with x' = x except x'_i ≥ x_i, exactly — verified when ≤ 0, falsified with the
    pair [x, x'] (confirmed by re-running the network) when > 0."""
    if method not in ("bounds", "milp"):
        raise ValueError(f"method={method!r}; valid: 'bounds', 'milp'")
    network = _network(net, region.shape)
    if not 0 <= output_index < network.n_outputs:
        raise ValueError(f"output index {output_index} out of range: the network has {network.n_outputs} outputs")
    prop = f"output {output_index} non-decreasing in input {input_index} over the box"
    prov = _provenance(network, [region], method=method, input_index=input_index, output_index=output_index)
    t = time.perf_counter()
    if method == "bounds":
        g_lo, _ = gradient_intervals(network, region.lower, region.upper, input_index)
        margin = float(g_lo[output_index])
        return Verdict(provenance=prov, property=prop, status="verified" if margin >= 0 else "unknown",
                       method="gradient bounds", margin=margin, counterexample=None, seconds=time.perf_counter() - t)
    if not 0 <= input_index < network.n_inputs:
        raise ValueError(f"input index {input_index} out of range: the network has {network.n_inputs} inputs")
    opt = largest_decrease(network, region.lower, region.upper, input_index, output_index, time_limit)
    fall, x, x2, status = opt.value, opt.x, opt.x2, opt.status
    counterexample = None
    if status != "optimal":
        status = "unknown"
    elif fall <= 1e-9:
        status = "verified"
    else:
        ys = network(torch.stack([x, x2]))[:, output_index]
        status = "unknown"
        if float(ys[1]) < float(ys[0]):  # the network confirms: input i grew, the output fell
            status, counterexample = "falsified", torch.stack([x, x2]).reshape(2, *region.shape)
    return Verdict(provenance=prov, property=prop, status=status, method=method, margin=-fall,
                   counterexample=counterexample, seconds=time.perf_counter() - t)
