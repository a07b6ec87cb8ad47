"""One fingerprint for everything a result can come from: language and image models, verified
networks, toy models — a hash of the configuration and every distinct weight."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import nn

_VOLATILE_CONFIG_KEYS = {
    "transformers_version", "quantization_config", "architectures", "dtype", "torch_dtype",
    "use_cache", "output_attentions", "output_hidden_states", "return_dict",
}


def fingerprint_of(weights: nn.Module | Mapping[str, torch.Tensor], config: dict[str, Any],
                   read: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> str:
    """blake2b (32 hex digits) of ``config`` (volatile and private keys dropped) and every distinct
    tensor of ``weights`` (a module's state dict, or named tensors), in name order: equal for equal
    models, whatever process built them. ``read(name, tensor)`` gives the real tensor of one on
    ``meta`` (an offloaded weight, read one at a time; a tied one — the same object — once)."""
    h = hashlib.blake2b(digest_size=16)
    config = {k: v for k, v in config.items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    tensors = weights.state_dict(keep_vars=read is not None) if isinstance(weights, nn.Module) else weights
    seen: set[tuple[str, int]] = set()
    for name, tensor in sorted(tensors.items()):
        key = ("meta", id(tensor)) if tensor.device.type == "meta" else ("data", tensor.data_ptr())
        if key in seen and tensor.numel():
            continue
        seen.add(key)
        if read is not None and tensor.device.type == "meta":
            tensor = read(name, tensor)
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
