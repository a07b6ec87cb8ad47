"""The mechscope attention function: eager attention that exposes q, k, v, scores and pattern.

Registered with transformers' ``AttentionInterface`` (and, with ``eager_mask``, with the
``AttentionMaskInterface``: without a matching mask function the model would build an sdpa-style
mask and eager attention would run unmasked). It is switched on only while a run asks for an
attention-internal site (``use_mechscope_attention``); otherwise the model keeps its own (fast)
attention. The arithmetic follows transformers' ``eager_attention_forward`` op for op, so with no
intervention the outputs equal the HF eager implementation's bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

IMPLEMENTATION = "mechscope"

# Called as probe(kind, tensor) -> tensor, with kind in {"q","k","v","scores","pattern"} and the
# tensor in site layout (q/k/v: [batch, pos, head, d_head]; scores/pattern: [batch, head, q, k]).
Probe = Callable[[str, torch.Tensor], torch.Tensor]
_PROBES: dict[nn.Module, Probe] = {}


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[batch, kv_head, pos, d] -> [batch, kv_head * n_rep, pos, d] (grouped-query attention)."""
    if n_rep == 1:
        return x
    b, kvh, pos, d = x.shape
    return x[:, :, None].expand(b, kvh, n_rep, pos, d).reshape(b, kvh * n_rep, pos, d)


def mechscope_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention; q/k/v: [batch, head, pos, d_head]. Returns (z [batch, pos, head, d], pattern).

    ``s_aux`` (GPT-OSS's attention sinks, one logit per head): a sink column joins each row's scores
    before the softmax and is dropped after it, so a row's pattern sums to less than 1 (the rest
    went to the sink) — as transformers' GPT-OSS eager attention does, op for op."""
    sinks = kwargs.get("s_aux")
    probe = _PROBES.get(module)
    if probe is not None:  # transpose(1, 2) twice restores the original strides: bit-exact no-op
        query = probe("q", query.transpose(1, 2)).transpose(1, 2)
        key = probe("k", key.transpose(1, 2)).transpose(1, 2)
        value = probe("v", value.transpose(1, 2)).transpose(1, 2)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n_rep = query.shape[1] // key.shape[1]
    key_states = _repeat_kv(key, n_rep)
    value_states = _repeat_kv(value, n_rep)

    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key_states.shape[-2]]
    if probe is not None:
        scores = probe("scores", scores)
    if sinks is not None:
        combined = torch.cat([scores, sinks.reshape(1, -1, 1, 1).expand(query.shape[0], -1, query.shape[-2], -1)], -1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        pattern = nn.functional.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1].to(value_states.dtype)
    else:
        pattern = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if probe is not None:
        pattern = probe("pattern", pattern)
    pattern_used = nn.functional.dropout(pattern, p=dropout, training=module.training)
    z = torch.matmul(pattern_used, value_states).transpose(1, 2).contiguous()
    return z, pattern


AttentionInterface.register(IMPLEMENTATION, mechscope_attention)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def _configs(hf_model: nn.Module) -> list:
    """Every distinct config object reachable from the model's modules (sub-models have their own)."""
    seen: dict[int, object] = {}
    for module in hf_model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextmanager
def use_mechscope_attention(hf_model: nn.Module, probes: dict[nn.Module, Probe]) -> Iterator[None]:
    """Switch the model to the mechscope attention, with ``probes`` per attention module.

    On exit (also on error) the original implementation is restored and the probes are removed.
    """
    configs = _configs(hf_model)
    saved = [c._attn_implementation_internal for c in configs]
    try:
        for config in configs:
            config._attn_implementation_internal = IMPLEMENTATION
        _PROBES.update(probes)
        yield
    finally:
        for module in probes:
            _PROBES.pop(module, None)
        for config, impl in zip(configs, saved):
            config._attn_implementation_internal = impl


def active_probes() -> int:
    """How many attention probes are installed (0 outside a run; tests check it)."""
    return len(_PROBES)
