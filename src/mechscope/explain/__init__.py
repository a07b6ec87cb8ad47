"""Features and neurons that explain themselves: a chat model reads a unit's activating contexts and
writes an explanation; the explanation is scored by how well it predicts where the unit fires (detection
and fuzzing, as EleutherAI's delphi defines them; simulation: its activations predicted token by token and
correlated with the true ones), against baselines (the unit's top tokens, another
unit's explanation). Local chat models (the embedded SmolLM2-135M-Instruct) or any OpenAI-compatible
endpoint; every answer cached by content."""

from .clients import CachedChat, ChatError, LocalChat, OpenAIChat, Reply, default_cache, open_chat
from .examples import ExampleConfig, dictionary_units, neuron_units, unit_examples
from .explainer import write_explanations
from .result import Explanations
from .run import explain_features, explain_neurons, explain_units
from .scoring import metrics, roc_auc, score
from .simulation import simulate

__all__ = ["CachedChat", "ChatError", "ExampleConfig", "Explanations", "LocalChat", "OpenAIChat", "Reply",
           "default_cache", "dictionary_units", "explain_features", "explain_neurons", "explain_units", "metrics",
           "neuron_units", "open_chat", "roc_auc", "score", "simulate", "unit_examples", "write_explanations"]
