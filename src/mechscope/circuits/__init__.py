"""Circuits: the component graph, edge-level patching, EAP / EAP-IG / ACDC, the Circuit result, and
attribution graphs over transcoder features."""

from .attribution_graph import AttributionGraph, Target, attribution_graph, logit_difference, logit_target
from .circuit import Circuit
from .discovery import (METHODS, EdgeScores, acdc, circuit_from_mask, discover, eap, eap_ig, evaluate, faithfulness,
                        minimal_circuit)
from .graph import Graph
from .graph_validation import GraphValidation, validate_graph

__all__ = ["METHODS", "AttributionGraph", "Target", "attribution_graph", "logit_difference", "logit_target", "Circuit", "EdgeScores", "Graph", "acdc", "circuit_from_mask", "discover", "eap", "eap_ig",
           "evaluate", "faithfulness", "minimal_circuit", "GraphValidation", "validate_graph"]
