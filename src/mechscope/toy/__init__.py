"""Specimens trained from scratch on a CPU in minutes: superposition, induction heads, grokking."""

from .attn_only import InductionFormation, attn_only, repeated_segments, toy_tokenizer, train_induction
from .common import ToyModel
from .grokking import Grokking, embedding_spectrum, fourier_basis, key_frequencies, modular_model, train_grokking
from .superposition import (Interference, Superposition, SuperpositionPhases, feature_dimensionality, interference,
                            superposition_phases, train_superposition)

__all__ = [
    "Grokking", "InductionFormation", "Interference", "Superposition", "SuperpositionPhases", "ToyModel", "attn_only",
    "embedding_spectrum", "feature_dimensionality", "fourier_basis", "interference", "key_frequencies", "modular_model",
    "repeated_segments", "superposition_phases", "toy_tokenizer", "train_grokking", "train_induction",
    "train_superposition",
]
