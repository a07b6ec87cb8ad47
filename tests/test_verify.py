"""Verification: IBP and CROWN bounds are sound and ordered, MILP is exact, robustness verdicts."""

import pytest
import torch
from torch import nn

from mechscope.verify import (Box, UnsupportedLayer, as_network, crown_intervals, exact_intervals, gradient_intervals, ibp_intervals,
                              monotonicity, output_bounds, robustness, sample_range)


def _hand_net():
    """y = relu(x1 + x2) + relu(x1 − x2) on [−1, 1]²."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        net[2].bias.zero_()
    return net


def test_hand_checkable_bounds():
    """Derived by hand: each hidden pre-activation lies in [−2, 2]. IBP: relu ∈ [0, 2] each, y ∈ [0, 4].
    CROWN: relu(z) ≤ (z + 2)/2 on [−2, 2], so y ≤ (x1 + x2 + 2)/2 + (x1 − x2 + 2)/2 = x1 + 2 ≤ 3; its
    lower line (slope 1: u ≥ −l) gives y ≥ 2·x1 ≥ −2, intersected with IBP's 0. Exact: max 2 (x1 = 1),
    min 0."""
    layers = as_network(_hand_net(), 2)
    lo, hi = -torch.ones(2), torch.ones(2)
    assert ibp_intervals(layers, lo, hi)[:2] == (torch.tensor([0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64))
    c_lo, c_hi, pre = crown_intervals(layers, lo, hi)
    assert float(c_lo) == 0.0 and float(c_hi) == pytest.approx(3.0, abs=1e-12)
    assert torch.equal(pre[0][0], torch.tensor([-2.0, -2.0], dtype=torch.float64))
    e_lo, e_hi, optima = exact_intervals(layers, lo, hi)
    assert float(e_lo) == pytest.approx(0.0, abs=1e-9) and float(e_hi) == pytest.approx(2.0, abs=1e-9)
    assert float(layers(optima[1].x[None])) == pytest.approx(2.0, abs=1e-9)


class _Residual(nn.Module):
    """Two residual blocks (one subtracting a scaled branch) and a CNN-style flatten by view."""

    def __init__(self, act):
        super().__init__()
        self.act = act
        self.inp, self.out = nn.Linear(4, 12), nn.Linear(12, 3)
        self.block = nn.Sequential(nn.Linear(12, 12), act, nn.Linear(12, 12))

    def forward(self, x):
        h = self.act(self.inp(x.view(x.size(0), -1)))
        h = h + self.block(h)
        h = h - 0.5 * self.act(self.block(h))
        return self.out(h)


def _net(act, seed=0, conv=False):
    torch.manual_seed(seed)
    if conv == "res":
        return _Residual(act), (2, 2)
    if conv:  # 1×6×6 input
        return nn.Sequential(nn.Conv2d(1, 3, 3), act, nn.Flatten(), nn.Linear(48, 12), act, nn.Linear(12, 3)), (1, 6, 6)
    return nn.Sequential(nn.Linear(4, 16), act, nn.Linear(16, 16), act, nn.Linear(16, 3)), (4,)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh()], ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("conv", [False, True, "res"], ids=["mlp", "conv", "residual"])
def test_bounds_are_sound_and_crown_is_at_least_as_tight_as_ibp(act, conv):
    net, shape = _net(act, conv=conv)
    layers = as_network(net, shape)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(layers(x0.flatten()[None]).float(), net(x0[None]).float(), atol=1e-5, rtol=0)
    box = Box.linf(x0, 0.3)
    i_lo, i_hi, _ = ibp_intervals(layers, box.lower, box.upper)
    c_lo, c_hi, _ = crown_intervals(layers, box.lower, box.upper)
    s_lo, s_hi = sample_range(layers, box.lower, box.upper, 10_000)
    tol = 1e-9
    assert (i_lo <= s_lo + tol).all() and (s_hi <= i_hi + tol).all()  # sound: 10,000 samples inside
    assert (c_lo <= s_lo + tol).all() and (s_hi <= c_hi + tol).all()
    assert (c_lo >= i_lo - tol).all() and (c_hi <= i_hi + tol).all()  # never looser than IBP
    assert float((c_hi - c_lo).mean()) < 0.75 * float((i_hi - i_lo).mean())  # and clearly tighter here
    if isinstance(act, (nn.ReLU, nn.LeakyReLU)) and conv is not True:  # exact range inside (conv: slow MILP)
        e_lo, e_hi, _ = exact_intervals(layers, box.lower, box.upper)
        assert (c_lo <= e_lo + 1e-7).all() and (e_hi <= c_hi + 1e-7).all()
        assert (e_lo <= s_lo + 1e-7).all() and (s_hi <= e_hi + 1e-7).all()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.1)], ids=lambda a: type(a).__name__)
def test_milp_gives_the_exact_range_with_real_optima(act):
    net, shape = _net(act, seed=1)
    layers = as_network(net, shape)
    box = Box.linf(torch.randn(4, generator=torch.Generator().manual_seed(2)), 0.3)
    e_lo, e_hi, optima = exact_intervals(layers, box.lower, box.upper)
    c_lo, c_hi, _ = crown_intervals(layers, box.lower, box.upper)
    s_lo, s_hi = sample_range(layers, box.lower, box.upper, 10_000)
    assert (c_lo <= e_lo + 1e-7).all() and (e_hi <= c_hi + 1e-7).all()
    assert (e_lo <= s_lo + 1e-7).all() and (s_hi <= e_hi + 1e-7).all()
    assert float((s_lo - e_lo).max()) < 0.05 and float((e_hi - s_hi).max()) < 0.05  # sampling nearly reaches it
    for k, opt in enumerate(optima):  # every optimum is attained by its input, inside the box
        assert opt.status == "optimal"
        assert ((box.lower.double() - 1e-9 <= opt.x) & (opt.x <= box.upper.double() + 1e-9)).all()
        assert float(layers(opt.x[None])[0, k // 2]) == pytest.approx(opt.value, abs=1e-7)


def _two_class():
    """Logits (relu(x1 − x2) − relu(x2 − x1), its negation): class 0 iff x1 > x2."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        net[2].bias.zero_()
    return net


