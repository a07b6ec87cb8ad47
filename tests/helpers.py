"""Plain-HF references the tests compare mechscope with, and small shared fixtures."""

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


def random_task(model, n=3, length=6, seed=0):
    """Random clean/corrupted pairs of one length on a tiny model; metric logit(a) − logit(b)."""
    from mechscope.tasks import Task

    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(5, model.cfg.vocab, (n, length), generator=gen).tolist()
    corrupted = torch.randint(5, model.cfg.vocab, (n, length), generator=gen).tolist()
    good = [[int(x)] for x in torch.randint(5, model.cfg.vocab, (n,), generator=gen)]
    bad = [[int(x)] for x in torch.randint(5, model.cfg.vocab, (n,), generator=gen)]
    return Task("random", 1, seed, clean, corrupted, good, bad)
