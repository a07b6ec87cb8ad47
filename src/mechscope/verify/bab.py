"""Branch and bound on the input box: prove that no input satisfies any of a set of linear output
conditions, or find one that does.

The condition to rule out is a disjunction of conjunctions ("disjuncts"), each A y ≤ b over the
outputs y = f(x) (VNNLIB's meaning of a property's assertions). For a batch of boxes at once:

1. bound: CROWN lower bounds of every row A_j y − b_j; a disjunct is impossible on a box when one
   of its rows has a positive lower bound; a box is done when every disjunct is impossible;
2. attack: run the network at each open box's centre and at the corner that minimises CROWN's
   linear bound of each disjunct; a point satisfying every row of a disjunct is a counterexample
   (confirmed by the network, so never spurious);
3. branch: split each open box in half along the input with the largest |coefficient| × width in
   CROWN's bound (the input the bound is most sensitive to).

Complete for a property with positive slack (boxes shrink until CROWN is exact enough), stopped
by ``timeout`` otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..results import Provenance, Result
from .bounds import crown_lower
from .network import Network


@dataclass
class Search(Result):
    """What a branch-and-bound search found: ``status`` (verified | falsified | unknown), ``margin``
    (verified: the smallest proof margin of any leaf; else the worst open lower bound), a confirmed
    ``counterexample`` [in] when falsified, the ``boxes`` bounded and the ``seconds`` spent."""

    status: str
    margin: float
    counterexample: torch.Tensor | None
    boxes: int
    seconds: float
    title: ClassVar[str] = "Branch and bound"

    def summary(self) -> str:
        found = "; counterexample confirmed by the network" if self.counterexample is not None else ""
        return (f"branch and bound on {self.provenance.model}: {self.status.upper()} after {self.boxes} boxes in "
                f"{self.seconds:.3f} s (margin {self.margin:+.4g}){found}")

    def evidence(self) -> dict:
        margin = self.margin if abs(self.margin) < float("inf") else None  # JSON has no inf
        return {"status": self.status, "margin": margin, "boxes": self.boxes}


def stack_disjuncts(disjuncts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All rows as one spec: (A [m, out], b [m], group [m] = which disjunct each row belongs to)."""
    A = torch.cat([a.double().reshape(-1, a.shape[-1]) for a, _ in disjuncts])
    b = torch.cat([v.double().reshape(-1) for _, v in disjuncts])
    group = torch.cat([torch.full((a.reshape(-1, a.shape[-1]).shape[0],), k) for k, (a, _) in enumerate(disjuncts)])
    return A, b, group


def satisfied(net: Network, x: torch.Tensor, A: torch.Tensor, b: torch.Tensor, group: torch.Tensor,
              tol: float = 0.0) -> torch.Tensor:
    """For points x [N, in]: does f(x) satisfy every row of some disjunct (within tol)? [N] bool."""
    slack = net(x.double()) @ A.T - b  # [N, m], ≤ 0 where the row holds
    n_groups = int(group.max()) + 1
    worst = torch.full((x.shape[0], n_groups), -torch.inf, dtype=torch.float64)
    worst = worst.scatter_reduce(1, group.expand_as(slack), slack, reduce="amax")
    return (worst <= tol).any(1)


def branch_and_bound(net: Network, lower: torch.Tensor, upper: torch.Tensor,
                     disjuncts: list[tuple[torch.Tensor, torch.Tensor]], *, timeout: float | None = 60.0,
                     batch_size: int = 256, max_open: int = 2_000_000) -> Search:
    """Search the box [lower, upper] (see the module docstring)."""
    t0 = time.perf_counter()
    prov = Provenance(model=net.name, fingerprint=net.fingerprint(), dataset="input box",
                      params={"disjuncts": len(disjuncts), "timeout": timeout, "batch": batch_size, "max_open": max_open})
    A, b, group = stack_disjuncts(disjuncts)
    n_groups = int(group.max()) + 1
    L, U = lower.double().reshape(1, -1), upper.double().reshape(1, -1)
    proved = torch.inf
    bounded = 0
    while L.shape[0]:
        if timeout is not None and time.perf_counter() - t0 > timeout or L.shape[0] > max_open:
            lb, _ = crown_lower(net, L[-batch_size:], U[-batch_size:], A)
            open_margin = disjunct_margin(lb - b, group, n_groups).min()
            return Search(prov, "unknown", float(open_margin), None, bounded, time.perf_counter() - t0)
        Lb, Ub, L, U = L[-batch_size:], U[-batch_size:], L[:-batch_size], U[:-batch_size]
        lb, coef = crown_lower(net, Lb, Ub, A)  # [B, m], [B, m, in]
        bounded += Lb.shape[0]
        margin = disjunct_margin(lb - b, group, n_groups)  # [B]
        # attack: centres, and per disjunct the corner minimising the sum of its rows' linear bounds
        per_group = torch.zeros(Lb.shape[0], n_groups, Lb.shape[1], dtype=torch.float64)
        per_group.index_add_(1, group, coef)
        corners = torch.where(per_group > 0, Lb[:, None], Ub[:, None]).reshape(-1, Lb.shape[1])
        points = torch.cat([(Lb + Ub) / 2, corners])
        hit = satisfied(net, points, A, b, group)
        if hit.any():
            x = points[hit.nonzero()[0, 0]]
            at_x = float(disjunct_margin(net(x[None]) @ A.T - b, group, n_groups)[0])  # ≤ 0: how far it violates
            return Search(prov, "falsified", at_x, x, bounded, time.perf_counter() - t0)
        done = margin > 0
        if done.any():
            proved = min(proved, float(margin[done].min()))
        Lb, Ub, coef = Lb[~done], Ub[~done], coef[~done]
        if not len(Lb):
            continue
        score = coef.abs().sum(1) * (Ub - Lb)  # [B, in]
        dim = score.argmax(1)
        rows = torch.arange(len(Lb))
        mid = (Lb[rows, dim] + Ub[rows, dim]) / 2
        left_U, right_L = Ub.clone(), Lb.clone()
        left_U[rows, dim] = mid
        right_L[rows, dim] = mid
        L, U = torch.cat([L, Lb, right_L]), torch.cat([U, left_U, Ub])
    return Search(prov, "verified", proved, None, bounded, time.perf_counter() - t0)


def disjunct_margin(slack: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[B, m] lower bounds of A y − b -> [B]: min over disjuncts of the max over its rows (> 0: the
    box is proved)."""
    best = torch.full((slack.shape[0], n_groups), -torch.inf, dtype=torch.float64)
    best = best.scatter_reduce(1, group.expand_as(slack), slack, reduce="amax")
    return best.min(1).values
