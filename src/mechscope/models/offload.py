"""Models split across devices or offloaded (HF ``device_map``, accelerate): reading weights.

accelerate wraps an offloaded module's ``forward`` so its weights are real only while it runs;
outside it — in pre- and post-forward hooks, and whenever code reads ``module.weight`` directly —
they are on ``meta``. Code that reads weights (the edge engine's projections, head and neuron
weights, embeddings) does so under ``loaded(module)``.
"""

from __future__ import annotations

from contextlib import ExitStack

from torch import nn


_ALIGNED: set[int] = set()  # modules whose weights an enclosing ``loaded`` holds (nested uses leave them)


def loaded(*modules: nn.Module) -> ExitStack:
    """A context in which the offloaded weights of ``modules`` and their submodules are real tensors
    on their execution device (accelerate's ``align_module_device`` on each offloaded one); nothing
    to do for modules that are not offloaded. Nests: an inner ``loaded`` of a module an outer one
    holds leaves it loaded."""
    stack = ExitStack()
    offloaded = [m for module in modules for m in module.modules()
                 if getattr(m, "_hf_hook", None) is not None and id(m) not in _ALIGNED]
    if offloaded:
        from accelerate.utils import align_module_device, has_offloaded_params

        for m in offloaded:
            if has_offloaded_params(m):
                stack.enter_context(align_module_device(m))
                _ALIGNED.add(id(m))
                stack.callback(_ALIGNED.discard, id(m))
    return stack
