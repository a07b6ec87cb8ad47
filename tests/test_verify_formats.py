"""Verification beyond single bounds: relaxations, batched boxes, branch and bound, VNNLIB and ONNX
(checked against onnxruntime), the collision-avoidance instance and `mechscope verify`."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mechscope.verify import (Box, Property, UnsupportedLayer, as_network, branch_and_bound, check, crown_intervals, ibp_intervals,
                              largest_violation, output_bounds, robustness, sample_range)
from mechscope.verify.bounds import relaxation
from mechscope.verify.network import Activation
from mechscope.verify.onnx_io import load_onnx, save_onnx
from mechscope.verify.vnnlib import VNNLibError, read_vnnlib, write_vnnlib


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_relaxation_lines_enclose_the_activation(kind):
    """On 2,000 random intervals (one-signed and across 0, wide and narrow) every lower line is below
    and every upper line above the function on a 201-point grid of the interval."""
    g = torch.Generator().manual_seed(0)
    act = Activation(kind, 0.1 if kind == "leaky_relu" else 0.0)
    a, b = torch.randn(2, 2000, generator=g, dtype=torch.float64) * torch.tensor([[4.0], [4.0]], dtype=torch.float64)
    l, u = torch.minimum(a, b), torch.maximum(a, b)
    aL, bL, aU, bU = relaxation(act, l, u)
    z = l[:, None] + (u - l)[:, None] * torch.linspace(0, 1, 201, dtype=torch.float64)
    f = act(z)
    assert (aL[:, None] * z + bL[:, None] <= f + 1e-12).all()
    assert (f <= aU[:, None] * z + bU[:, None] + 1e-12).all()
    if kind in ("sigmoid", "tanh"):  # across 0 the lines enclose far less than the constants f(l), f(u)
        mixed = (l < 0) & (u > 0)
        width = ((aU - aL)[:, None] * z + (bU - bL)[:, None]).mean(1)
        assert float(width[mixed].mean()) < 0.7 * float((act(u) - act(l))[mixed].mean())


def test_batched_boxes_equal_one_at_a_time():
    torch.manual_seed(0)
    net = as_network(nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2)), 3)
    centres = torch.randn(6, 3, dtype=torch.float64)
    L, U = centres - 0.2, centres + 0.2
    lo, hi, _ = crown_intervals(net, L, U)
    ilo, ihi, _ = ibp_intervals(net, L, U)
    for k in range(6):
        torch.testing.assert_close(torch.stack(crown_intervals(net, L[k], U[k])[:2]), torch.stack([lo[k], hi[k]]), rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.stack(ibp_intervals(net, L[k], U[k])[:2]), torch.stack([ilo[k], ihi[k]]), rtol=0, atol=1e-12)


def test_tracing_errors_name_the_operation():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    class Inverse(nn.Module):
        def forward(self, x):
            return 1.0 / x

    with pytest.raises(UnsupportedLayer, match="cannot verify through mul .*supported: Linear"):
        as_network(Square(), 2)
    with pytest.raises(UnsupportedLayer, match="division by the input"):
        as_network(Inverse(), 2)
    net = as_network(nn.Sequential(nn.Linear(2, 2)), 2)
    with pytest.raises(ValueError, match="input of 3 values; the network takes 2"):
        net(torch.zeros(1, 3))


def test_a_hidden_neuron_is_bounded_over_a_region():
    """Bound one hidden neuron (the interpretability use: what can this unit do on this region?)."""
    torch.manual_seed(1)
    net = as_network(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), 3)
    hidden = net.prefix(net.activations[1])  # the second layer's ReLU outputs
    box = Box(-torch.ones(3), torch.ones(3))
    b = output_bounds(hidden, box, "milp")
    assert hidden.n_outputs == 8 and (b.lower >= -1e-9).all()  # ReLU outputs
    assert (b.lower <= b.sampled_lower + 1e-7).all() and (b.sampled_upper <= b.upper + 1e-7).all()
    assert float((b.upper - b.sampled_upper).max()) < 0.05  # exact: sampling nearly reaches it


def _spiral_net(width=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    label = torch.randint(0, 3, (3000,), generator=g)
    r = torch.rand(3000, generator=g)
    angle = 4 * r + label * 2.094 + 0.2 * torch.randn(3000, generator=g)
    x = torch.stack([r * angle.cos(), r * angle.sin()], 1)
    net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(400):
        loss = nn.functional.cross_entropy(net(x), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, x[:40]


def test_branch_and_bound_agrees_with_milp_and_decides_what_crown_cannot():
    net, points = _spiral_net()
    layers = as_network(net, 2)
    decided_by_bab_only = 0
    for k, x in enumerate(points[:12]):
        eps = (0.03, 0.08, 0.15)[k % 3]
        exact = robustness(layers, x, eps, method="milp")
        bab = robustness(layers, x, eps, method="bab", timeout=30)
        one = robustness(layers, x, eps, method="crown")
        assert exact.status in ("verified", "falsified") and bab.status == exact.status, (k, eps)
        assert one.status in (exact.status, "unknown")
        decided_by_bab_only += one.status == "unknown"
        if bab.status == "verified":  # BaB's margin is a lower bound of the exact one (MILP optimised)
            label = int(layers(x.double()[None]).argmax())
            prop = Property.robustness(x, eps, label, 3)
            box, disjuncts = prop.cases[0]
            exact_margin = min(-largest_violation(layers, box.lower, box.upper, A, b).value for A, b in disjuncts)
            assert 0 < bab.margin <= exact_margin + 1e-7 and 0 <= exact.margin <= exact_margin + 1e-7
        else:
            ce = bab.counterexample.double()
            assert (ce - x.double()).abs().max() <= eps + 1e-6
            with torch.no_grad():
                logits = layers(ce[None])[0]
            assert int(logits.argmax()) != int(layers(x.double()[None]).argmax()) or \
                float(logits.max() - logits[int(layers(x.double()[None]).argmax())]) >= 0
    assert decided_by_bab_only >= 1


def test_branch_and_bound_on_sigmoid_networks_and_time_limits():
    torch.manual_seed(3)
    net = as_network(nn.Sequential(nn.Linear(2, 16), nn.Sigmoid(), nn.Linear(16, 1)), 2)
    box = Box(-torch.ones(2), torch.ones(2))
    lo, hi = sample_range(net, box.lower, box.upper, 20_000)
    A = torch.tensor([[1.0]], dtype=torch.float64)  # violation: y ≤ c
    below = branch_and_bound(net, box.lower, box.upper, [(A, lo - 0.01)], timeout=30)
    assert below.status == "verified" and below.margin > 0  # y never goes 0.01 under its sampled minimum
    above = branch_and_bound(net, box.lower, box.upper, [(A, lo + 0.01)], timeout=30)
    assert above.status == "falsified" and float(net(above.counterexample[None])) <= float(lo) + 0.01
    stopped = branch_and_bound(net, box.lower, box.upper, [(A, lo - 0.01)], timeout=0.0)
    assert stopped.status == "unknown" and stopped.margin < 0 and stopped.seconds < 1  # open: CROWN alone is loose


VNNLIB = """; two input boxes (an or over inputs), a disjunction over outputs
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 -0.5))
(assert (or (and (<= X_1 1e-1) (>= X_1 -1)) (and (<= X_1 2) (> X_1 0.1))))
(assert (or (and (<= Y_0 Y_1) (<= (+ Y_0 (* 2 Y_2)) 3)) (and (>= Y_2 -0.5))))
"""


def test_vnnlib_reads_boxes_and_output_polytopes():
    prop = read_vnnlib(VNNLIB)
    assert len(prop.cases) == 2
    (box1, d1), (box2, d2) = prop.cases
    assert box1.lower.tolist() == [-0.5, -1.0] and box1.upper.tolist() == [0.5, 0.1]
    assert box2.lower.tolist() == [-0.5, 0.1] and box2.upper.tolist() == [0.5, 2.0]
    (A, b), (A2, b2) = d1
    assert A.tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, 2.0]] and b.tolist() == [0.0, 3.0]
    assert A2.tolist() == [[0.0, 0.0, -1.0]] and b2.tolist() == [0.5]
    again = read_vnnlib(write_vnnlib(prop))  # round trip
    for (bx, dx), (by, dy) in zip(prop.cases, again.cases):
        assert torch.equal(bx.lower, by.lower) and torch.equal(bx.upper, by.upper)
        assert all(torch.equal(a, c) and torch.equal(p, q) for (a, p), (c, q) in zip(dx, dy))


@pytest.mark.parametrize("text, match", [
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (<= Y_0 0))", "X_0 has no lower"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= (+ X_0 Y_0) 1))", "mixes inputs and outputs"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= Z_0 1))", "unknown symbol 'Z_0'"),
    ("(declare-const X_0 Real)(assert (<= X_0 1)", "unbalanced"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= (* X_0 X_0) 1))", "non-linear"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (>= X_0 0))(assert (<= X_0 1))(assert (exp Y_0))",
     "unsupported 'exp'"),
])
def test_vnnlib_errors_say_what_is_wrong(text, match):
    with pytest.raises(VNNLibError, match=match):
        read_vnnlib(text)


def test_properties_with_several_input_boxes():
    """y = x0 + x1 (one Linear). Violation y ≤ −0.9 is possible only in the first box."""
    net = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    text = VNNLIB.replace("(assert (or (and (<= Y_0 Y_1) (<= (+ Y_0 (* 2 Y_2)) 3)) (and (>= Y_2 -0.5))))",
                          "(assert (<= Y_0 -0.9))").replace("(declare-const Y_1 Real)\n(declare-const Y_2 Real)\n", "")
    prop = read_vnnlib(text)
    for method in ("crown", "milp", "bab"):
        v = check(net, prop, method)
        assert v.status == "falsified", method
        assert float(net(v.counterexample.float()[None]).detach()) <= -0.9 + 1e-6
    safe = Property([prop.cases[1]], "second box only")
    for method in ("ibp", "crown", "milp", "bab"):
        assert check(net, safe, method).status == "verified"
    with pytest.raises(ValueError, match="method='exact'; valid: ibp, crown, milp, bab"):
        check(net, safe, "exact")
    with pytest.raises(ValueError, match="fails on inputs of shape \\(3,\\)"):
        check(net, Property([(Box(torch.zeros(3), torch.ones(3)), prop.cases[0][1])]), "crown")


def _export(module, shape, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, *shape), str(path), dynamo=False)
    return path


@pytest.mark.parametrize("kind", ["residual", "conv"])
def test_onnx_networks_load_and_match_onnxruntime(tmp_path, kind):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 16), nn.Linear(16, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.c(torch.sigmoid(h - self.b(h)) + h)

    module, shape = (Res(), (5,)) if kind == "residual" else (
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4).eval(), nn.LeakyReLU(0.2), nn.Flatten(),
                      nn.Linear(4 * 6 * 6, 10), nn.Tanh(), nn.Linear(10, 2)), (1, 6, 6))
    module.eval()
    path = _export(module, shape, tmp_path / "net.onnx")
    net = load_onnx(path)
    x = torch.randn(4, *shape)
    session = ort.InferenceSession(str(path))
    ref = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 1].numpy()})[0] for i in range(4)])
    np.testing.assert_allclose(net(x.reshape(4, -1).double()).numpy(), ref, atol=1e-5)  # float32 reference
    with torch.no_grad():
        torch.testing.assert_close(net(x.reshape(4, -1).double()).float(), module(x), atol=1e-5, rtol=0)
    # written back by save_onnx, onnxruntime runs it to the same outputs
    save_onnx(net, tmp_path / "again.onnx")
    session = ort.InferenceSession(str(tmp_path / "again.onnx"))
    again = session.run(None, {"input": x.reshape(4, -1)[:1].numpy()})[0]
    np.testing.assert_allclose(again, ref[:1], atol=1e-5)
    box = Box(-torch.ones(net.n_inputs), torch.ones(net.n_inputs))
    lo, hi, _ = crown_intervals(net, box.lower, box.upper)
    s_lo, s_hi = sample_range(net, box.lower, box.upper, 5000)
    assert (lo <= s_lo + 1e-9).all() and (s_hi <= hi + 1e-9).all()


def test_onnx_errors(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        load_onnx(tmp_path / "junk.onnx")
    path = _export(nn.Sequential(nn.Linear(2, 2), nn.Softplus()), (2,), tmp_path / "softplus.onnx")
    with pytest.raises(UnsupportedLayer, match="ONNX op Softplus .* not supported; supported: Gemm"):
        load_onnx(path)


def test_collision_instance_through_the_cli(tmp_path, capsys):
    """`mechscope verify --example`: the ACAS Xu-shaped network trained on its stated policy, its four
    VNNLIB properties checked by branch and bound (three hold, the false claim is refuted), a specimen
    stored; then one property again from the files with MILP."""
    from mechscope.archive import open as open_archive
    from mechscope.cli import main

    archive = str(tmp_path / "a.db")
    assert main(["verify", "--example", "--dir", str(tmp_path / "inst"), "--archive", archive]) == 0
    out = capsys.readouterr().out
    for name, word in (("far-clear", "holds (unsat)"), ("close-left-not-coc", "holds (unsat)"),
                       ("close-left-no-left-turn", "holds (unsat)"), ("mid-range-clear", "violated (sat)")):
        assert f"{name}: {word}" in out, out
    assert "counterexample X = [" in out
    spec = open_archive(archive).get("verify collision")
    verdicts = [f for f in spec.findings()]
    assert len(verdicts) == 4 and "VERIFIED" in verdicts[0].summary
    assert main(["verify", str(tmp_path / "inst" / "collision.onnx"), str(tmp_path / "inst" / "mid-range-clear.vnnlib"),
                 "--method", "milp", "--archive", archive]) == 0
    assert "mid-range-clear: violated (sat) — milp" in capsys.readouterr().out
    assert main(["verify", "--archive", archive]) == 2
