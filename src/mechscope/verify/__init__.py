"""Proving properties of networks: interval and CROWN bounds, exact MILP checks, robustness,
monotonicity.

Feed-forward networks (``nn.Sequential`` of Linear, Conv2d, Flatten and ReLU / LeakyReLU /
Sigmoid / Tanh) over input boxes. Every answer is a result that can be kept in the archive.
"""

from .bounds import crown, gradient_bounds, ibp, sample_range
from .milp import exact_bounds, largest_decrease, optimise
from .network import UnsupportedLayer, as_layers, run_layers
from .properties import Box, Bounds, Verdict, monotonicity, output_bounds, robustness

__all__ = ["Box", "Bounds", "UnsupportedLayer", "Verdict", "as_layers", "crown", "exact_bounds", "gradient_bounds", "ibp",
           "largest_decrease", "monotonicity", "optimise", "output_bounds", "robustness", "run_layers", "sample_range"]
