"""Sound output bounds over an input box: interval bound propagation and CROWN.

- ``ibp``: push the interval [l, u] through each layer (W⁺u + W⁻l + b for affine maps, the
  monotone activation at the ends).
- ``crown`` (Zhang et al. 2018): bound every activation between two lines on its pre-activation
  interval, then propagate a linear function of the output backwards to the input and minimise it
  over the box in closed form. Pre-activation intervals are themselves CROWN bounds of the
  sub-network, intersected with IBP's, so CROWN is never looser than IBP.

Relaxations on an unstable interval l < 0 < u: ReLU upper chord, lower slope 1 if u ≥ −l else 0;
LeakyReLU(a) chord above, slope 1 or a below; Sigmoid/Tanh: chord and tangent at the midpoint
where the interval is on one side of 0 (convex or concave there), constant σ(l), σ(u) otherwise.
All arithmetic in float64.
"""

from __future__ import annotations

import torch

from .network import Activation, Affine, run_layers


def _act_bounds(act: Activation, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return act(l), act(u)  # every supported activation is monotone


def ibp(layers: list, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(output lower, output upper, [(l, u) of each activation's input]) over the box [lower, upper]."""
    l, u = lower.double().flatten(), upper.double().flatten()
    pre = []
    for layer in layers:
        if isinstance(layer, Affine):
            Wp, Wn = layer.W.clamp(min=0), layer.W.clamp(max=0)
            l, u = Wp @ l + Wn @ u + layer.b, Wp @ u + Wn @ l + layer.b
        else:
            pre.append((l, u))
            l, u = _act_bounds(layer, l, u)
    return l, u, pre


def relaxation(act: Activation, l: torch.Tensor, u: torch.Tensor):
    """Lines a_L·z + b_L ≤ act(z) ≤ a_U·z + b_U valid for z in [l, u] (elementwise)."""
    fl, fu = act(l), act(u)
    width = (u - l).clamp(min=1e-12)
    chord = (fu - fl) / width
    chord_b = fl - chord * l
    if act.kind in ("relu", "leaky_relu"):
        a = 0.0 if act.kind == "relu" else act.slope
        stable_pos, stable_neg = l >= 0, u <= 0
        lower_slope = torch.where(u >= -l, torch.ones_like(l), torch.full_like(l, a))
        aL = torch.where(stable_pos, 1.0, torch.where(stable_neg, a, lower_slope))
        bL = torch.zeros_like(l)
        aU = torch.where(stable_pos, 1.0, torch.where(stable_neg, a, chord))
        bU = torch.where(stable_pos | stable_neg, 0.0, chord_b)
        return aL, bL, aU, bU
    # sigmoid / tanh: convex for z ≤ 0, concave for z ≥ 0
    mid = (l + u) / 2
    fm = act(mid)
    deriv = fm * (1 - fm) if act.kind == "sigmoid" else 1 - fm ** 2
    tangent_b = fm - deriv * mid
    concave, convex = l >= 0, u <= 0
    aL = torch.where(concave, chord, torch.where(convex, deriv, torch.zeros_like(l)))
    bL = torch.where(concave, chord_b, torch.where(convex, tangent_b, fl))
    aU = torch.where(concave, deriv, torch.where(convex, chord, torch.zeros_like(l)))
    bU = torch.where(concave, tangent_b, torch.where(convex, chord_b, fu))
    return aL, bL, aU, bU


def _backward(layers: list, spec: torch.Tensor, relax: list, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Lower bound of spec · layers(x) over the box: spec [k, out] -> [k]."""
    lam, bias = spec.double(), torch.zeros(spec.shape[0], dtype=torch.float64)
    acts = len(relax)
    for layer in reversed(layers):
        if isinstance(layer, Affine):
            bias = bias + lam @ layer.b
            lam = lam @ layer.W
        else:
            acts -= 1
            aL, bL, aU, bU = relax[acts]
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            bias = bias + pos @ bL + neg @ bU
            lam = pos * aL + neg * aU
    return lam.clamp(min=0) @ lower + lam.clamp(max=0) @ upper + bias


def crown(layers: list, lower: torch.Tensor, upper: torch.Tensor,
          spec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(lower, upper) of spec · f(x) over the box (spec defaults to the identity: the outputs), and
    the activation input intervals used."""
    lower, upper = lower.double().flatten(), upper.double().flatten()
    _, _, ibp_pre = ibp(layers, lower, upper)
    relax, pre = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, Activation):
            sub = layers[:i]
            n = sub[-1].W.shape[0]
            eye = torch.eye(n, dtype=torch.float64)
            l = torch.maximum(_backward(sub, eye, relax, lower, upper), ibp_pre[len(pre)][0])
            u = torch.minimum(-_backward(sub, -eye, relax, lower, upper), ibp_pre[len(pre)][1])
            pre.append((l, u))
            relax.append(relaxation(layer, l, u))
    out = layers[-1].W.shape[0]
    spec = torch.eye(out, dtype=torch.float64) if spec is None else spec.double()
    lo = _backward(layers, spec, relax, lower, upper)
    hi = -_backward(layers, -spec, relax, lower, upper)
    if spec.shape[0] == out and torch.equal(spec, torch.eye(out, dtype=torch.float64)):
        ibp_lo, ibp_hi, _ = ibp(layers, lower, upper)
        lo, hi = torch.maximum(lo, ibp_lo), torch.minimum(hi, ibp_hi)
    return lo, hi, pre


def sample_range(layers: list, lower: torch.Tensor, upper: torch.Tensor, n: int = 10_000,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest output seen on n uniform samples of the box (an inner estimate)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = lower.double().flatten(), upper.double().flatten()
    x = lo + (hi - lo) * torch.rand(n, lo.numel(), generator=g, dtype=torch.float64)
    y = run_layers(layers, x)
    return y.min(0).values, y.max(0).values


def _slope_range(act: Activation, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[min, max] of act'(z) over z in [l, u] (elementwise)."""
    if act.kind in ("relu", "leaky_relu"):
        a = 0.0 if act.kind == "relu" else act.slope
        lo = torch.where(l >= 0, 1.0, a) * torch.ones_like(l)
        hi = torch.where(u <= 0, a, 1.0) * torch.ones_like(u)
        return torch.minimum(lo, hi), torch.maximum(lo, hi)

    def deriv(z):
        f = act(z)
        return f * (1 - f) if act.kind == "sigmoid" else 1 - f ** 2

    # act' is unimodal with its peak at 0: largest at the point nearest 0, smallest at an end
    return torch.minimum(deriv(l), deriv(u)), deriv(torch.clamp(torch.zeros_like(l), l, u))


def gradient_bounds(layers: list, lower: torch.Tensor, upper: torch.Tensor, input_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on ∂f/∂x_i [outputs] over the box: the Jacobian column pushed forward with interval
    arithmetic, each activation's slope in its range on the CROWN pre-activation interval."""
    _, _, pre = crown(layers, lower, upper)
    n = lower.numel()
    if not 0 <= input_index < n:
        raise ValueError(f"input index {input_index} out of range: the network has {n} inputs")
    g_lo = torch.zeros(n, dtype=torch.float64)
    g_lo[input_index] = 1.0
    g_hi = g_lo.clone()
    acts = 0
    for layer in layers:
        if isinstance(layer, Affine):
            Wp, Wn = layer.W.clamp(min=0), layer.W.clamp(max=0)
            g_lo, g_hi = Wp @ g_lo + Wn @ g_hi, Wp @ g_hi + Wn @ g_lo
        else:
            s_lo, s_hi = _slope_range(layer, *pre[acts])
            acts += 1
            cands = torch.stack([g_lo * s_lo, g_lo * s_hi, g_hi * s_lo, g_hi * s_hi])
            g_lo, g_hi = cands.min(0).values, cands.max(0).values
    return g_lo, g_hi
