"""A small VNN-COMP-style instance trained here: an ACAS Xu-shaped collision-avoidance network and
properties in VNNLIB.

The ACAS Xu networks (Julian et al. 2016; VNN-COMP's classic benchmark) are not in any package
registry, so this builds one of the same shape — 5 inputs, six hidden ReLU layers of 50, 5 scores,
advisory = the lowest score — and trains it on a stated policy:

- inputs: ρ ∈ [0, 1] distance to the intruder, θ ∈ [−1, 1] its bearing (> 0: on the left), ψ ∈
  [−1, 1] its heading, v_own, v_int ∈ [0, 1] speeds;
- danger = (1 − ρ) · (0.5 + 0.25 (v_own + v_int)); clear of conflict (COC, 0) when danger < 0.35,
  else turn away from the intruder — right (2, strong 4) if θ ≥ 0, left (1, strong 3) otherwise;
  strong when danger > 0.6.

``PROPERTIES`` are written like ACAS Xu's: each states what would be a violation.
"""

from __future__ import annotations

import torch
from torch import nn

ADVISORIES = ("clear of conflict", "weak left", "weak right", "strong left", "strong right")
RANGES = torch.tensor([[0.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])


def policy(x: torch.Tensor) -> torch.Tensor:
    """The advisory [N] for inputs x [N, 5] (see the module docstring)."""
    rho, theta, _, v_own, v_int = x.unbind(-1)
    danger = (1 - rho) * (0.5 + 0.25 * (v_own + v_int))
    strong = danger > 0.6
    turn = torch.where(theta >= 0, torch.where(strong, 4, 2), torch.where(strong, 3, 1))
    return torch.where(danger < 0.35, torch.zeros_like(turn), turn)


def collision_network(seed: int = 0, steps: int = 1500, samples: int = 40_000) -> tuple[nn.Sequential, float]:
    """(network, accuracy on fresh samples): scores y [5], advisory = argmin y."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 5
    for _ in range(6):
        layers += [nn.Linear(width, 50), nn.ReLU()]
        width = 50
    net = nn.Sequential(*layers, nn.Linear(50, 5))

    def draw(n):
        return RANGES[:, 0] + (RANGES[:, 1] - RANGES[:, 0]) * torch.rand(n, 5, generator=g)

    x = draw(samples)
    y = policy(x)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, samples, (1024,), generator=g)
        loss = nn.functional.cross_entropy(-net(x[idx]), y[idx])  # the lowest score is the advisory
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    test = draw(10_000)
    with torch.no_grad():
        acc = float((net(test).argmin(1) == policy(test)).float().mean())
    return net, acc


def _header() -> str:
    return "\n".join([f"(declare-const X_{i} Real)" for i in range(5)] + [f"(declare-const Y_{j} Real)" for j in range(5)])


def _box(**ranges) -> str:
    names = {"rho": 0, "theta": 1, "psi": 2, "v_own": 3, "v_int": 4}
    lines = []
    for name, i in names.items():
        lo, hi = ranges.get(name, RANGES[i].tolist())
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    return "\n".join(lines)


def _minimal(j: int) -> str:
    """Advisory j has the lowest score (ties included)."""
    return "(and " + " ".join(f"(<= Y_{j} Y_{k})" for k in range(5) if k != j) + ")"


PROPERTIES = {
    "far-clear": ("; far away (rho >= 0.8): the advisory is clear of conflict. Violation: another score <= COC.\n"
                  + _header() + "\n" + _box(rho=(0.8, 1.0)) + "\n(assert (or "
                  + " ".join(f"(and (<= Y_{k} Y_0))" for k in range(1, 5)) + "))"),
    "close-left-not-coc": ("; close, fast intruder on the left: never clear of conflict. Violation: COC lowest.\n"
                           + _header() + "\n" + _box(rho=(0.0, 0.2), theta=(0.2, 0.8), v_own=(0.5, 1.0),
                                                     v_int=(0.5, 1.0)) + "\n(assert " + _minimal(0) + ")"),
    "close-left-no-left-turn": ("; close intruder on the left: never turn left (into it). Violation: weak or "
                                "strong left lowest.\n" + _header() + "\n"
                                + _box(rho=(0.0, 0.25), theta=(0.3, 0.9), v_own=(0.6, 1.0), v_int=(0.6, 1.0))
                                + "\n(assert (or " + _minimal(1) + " " + _minimal(3) + "))"),
    "mid-range-clear": ("; a false claim: at mid range (0.3 <= rho <= 0.6) the advisory is always COC. "
                        "Violation: another score <= COC.\n" + _header() + "\n" + _box(rho=(0.3, 0.6))
                        + "\n(assert (or " + " ".join(f"(and (<= Y_{k} Y_0))" for k in range(1, 5)) + "))"),
}


def write_instance(directory, seed: int = 0, steps: int = 1500) -> tuple[list, float]:
    """Train the network and write ``collision.onnx`` and one ``<property>.vnnlib`` per property
    into ``directory``; returns ([(onnx path, vnnlib path)], accuracy)."""
    from pathlib import Path

    from .network import as_network
    from .onnx_io import save_onnx

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    net, acc = collision_network(seed, steps)
    onnx_path = save_onnx(as_network(net, 5, "collision"), out / "collision.onnx")
    pairs = []
    for name, text in PROPERTIES.items():
        (out / f"{name}.vnnlib").write_text(text + "\n")
        pairs.append((onnx_path, out / f"{name}.vnnlib"))
    return pairs, acc