def test_robustness_is_proved_refuted_or_undecided():
    net, x = _two_class(), torch.tensor([1.0, 0.0])
    for method in ("crown", "milp"):  # margin 2·(x1 − x2) ≥ 2·(1 − 2·0.4) = 0.4 in the ball
        v = robustness(net, x, 0.4, method=method)
        assert v.status == "verified" and v.margin == pytest.approx(0.4, abs=1e-6)
    for method in ("crown", "milp", "bab"):  # CROWN's worst corner is a counterexample too
        v = robustness(net, x, 0.6, method=method)
        assert v.status == "falsified", method
        ce = v.counterexample.float()
        assert (ce - x).abs().max() <= 0.6 + 1e-6 and int(net(ce[None]).argmax()) == 1  # the network agrees
    assert v.margin < 0 and "FALSIFIED" in v.summary()
    assert robustness(net, x, 0.6, method="milp").margin == pytest.approx(-0.4, abs=1e-6)


def test_bounds_result_and_bad_input():
    net, shape = _net(nn.ReLU())
    box = Box.linf(torch.zeros(shape), 0.1)
    b = output_bounds(net, box, "crown")
    assert (b.lower <= b.sampled_lower).all() and "crown bounds" in b.summary() and b.png_bytes()[:4] == b"\x89PNG"
    assert net[0].weight.dtype == torch.float32  # the caller's network is untouched
    with pytest.raises(UnsupportedLayer, match="cannot verify through GELU .*supported: Linear"):
        as_network(nn.Sequential(nn.Linear(2, 2), nn.GELU()), 2)
    with pytest.raises(ValueError, match="empty box: lower 1 > upper 0"):
        Box(torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        Box(torch.tensor([float("nan")]), torch.ones(1))
    with pytest.raises(ValueError, match="needs piecewise-linear activations"):
        output_bounds(_net(nn.Sigmoid())[0], box, "milp")
    with pytest.raises(ValueError, match="label 5 out of range: the network has 3 outputs"):
        robustness(net, torch.zeros(shape), 0.1, label=5)
    with pytest.raises(ValueError, match="method=.bogus.; valid: ibp, crown, milp"):
        output_bounds(net, box, "bogus")


def _dip():
    """f(x) = x − 2·relu(x − 0.4) + 2·relu(x − 0.6) on [0, 1]: slope 1, then −1 on (0.4, 0.6), then 1."""
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.ones(3, 1))
        net[0].bias.copy_(torch.tensor([0.0, -0.4, -0.6]))
        net[2].weight.copy_(torch.tensor([[1.0, -2.0, 2.0]]))
        net[2].bias.zero_()
    return net


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Sigmoid()], ids=lambda a: type(a).__name__)
def test_a_network_built_monotone_is_proved_so(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 1))
    with torch.no_grad():  # non-negative weights: monotone in every input
        for m in (net[0], net[2], net[4]):
            m.weight.abs_()
    box = Box(-torch.ones(2), torch.ones(2))
    methods = ("bounds", "milp") if isinstance(act, nn.ReLU) else ("bounds",)
    for method in methods:
        v = monotonicity(net, box, input_index=1, method=method)
        assert v.status == "verified", method
        assert v.margin >= -1e-9  # MILP: the largest fall is 0 up to solver round-off


def test_a_planted_dip_is_refuted_with_a_confirmed_pair():
    net, box = _dip(), Box(torch.zeros(1), torch.ones(1))
    lo, hi = gradient_intervals(as_network(net, 1), box.lower.double(), box.upper.double(), 0)
    assert float(lo) == pytest.approx(-1.0) and float(hi) == pytest.approx(3.0)  # 1 − 2·[0, 1] + 2·[0, 1]
    assert monotonicity(net, box, input_index=0, method="bounds").status == "unknown"
    v = monotonicity(net, box, input_index=0, method="milp")
    assert v.status == "falsified" and v.margin == pytest.approx(-0.2, abs=1e-7)  # f(0.4) = 0.4 > f(0.6) = 0.2
    x, x2 = v.counterexample.float()
    with torch.no_grad():
        assert float(x2) >= float(x) and float(net(x2[None])) < float(net(x[None]))
    assert monotonicity(net, Box(torch.tensor([0.6]), torch.ones(1)), input_index=0, method="milp").status == "verified"
    with pytest.raises(ValueError, match="input index 3 out of range"):
        monotonicity(net, box, input_index=3)
