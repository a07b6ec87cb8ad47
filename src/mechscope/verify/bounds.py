"""Sound output bounds over input boxes: interval bound propagation and CROWN.

- ``ibp_intervals``: push the interval [l, u] through each node (W⁺u + W⁻l + b for affine maps, the monotone
  activation at the ends, Σ of the scaled intervals for sums).
- ``crown_intervals`` (Zhang et al. 2018): bound every activation between two lines on its input interval,
  then propagate a linear function of the output backwards through the graph to the input (sums
  send it to each branch) and minimise it over the box in closed form. Activation input intervals
  are themselves CROWN bounds of the sub-network, intersected with IBP's, so CROWN is never looser
  than IBP.

Every function takes one box (lower, upper: [in]) or a batch of them ([B, in]) and answers in the
same form. Relaxations (``relaxation``): on l < 0 < u, ReLU's upper chord and lower slope 1 if
u ≥ −l else 0, LeakyReLU(a) likewise with slope a; Sigmoid / Tanh (convex below 0, concave above):
chord and tangent at the midpoint on a one-signed interval; across 0 the chord where it is valid
(f'(u) ≥ slope for the upper line, f'(l) ≥ slope for the lower), otherwise the tangent through
the far end point (its touching point found by bisection, kept on the sound side). float64.
"""

from __future__ import annotations

import torch

from .network import Activation, Affine, Network


