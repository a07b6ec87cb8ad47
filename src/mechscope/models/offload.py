"""Models split across devices or offloaded (HF ``device_map``, accelerate): reading weights.

accelerate wraps an offloaded module's ``forward`` so its weights are real only while it runs; inside
pre- and post-forward hooks they are on ``meta``. Code that reads a module's weights in a hook (the
edge engine's q/k/v and output projections) does so under ``loaded(module)``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

from torch import nn


def loaded(module: nn.Module) -> ContextManager:
    """A context in which ``module``'s offloaded weights are real tensors on its execution device
    (accelerate's ``align_module_device``); nothing to do for a module that is not offloaded."""
    if getattr(module, "_hf_hook", None) is None:
        return nullcontext()
    from accelerate.utils import align_module_device

    return align_module_device(module)
