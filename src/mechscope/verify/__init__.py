"""Proving properties of networks: interval and CROWN bounds, exact MILP checks, branch and bound,
robustness, monotonicity, VNNLIB properties and ONNX networks.

Networks are graphs of affine maps, activations (ReLU, LeakyReLU, Sigmoid, Tanh) and sums (residual
additions), traced from PyTorch modules or read from ONNX. Every answer is a result that can be
kept in the archive (``output_bounds`` → ``Bounds``, ``check`` / ``robustness`` / ``monotonicity``
→ ``Verdict``, ``branch_and_bound`` → ``Search``); the numeric helpers under them say what they
return: ``*_intervals`` (lower, upper, per-layer bounds), ``sample_range``, ``largest_violation`` /
``largest_decrease`` (an ``Optimum``).
"""

from .bab import Search, branch_and_bound
from .bounds import crown_intervals, gradient_intervals, ibp_intervals, sample_range
from .milp import exact_intervals, largest_decrease, largest_violation, optimise
from .network import Network, UnsupportedLayer, as_network
from .properties import Bounds, Box, Property, Verdict, check, monotonicity, output_bounds, robustness

__all__ = ["Bounds", "Box", "Network", "Property", "Search", "UnsupportedLayer", "Verdict", "as_network",
           "branch_and_bound", "check", "crown_intervals", "exact_intervals", "gradient_intervals", "ibp_intervals",
           "largest_decrease",
           "largest_violation", "monotonicity", "optimise", "output_bounds", "robustness", "sample_range"]