def _boxes(net: Network, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Boxes as [B, in] float64 and whether a single box was given."""
    single = lower.numel() == net.n_inputs
    lo, hi = lower.double(), upper.double()
    if single:
        return lo.flatten()[None], hi.flatten()[None], True
    return lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1), False


def _unbatch(t: torch.Tensor, single: bool) -> torch.Tensor:
    return t[0] if single else t


def _interval(node, ivals: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP of one node from its inputs' intervals ([B, d] each)."""
    op = node.op
    l, u = ivals[node.inputs[0]]
    if isinstance(op, Affine):
        Wp, Wn = op.W.clamp(min=0), op.W.clamp(max=0)
        return l @ Wp.T + u @ Wn.T + op.b, u @ Wp.T + l @ Wn.T + op.b
    if isinstance(op, Activation):
        return op(l), op(u)  # every supported activation is monotone
    lo = sum(c * ivals[j][0] if c >= 0 else c * ivals[j][1] for c, j in zip(op.coef, node.inputs))
    hi = sum(c * ivals[j][1] if c >= 0 else c * ivals[j][0] for c, j in zip(op.coef, node.inputs))
    return lo, hi


def ibp_intervals(net: Network, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(output lower, output upper, [(l, u) of each activation's input]) over the box(es)."""
    L, U, single = _boxes(net, lower, upper)
    ivals = {0: (L, U)}
    for i, node in enumerate(net.nodes[1:], 1):
        ivals[i] = _interval(node, ivals)
    pre = [tuple(_unbatch(t, single) for t in ivals[net.nodes[a].inputs[0]]) for a in net.activations]
    lo, hi = ivals[len(net.nodes) - 1]
    return _unbatch(lo, single), _unbatch(hi, single), pre


def _deriv(act: Activation, z: torch.Tensor) -> torch.Tensor:
    f = act(z)
    return f * (1 - f) if act.kind == "sigmoid" else 1 - f ** 2


def _tangent_point(act: Activation, anchor: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, above: bool,
                   steps: int = 50) -> torch.Tensor:
    """d in [lo, hi] whose tangent passes above (``above``) / below the point (anchor, f(anchor)).

    g(d) = f(d) + f'(d)(anchor − d) − f(anchor) is increasing in d on both uses (concave part with
    the anchor left of it, convex part with the anchor right of it); the bracket end on the sound
    side (g ≥ 0 above, g ≤ 0 below) is returned."""
    fa = act(anchor)
    for _ in range(steps):
        mid = (lo + hi) / 2
        g = act(mid) + _deriv(act, mid) * (anchor - mid) - fa
        hi, lo = torch.where(g >= 0, mid, hi), torch.where(g >= 0, lo, mid)
    return hi if above else lo


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
    fm, dm = act(mid), _deriv(act, mid)
    concave, convex = l >= 0, u <= 0
    zero = torch.zeros_like(l)
    # across 0: the chord where valid, else the tangent through the far end point
    du = _tangent_point(act, l, zero, u.clamp(min=0), above=True)
    dl = _tangent_point(act, u, l.clamp(max=0), zero, above=False)
    up_chord = _deriv(act, u) >= chord
    lo_chord = _deriv(act, l) >= chord
    mU = torch.where(up_chord, chord, _deriv(act, du))
    cU = torch.where(up_chord, chord_b, act(du) - _deriv(act, du) * du)
    mL = torch.where(lo_chord, chord, _deriv(act, dl))
    cL = torch.where(lo_chord, chord_b, act(dl) - _deriv(act, dl) * dl)
    aL = torch.where(concave, chord, torch.where(convex, dm, mL))
    bL = torch.where(concave, chord_b, torch.where(convex, fm - dm * mid, cL))
    aU = torch.where(concave, dm, torch.where(convex, chord, mU))
    bU = torch.where(concave, fm - dm * mid, torch.where(convex, chord_b, cU))
    narrow = (u - l) < 1e-9  # a point: the constant bounds are exact enough and always sound
    aL, aU = torch.where(narrow, 0.0, aL), torch.where(narrow, 0.0, aU)
    bL, bU = torch.where(narrow, torch.minimum(fl, fu), bL), torch.where(narrow, torch.maximum(fl, fu), bU)
    return aL, bL, aU, bU


def _backward(net: Network, target: int, spec: torch.Tensor, relax: dict, L: torch.Tensor, U: torch.Tensor):
    """Lower bound of spec · node_target(x) over each box: spec [k, d] or [B, k, d] -> ([B, k], the
    linear coefficients on the input [B, k, in])."""
    B = L.shape[0]
    spec = spec.double()
    lam = {target: spec.expand(B, *spec.shape[-2:]) if spec.dim() == 2 else spec}
    bias = torch.zeros(B, spec.shape[-2], dtype=torch.float64)

    def push(j: int, A: torch.Tensor) -> None:
        lam[j] = lam[j] + A if j in lam else A

    for i in range(target, 0, -1):
        A = lam.pop(i, None)
        if A is None:
            continue
        node = net.nodes[i]
        op = node.op
        if isinstance(op, Affine):
            bias = bias + A @ op.b
            push(node.inputs[0], A @ op.W)
        elif isinstance(op, Activation):
            aL, bL, aU, bU = relax[i]
            pos, neg = A.clamp(min=0), A.clamp(max=0)
            bias = bias + (pos * bL[:, None]).sum(-1) + (neg * bU[:, None]).sum(-1)
            push(node.inputs[0], pos * aL[:, None] + neg * aU[:, None])
        else:
            for c, j in zip(op.coef, node.inputs):
                push(j, c * A)
    A0 = lam.get(0, torch.zeros(B, spec.shape[-2], L.shape[1], dtype=torch.float64))
    bound = (A0.clamp(min=0) * L[:, None]).sum(-1) + (A0.clamp(max=0) * U[:, None]).sum(-1) + bias
    return bound, A0


def intermediate_bounds(net: Network, L: torch.Tensor, U: torch.Tensor) -> tuple[dict, dict]:
    """(best interval of every node, relaxation of every activation): IBP forward, with each
    activation's input interval tightened by CROWN of the sub-network."""
    ivals = {0: (L, U)}
    relax: dict = {}
    act_inputs = {net.nodes[a].inputs[0] for a in net.activations}
    for i, node in enumerate(net.nodes[1:], 1):
        l, u = _interval(node, ivals)
        if i in act_inputs and not (isinstance(node.op, Activation)):
            eye = torch.eye(node.size, dtype=torch.float64)
            cl, _ = _backward(net, i, eye, relax, L, U)
            cu, _ = _backward(net, i, -eye, relax, L, U)
            l, u = torch.maximum(l, cl), torch.minimum(u, -cu)
        ivals[i] = (l, u)
        if isinstance(node.op, Activation):
            relax[i] = relaxation(node.op, *ivals[node.inputs[0]])
    return ivals, relax


def crown_intervals(net: Network, lower: torch.Tensor, upper: torch.Tensor,
          spec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(lower, upper) of spec · f(x) over the box(es) (spec [k, out] defaults to the identity: the
    outputs), and the activation input intervals used."""
    L, U, single = _boxes(net, lower, upper)
    ivals, relax = intermediate_bounds(net, L, U)
    out = len(net.nodes) - 1
    spec = torch.eye(net.n_outputs, dtype=torch.float64) if spec is None else spec.double()
    lo, _ = _backward(net, out, spec, relax, L, U)
    hi, _ = _backward(net, out, -spec, relax, L, U)
    hi = -hi
    ol, ou = ivals[out]  # never looser than IBP on spec · y
    sp, sn = spec.clamp(min=0), spec.clamp(max=0)
    lo = torch.maximum(lo, ol @ sp.T + ou @ sn.T)
    hi = torch.minimum(hi, ou @ sp.T + ol @ sn.T)
    pre = [tuple(_unbatch(t, single) for t in ivals[net.nodes[a].inputs[0]]) for a in net.activations]
    return _unbatch(lo, single), _unbatch(hi, single), pre


def crown_lower(net: Network, L: torch.Tensor, U: torch.Tensor, spec: torch.Tensor):
    """Lower bounds of spec · f(x) over boxes L, U [B, in] with the input coefficients of CROWN's
    bound: ([B, k], [B, k, in]) — what branch-and-bound needs to bound and to choose splits."""
    ivals, relax = intermediate_bounds(net, L.double(), U.double())
    lo, A = _backward(net, len(net.nodes) - 1, spec, relax, L.double(), U.double())
    ol, ou = ivals[len(net.nodes) - 1]
    sp, sn = spec.double().clamp(min=0), spec.double().clamp(max=0)
    return torch.maximum(lo, ol @ sp.T + ou @ sn.T), A


def sample_range(net: Network, lower: torch.Tensor, upper: torch.Tensor, n: int = 10_000,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest output seen on n uniform samples of the box (an inner estimate)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = lower.double().flatten(), upper.double().flatten()
    x = lo + (hi - lo) * torch.rand(n, lo.numel(), generator=g, dtype=torch.float64)
    y = net(x)
    return y.min(0).values, y.max(0).values


def _slope_range(act: Activation, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[min, max] of act'(z) over z in [l, u] (elementwise)."""
    if act.kind in ("relu", "leaky_relu"):
        a = 0.0 if act.kind == "relu" else act.slope
        lo = torch.where(l >= 0, 1.0, a) * torch.ones_like(l)
        hi = torch.where(u <= 0, a, 1.0) * torch.ones_like(u)
        return torch.minimum(lo, hi), torch.maximum(lo, hi)
    # act' is unimodal with its peak at 0: largest at the point nearest 0, smallest at an end
    return torch.minimum(_deriv(act, l), _deriv(act, u)), _deriv(act, torch.clamp(torch.zeros_like(l), l, u))


def gradient_intervals(net: Network, lower: torch.Tensor, upper: torch.Tensor, input_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on ∂f/∂x_i [outputs] over the box: the Jacobian column pushed forward through the graph
    with interval arithmetic, each activation's slope in its range on the CROWN input interval."""
    n = net.n_inputs
    if not 0 <= input_index < n:
        raise ValueError(f"input index {input_index} out of range: the network has {n} inputs")
    L, U, _ = _boxes(net, lower, upper)
    ivals, _ = intermediate_bounds(net, L, U)
    e = torch.zeros(1, n, dtype=torch.float64)
    e[0, input_index] = 1.0
    grads = {0: (e, e.clone())}
    for i, node in enumerate(net.nodes[1:], 1):
        if isinstance(node.op, Activation):
            s_lo, s_hi = _slope_range(node.op, *ivals[node.inputs[0]])
            g_lo, g_hi = grads[node.inputs[0]]
            cands = torch.stack([g_lo * s_lo, g_lo * s_hi, g_hi * s_lo, g_hi * s_hi])
            grads[i] = (cands.min(0).values, cands.max(0).values)
        elif isinstance(node.op, Affine):  # the Jacobian has no bias
            g_lo, g_hi = grads[node.inputs[0]]
            Wp, Wn = node.op.W.clamp(min=0), node.op.W.clamp(max=0)
            grads[i] = (g_lo @ Wp.T + g_hi @ Wn.T, g_hi @ Wp.T + g_lo @ Wn.T)
        else:
            grads[i] = _interval(node, grads)
    g_lo, g_hi = grads[len(net.nodes) - 1]
    return g_lo[0], g_hi[0]
