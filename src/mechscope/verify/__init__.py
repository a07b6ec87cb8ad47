"""Proving properties of networks: interval and CROWN bounds, exact MILP checks, robustness.

Feed-forward networks (``nn.Sequential`` of Linear, Conv2d, Flatten and ReLU / LeakyReLU /
Sigmoid / Tanh) over input boxes. Every answer is a result that can be kept in the archive.
"""

from .bounds import crown, ibp, sample_range
from .milp import exact_bounds, optimise
from .network import UnsupportedLayer, as_layers, run_layers
from .properties import Box, Bounds, Verdict, output_bounds, robustness

__all__ = ["Box", "Bounds", "UnsupportedLayer", "Verdict", "as_layers", "crown", "exact_bounds", "ibp", "optimise",
           "output_bounds", "robustness", "run_layers", "sample_range"]
