"""Plain-HF references the tests compare mechscope with."""

from contextlib import contextmanager

import torch


@contextmanager
def attn_implementation(model, impl):
    """Temporarily run the HF model with another attention implementation ('eager', 'sdpa')."""
    config = model.hf.config
    saved = config._attn_implementation
    config._attn_implementation = impl
    try:
        yield
    finally:
        config._attn_implementation = saved


def hf_forward(model, prompts, impl=None, **kwargs):
    """The plain HF forward on the same left-padded inputs mechscope builds."""
    ids, mask = model.tokenize(prompts)
    with torch.no_grad():
        if impl is None:
            return model.hf(**model.hf_inputs(ids, mask), use_cache=False, **kwargs)
        with attn_implementation(model, impl):
            return model.hf(**model.hf_inputs(ids, mask), use_cache=False, **kwargs)
