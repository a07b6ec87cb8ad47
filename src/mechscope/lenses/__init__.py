"""Lenses: reading the residual stream through the unembedding — the logit lens, direct logit
attribution (heads, MLPs, neurons) and the tuned lens (learned per-layer translators)."""

from .logit import LogitAttribution, LogitLens, direct_logit_attribution, logit_lens, neuron_attribution
from .tuned import LensComparison, TunedLens, TunedLensFit, compare_lenses, train_tuned_lens

__all__ = ["LensComparison", "LogitAttribution", "LogitLens", "TunedLens", "TunedLensFit", "compare_lenses",
           "direct_logit_attribution", "logit_lens", "neuron_attribution", "train_tuned_lens"]
