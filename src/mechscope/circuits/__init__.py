"""Circuits: the component graph, edge-level patching, EAP / EAP-IG / ACDC, path patching, causal
scrubbing and the Circuit result. (Attribution graphs over transcoder features: ``mechscope.tracing``.)"""

from .circuit import Circuit
from .discovery import (METHODS, EdgeScores, acdc, circuit_from_mask, discover, eap, eap_ig, evaluate, faithfulness,
                        minimal_circuit)
from .graph import Graph

__all__ = ["METHODS", "Circuit", "EdgeScores", "Graph", "acdc", "circuit_from_mask", "discover", "eap", "eap_ig",
           "evaluate", "faithfulness", "minimal_circuit"]
