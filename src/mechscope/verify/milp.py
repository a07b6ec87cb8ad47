"""Exact optimisation over a ReLU / LeakyReLU network by mixed-integer linear programming.

Each unstable neuron (pre-activation interval l < 0 < u, from CROWN) gets a binary δ (active or
not) and the big-M constraints that make y = act(z) exact; stable neurons are linear. SciPy's
HiGHS solves min c·f(x) over the input box; the optimum comes with its input, which callers re-run
through the network (a counterexample is only reported once the network confirms it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from .bounds import crown
from .network import Activation, Affine


@dataclass
class Optimum:
    value: float  # the optimum of c·f(x) (float64)
    x: torch.Tensor  # an input attaining it [in]
    status: str  # "optimal", or why not ("time limit", ...)


class _Program:
    """Variables and rows of the MILP, grown layer by layer."""

    def __init__(self):
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []

    def variables(self, lo, hi, integer: bool = False) -> list[int]:
        start = len(self.lo)
        self.lo += [float(v) for v in lo]
        self.hi += [float(v) for v in hi]
        self.integer += [int(integer)] * len(lo)
        return list(range(start, len(self.lo)))

    def row(self, coef: dict[int, float], lo: float, hi: float) -> None:
        self.rows.append((coef, lo, hi))


def _encode(layers: list, lower: torch.Tensor, upper: torch.Tensor,
            prog: _Program | None = None) -> tuple[_Program, list[int], list[int]]:
    """Add one copy of the network on the box to ``prog`` (a new one by default): (program, input
    variables, output variables)."""
    for layer in layers:
        if isinstance(layer, Activation) and layer.kind not in ("relu", "leaky_relu"):
            raise ValueError(f"exact (MILP) verification needs piecewise-linear activations (ReLU, LeakyReLU); "
                             f"this network has {layer.kind}: use method='crown' or 'ibp'")
    _, _, pre = crown(layers, lower, upper)
    prog = prog or _Program()
    x = prog.variables(lower.double().flatten().tolist(), upper.double().flatten().tolist())
    current, acts = x, 0
    for layer in layers:
        if isinstance(layer, Affine):
            W, b = layer.W.numpy(), layer.b.numpy()
            if acts < len(pre):
                zl, zu = pre[acts][0].numpy(), pre[acts][1].numpy()
            else:  # the output: unbounded but for the row that defines it
                zl, zu = np.full(W.shape[0], -np.inf), np.full(W.shape[0], np.inf)
            z = prog.variables(zl, zu)
            for i, zi in enumerate(z):  # z_i − W_i·y = b_i
                coef = {zi: 1.0}
                for j, yj in enumerate(current):
                    if W[i, j] != 0.0:
                        coef[yj] = coef.get(yj, 0.0) - float(W[i, j])
                prog.row(coef, float(b[i]), float(b[i]))
            current = z
            continue
        l, u = pre[acts][0].numpy(), pre[acts][1].numpy()
        acts += 1
        a = 0.0 if layer.kind == "relu" else layer.slope
        ylo = np.where(l >= 0, l, np.minimum(a * l, 0.0))
        yhi = np.where(u >= 0, u, a * u)
        y = prog.variables(ylo, yhi)
        for i, (zi, yi) in enumerate(zip(current, y)):
            if l[i] >= 0:  # active: y = z
                prog.row({yi: 1.0, zi: -1.0}, 0.0, 0.0)
            elif u[i] <= 0:  # inactive: y = a z
                prog.row({yi: 1.0, zi: -a}, 0.0, 0.0)
            else:
                d = prog.variables([0.0], [1.0], integer=True)[0]
                prog.row({yi: 1.0, zi: -1.0}, 0.0, np.inf)  # y ≥ z
                prog.row({yi: 1.0, zi: -a}, 0.0, np.inf)  # y ≥ a z
                prog.row({yi: 1.0, zi: -a, d: -(1 - a) * float(u[i])}, -np.inf, 0.0)  # y ≤ a z + (1−a) u δ
                prog.row({yi: 1.0, zi: -1.0, d: -(1 - a) * float(l[i])}, -np.inf, -(1 - a) * float(l[i]))
                # ^ y ≤ z − (1−a) l (1 − δ)
        current = y
    return prog, x, current


def _solve(prog: _Program, objective: np.ndarray, time_limit: float | None):
    A = lil_matrix((len(prog.rows), len(prog.lo)))
    lo, hi = np.empty(len(prog.rows)), np.empty(len(prog.rows))
    for r, (coef, rl, rh) in enumerate(prog.rows):
        for k, v in coef.items():
            A[r, k] = v
        lo[r], hi[r] = rl, rh
    return milp(objective, integrality=np.array(prog.integer), bounds=Bounds(prog.lo, prog.hi),
                constraints=LinearConstraint(A.tocsr(), lo, hi), options={"time_limit": time_limit} if time_limit else {})


def optimise(layers: list, lower: torch.Tensor, upper: torch.Tensor, c: torch.Tensor, *,
             maximise: bool = False, time_limit: float | None = None) -> Optimum:
    """min (or max) of c · f(x) over the box, exactly."""
    prog, x, out = _encode(layers, lower, upper)
    objective = np.zeros(len(prog.lo))
    sign = -1.0 if maximise else 1.0
    for k, v in zip(out, c.double().tolist()):
        objective[k] = sign * v
    res = _solve(prog, objective, time_limit)
    if res.x is None:
        return Optimum(float("nan"), torch.full((len(x),), float("nan")), res.message)
    status = "optimal" if res.status == 0 else res.message
    return Optimum(sign * float(res.fun), torch.tensor(res.x[x], dtype=torch.float64), status)


def largest_decrease(layers: list, lower: torch.Tensor, upper: torch.Tensor, input_index: int, output_index: int,
                     time_limit: float | None = None) -> tuple[float, torch.Tensor, torch.Tensor, str]:
    """max f_k(x) − f_k(x') over x, x' in the box with x'_i ≥ x_i and x'_j = x_j otherwise: how much
    output k can fall as input i grows (≤ 0 proves f_k non-decreasing in x_i). Two copies of the
    network in one MILP. Returns (value, x, x', status)."""
    prog, x, out = _encode(layers, lower, upper)
    prog, x2, out2 = _encode(layers, lower, upper, prog)
    for j, (a, b) in enumerate(zip(x, x2)):
        prog.row({b: 1.0, a: -1.0}, 0.0, np.inf if j == input_index else 0.0)
    objective = np.zeros(len(prog.lo))
    objective[out[output_index]] = -1.0  # maximise f(x) − f(x')
    objective[out2[output_index]] = 1.0
    res = _solve(prog, objective, time_limit)
    if res.x is None:
        nan = torch.full((len(x),), float("nan"))
        return float("nan"), nan, nan, res.message
    status = "optimal" if res.status == 0 else res.message
    return (-float(res.fun), torch.tensor(res.x[x], dtype=torch.float64), torch.tensor(res.x[x2], dtype=torch.float64),
            status)


def exact_bounds(layers: list, lower: torch.Tensor, upper: torch.Tensor,
                 time_limit: float | None = None) -> tuple[torch.Tensor, torch.Tensor, list[Optimum]]:
    """The exact range of every output over the box: (lower, upper, the 2·outputs optima)."""
    n_out = layers[-1].W.shape[0]
    optima = []
    for k in range(n_out):
        c = torch.zeros(n_out, dtype=torch.float64)
        c[k] = 1.0
        optima += [optimise(layers, lower, upper, c, time_limit=time_limit),
                   optimise(layers, lower, upper, c, maximise=True, time_limit=time_limit)]
    lo = torch.tensor([o.value for o in optima[0::2]], dtype=torch.float64)
    hi = torch.tensor([o.value for o in optima[1::2]], dtype=torch.float64)
    return lo, hi, optima
