"""Exact optimisation over a ReLU / LeakyReLU network by mixed-integer linear programming.

Every node gets continuous variables bounded by its CROWN interval; affine maps and sums are
equality rows; each unstable activation (input interval l < 0 < u) gets a binary δ (active or not)
and the big-M rows that make y = act(z) exact; stable ones are linear. SciPy's HiGHS solves the
program over the input box; the optimum comes with its input, which callers re-run through the
network (a counterexample is only reported once the network confirms it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from .bounds import intermediate_bounds
from .network import Activation, Affine, Network


@dataclass
class Optimum:
    value: float  # the optimum of the objective (float64)
    x: torch.Tensor  # an input attaining it [in]
    status: str  # "optimal", or why not ("time limit", ...)
    x2: torch.Tensor | None = None  # a second input, where the objective compares two (``largest_decrease``)


class _Program:
    """Variables and sparse rows of the MILP, grown node by node."""

    def __init__(self):
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[int] = []
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []

    def variables(self, lo, hi, integer: bool = False) -> np.ndarray:
        start = len(self.lo)
        self.lo += [float(v) for v in lo]
        self.hi += [float(v) for v in hi]
        self.integer += [int(integer)] * len(lo)
        return np.arange(start, len(self.lo))

    def rows(self, cols: np.ndarray, vals: np.ndarray, lo, hi) -> None:
        """One row per row of vals: Σ_j vals[i, j] · var[cols[i, j]] ∈ [lo[i], hi[i]] (zeros skipped)."""
        first = len(self.row_lo)
        k = vals.shape[0]
        rows = np.broadcast_to(np.arange(first, first + k)[:, None], vals.shape)
        keep = vals != 0
        self.r += rows[keep].tolist()
        self.c += np.broadcast_to(cols, vals.shape)[keep].tolist()
        self.v += vals[keep].tolist()
        self.row_lo += np.broadcast_to(np.asarray(lo, dtype=float), (k,)).tolist()
        self.row_hi += np.broadcast_to(np.asarray(hi, dtype=float), (k,)).tolist()

    def solve(self, objective: np.ndarray, time_limit: float | None):
        A = coo_matrix((self.v, (self.r, self.c)), shape=(len(self.row_lo), len(self.lo))).tocsr()
        options = {"time_limit": time_limit} if time_limit else {}
        return milp(objective, integrality=np.array(self.integer), bounds=Bounds(self.lo, self.hi),
                    constraints=LinearConstraint(A, self.row_lo, self.row_hi), options=options)


def _check_piecewise_linear(net: Network) -> None:
    for a in net.activations:
        kind = net.nodes[a].op.kind
        if kind not in ("relu", "leaky_relu"):
            raise ValueError(f"exact (MILP) verification needs piecewise-linear activations (ReLU, LeakyReLU); "
                             f"this network has {kind}: use method='crown', 'ibp' or 'bab'")


def encode(net: Network, lower: torch.Tensor, upper: torch.Tensor,
           prog: _Program | None = None) -> tuple[_Program, np.ndarray, np.ndarray]:
    """Add one copy of the network on the box to ``prog`` (a new one by default): (program, input
    variables, output variables)."""
    _check_piecewise_linear(net)
    L, U = lower.double().reshape(1, -1), upper.double().reshape(1, -1)
    ivals, _ = intermediate_bounds(net, L, U)
    prog = prog or _Program()
    var = {0: prog.variables(L[0].tolist(), U[0].tolist())}
    for i, node in enumerate(net.nodes[1:], 1):
        lo, hi = (t[0].numpy() for t in ivals[i])
        z = var[i] = prog.variables(lo, hi)
        op = node.op
        if isinstance(op, Affine):  # z − W y = b
            y = var[node.inputs[0]]
            cols = np.concatenate([z[:, None], np.broadcast_to(y, (len(z), len(y)))], 1)
            vals = np.concatenate([np.ones((len(z), 1)), -op.W.numpy()], 1)
            prog.rows(cols, vals, op.b.numpy(), op.b.numpy())
        elif not isinstance(op, Activation):  # z − Σ c x = 0
            cols = np.stack([z] + [var[j] for j in node.inputs], 1)
            vals = np.broadcast_to(np.array([1.0] + [-c for c in op.coef]), cols.shape)
            prog.rows(cols, vals, np.zeros(len(z)), np.zeros(len(z)))
        else:
            x = var[node.inputs[0]]
            l, u = (t[0].numpy() for t in ivals[node.inputs[0]])
            a = 0.0 if op.kind == "relu" else op.slope
            on, off = l >= 0, u <= 0
            both = np.stack([z, x], 1)
            for mask, slope in ((on, 1.0), (off, a)):  # stable: y = z or y = a z
                if mask.any():
                    prog.rows(both[mask], np.tile([1.0, -slope], (int(mask.sum()), 1)), 0.0, 0.0)
            unstable = ~(on | off)
            if unstable.any():
                k = int(unstable.sum())
                d = prog.variables([0.0] * k, [1.0] * k, integer=True)
                yz = both[unstable]
                lu, uu = l[unstable], u[unstable]
                prog.rows(yz, np.tile([1.0, -1.0], (k, 1)), 0.0, np.inf)  # y ≥ z
                prog.rows(yz, np.tile([1.0, -a], (k, 1)), 0.0, np.inf)  # y ≥ a z
                cols = np.concatenate([yz, d[:, None]], 1)
                prog.rows(cols, np.stack([np.ones(k), -a * np.ones(k), -(1 - a) * uu], 1), -np.inf, 0.0)
                # ^ y ≤ a z + (1−a) u δ ;  y ≤ z − (1−a) l (1 − δ):
                prog.rows(cols, np.stack([np.ones(k), -np.ones(k), -(1 - a) * lu], 1), -np.inf, -(1 - a) * lu)
    return prog, var[0], var[len(net.nodes) - 1]


def _result(res, x: np.ndarray, sign: float) -> Optimum:
    if res.x is None:
        return Optimum(float("nan"), torch.full((len(x),), float("nan")), res.message)
    value = sign * float(res.fun) if res.fun is not None else float("nan")
    return Optimum(value, torch.tensor(res.x[x], dtype=torch.float64), "optimal" if res.status == 0 else res.message)


def optimise(net: Network, lower: torch.Tensor, upper: torch.Tensor, c: torch.Tensor, *,
             maximise: bool = False, time_limit: float | None = None) -> Optimum:
    """min (or max) of c · f(x) over the box, exactly."""
    prog, x, out = encode(net, lower, upper)
    objective = np.zeros(len(prog.lo))
    sign = -1.0 if maximise else 1.0
    objective[out] = sign * c.double().numpy()
    return _result(prog.solve(objective, time_limit), x, sign)


def largest_violation(net: Network, lower: torch.Tensor, upper: torch.Tensor, A: torch.Tensor, b: torch.Tensor,
                      time_limit: float | None = None, *, decide: bool = False) -> Optimum:
    """max t such that A f(x) + t ≤ b for some x in the box: t ≥ 0 means an input satisfies every
    row of A y ≤ b (a counterexample to a property that forbids that); t < 0 proves none does.

    ``decide``: only whether such an input exists (t fixed at 0, no objective: the solver stops at
    the first one, or proves there is none — status "infeasible" — far sooner than it finds the
    optimum); value 0 when one exists."""
    prog, x, out = encode(net, lower, upper)
    t = prog.variables([0.0 if decide else -np.inf], [0.0 if decide else np.inf])[0]
    cols = np.concatenate([np.broadcast_to(out, (A.shape[0], len(out))), np.full((A.shape[0], 1), t)], 1)
    prog.rows(cols, np.concatenate([A.double().numpy(), np.ones((A.shape[0], 1))], 1), -np.inf, b.double().numpy())
    objective = np.zeros(len(prog.lo))
    if not decide:
        objective[t] = -1.0
    res = prog.solve(objective, time_limit)
    if res.status == 2:  # infeasible: no input satisfies the rows
        return Optimum(-float("inf"), torch.full((len(x),), float("nan")), "infeasible")
    return _result(res, x, -1.0)


def largest_decrease(net: Network, lower: torch.Tensor, upper: torch.Tensor, input_index: int, output_index: int,
                     time_limit: float | None = None) -> Optimum:
    """max f_k(x) − f_k(x') over x, x' in the box with x'_i ≥ x_i and x'_j = x_j otherwise: how much
    output k can fall as input i grows (≤ 0 proves f_k non-decreasing in x_i). Two copies of the
    network in one MILP. Returns the optimum with x and x' (``Optimum.x2``)."""
    prog, x, out = encode(net, lower, upper)
    prog, x2, out2 = encode(net, lower, upper, prog)
    hi = np.zeros(len(x))
    hi[input_index] = np.inf
    prog.rows(np.stack([x2, x], 1), np.tile([1.0, -1.0], (len(x), 1)), np.zeros(len(x)), hi)
    objective = np.zeros(len(prog.lo))
    objective[out[output_index]] = -1.0  # maximise f(x) − f(x')
    objective[out2[output_index]] = 1.0
    res = prog.solve(objective, time_limit)
    if res.x is None:
        nan = torch.full((len(x),), float("nan"))
        return Optimum(float("nan"), nan, res.message, nan)
    status = "optimal" if res.status == 0 else res.message
    return Optimum(-float(res.fun), torch.tensor(res.x[x], dtype=torch.float64), status,
                   torch.tensor(res.x[x2], dtype=torch.float64))


def exact_intervals(net: Network, lower: torch.Tensor, upper: torch.Tensor,
                 time_limit: float | None = None) -> tuple[torch.Tensor, torch.Tensor, list[Optimum]]:
    """The exact range of every output over the box: (lower, upper, the 2·outputs optima)."""
    optima = []
    for k in range(net.n_outputs):
        c = torch.zeros(net.n_outputs, dtype=torch.float64)
        c[k] = 1.0
        optima += [optimise(net, lower, upper, c, time_limit=time_limit),
                   optimise(net, lower, upper, c, maximise=True, time_limit=time_limit)]
    lo = torch.tensor([o.value for o in optima[0::2]], dtype=torch.float64)
    hi = torch.tensor([o.value for o in optima[1::2]], dtype=torch.float64)
    return lo, hi, optima
