"""Tracing: a prompt traced through transcoder features across layers — attribution graphs.

``replacement`` builds the prompt's local replacement model (transcoders for MLPs, frozen attention
and norms, error nodes); ``attribute`` computes the graph's edges by batched backward passes;
``graph`` is the result (``AttributionGraph``); ``prune`` its influence and pruning; ``neuronpedia``
its circuit-tracer / Neuronpedia JSON; ``view`` the viewer's data, feature cards and supernodes;
``attention`` the heads behind its edges; ``validation`` interventions that test it on the model.
"""

from .attribute import Target, attribution_graph, logit_difference, logit_target
from .graph import AttributionGraph
from .neuronpedia import from_neuronpedia, to_neuronpedia
from .validation import GraphValidation, validate_graph

__all__ = ["AttributionGraph", "GraphValidation", "Target", "attribution_graph", "from_neuronpedia", "logit_difference",
           "logit_target", "to_neuronpedia", "validate_graph"]
