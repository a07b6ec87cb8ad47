"""Sparse dictionary learning: activation stores, SAEs and transcoders, training, evaluation,
features as interventions, dashboards."""

from .dashboard import FeatureCards, feature_cards
from .config import SAEConfig, SAEError
from .dictionary import SparseCoder, load_sae
from .evaluate import ReplacementFidelity, SAEEvaluation, evaluate, evaluate_transcoders
from .features import splice, steer
from .formats import dictionary_format, load_dictionary, save_saelens, save_sparsify, site_from_hook
from .store import ActivationStore, StoreError, harvest
from .synthetic import planted
from .trainer import TrainingLog, geometric_median, train
from .online import TranscoderTraining, train_transcoders
from .transcoder_sets import (CrossLayerTranscoder, TranscoderSet, checkpoint_transcoders, load_transcoder_set,
                              load_transcoders)

__all__ = ["ActivationStore", "CrossLayerTranscoder", "TranscoderSet", "load_transcoder_set", "FeatureCards", "SAEConfig", "SAEError", "SAEEvaluation", "SparseCoder", "StoreError", "dictionary_format",
           "TrainingLog", "evaluate", "feature_cards", "geometric_median", "harvest", "load_dictionary", "load_sae",
           "planted", "save_saelens", "save_sparsify", "site_from_hook", "splice", "steer", "train",
           "ReplacementFidelity", "TranscoderTraining", "checkpoint_transcoders", "evaluate_transcoders", "load_transcoders",
           "train_transcoders"]
