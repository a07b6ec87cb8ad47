"""A feed-forward network as verification sees it: alternating affine maps and activations on
flat vectors.

``as_layers(module, input_shape)`` reads an ``nn.Sequential`` (nested ones are flattened) of
Linear, Conv2d, Flatten, ReLU, LeakyReLU, Sigmoid, Tanh and Identity. Linear maps keep their
weights; Conv2d and Flatten become the exact matrix of the map (evaluated on the basis, so meant
for the small inputs verification handles); consecutive affine maps are composed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
SUPPORTED = "Linear, Conv2d, Flatten, ReLU, LeakyReLU, Sigmoid, Tanh, Identity (in an nn.Sequential)"


@dataclass
class Affine:
    """z = W x + b; W: [out, in], b: [out] (float64: bounds are computed in double precision)."""

    W: torch.Tensor
    b: torch.Tensor


@dataclass
class Activation:
    kind: str  # relu | leaky_relu | sigmoid | tanh
    slope: float = 0.0  # negative slope of leaky_relu

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return z.clamp(min=0)
        if self.kind == "leaky_relu":
            return torch.where(z >= 0, z, self.slope * z)
        return torch.sigmoid(z) if self.kind == "sigmoid" else torch.tanh(z)


class UnsupportedLayer(ValueError):
    """A module verification cannot read."""


def _modules(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _modules(child)]
    return [module]


def _linear_matrix(module: nn.Module, shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    """The exact affine map of a linear module on inputs of ``shape`` (without batch)."""
    n = int(torch.tensor(shape).prod())
    with torch.no_grad():
        zero = module(torch.zeros(1, *shape, dtype=torch.float64))
        basis = module(torch.eye(n, dtype=torch.float64).reshape(n, *shape))
    out_shape = tuple(zero.shape[1:])
    W = (basis - zero).reshape(n, -1).T
    return Affine(W.contiguous(), zero.reshape(-1)), out_shape


def as_layers(module: nn.Module, input_shape: tuple[int, ...] | int) -> list[Affine | Activation]:
    """The network as [Affine, Activation, Affine, ...] on flat vectors (see the module docstring)."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    layers: list[Affine | Activation] = []
    module = copy.deepcopy(module).double()  # the caller's module is left as it is
    for m in _modules(module):
        if isinstance(m, nn.Identity):
            continue
        if type(m) in ACTIVATIONS:
            layers.append(Activation(ACTIVATIONS[type(m)], float(getattr(m, "negative_slope", 0.0))))
            continue
        if isinstance(m, nn.Linear):
            aff = Affine(m.weight.detach().double(), (m.bias.detach().double() if m.bias is not None
                                                    else torch.zeros(m.out_features, dtype=torch.float64)))
            shape = (m.out_features,)
        elif isinstance(m, (nn.Conv2d, nn.Flatten)):
            aff, shape = _linear_matrix(m, shape)
        else:
            raise UnsupportedLayer(f"cannot verify through {type(m).__name__}; supported: {SUPPORTED}")
        if layers and isinstance(layers[-1], Affine):  # compose consecutive affine maps
            prev = layers.pop()
            aff = Affine(aff.W @ prev.W, aff.W @ prev.b + aff.b)
        layers.append(aff)
    if not layers or not isinstance(layers[-1], Affine):
        layers.append(Affine(torch.eye(int(torch.tensor(shape).prod()), dtype=torch.float64),
                             torch.zeros(int(torch.tensor(shape).prod()), dtype=torch.float64)))
    return layers


def run_layers(layers: list[Affine | Activation], x: torch.Tensor) -> torch.Tensor:
    """Evaluate the layers on flat inputs x [batch, in] (float64)."""
    x = x.double()
    for layer in layers:
        x = x @ layer.W.T + layer.b if isinstance(layer, Affine) else layer(x)
    return x
