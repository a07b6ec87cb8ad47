"""Components one at a time: attention heads (detectors, circuits read from weights, patterns),
neurons (cards, gating neurons) and node patching (ablation scans, activation and attribution
patching). Edges between components and circuits: ``mechscope.circuits``."""

from .heads import AttentionPatterns, HeadCircuits, HeadScores, detect_heads, head_circuits, icl_score, pattern_scores
from .neurons import GatingNeurons, NeuronCards, gating_neurons, neuron_cards
from .patching import (AblationScan, PatchingComparison, PatchingSweep, ablation_scan, activation_patching,
                       attribution_patching, compare_patching)

__all__ = ["AblationScan", "AttentionPatterns", "GatingNeurons", "HeadCircuits", "HeadScores", "NeuronCards",
           "PatchingComparison", "PatchingSweep", "ablation_scan", "activation_patching", "attribution_patching",
           "compare_patching", "detect_heads", "gating_neurons", "head_circuits", "icl_score", "neuron_cards",
           "pattern_scores"]
