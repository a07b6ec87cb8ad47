"""What a normalisation module does, read from the module itself: its gain, bias and epsilon, and
its RMS scale with the statistics frozen (how per-component decompositions pass through a norm)."""

from __future__ import annotations

import torch
from torch import nn


def norm_gain(norm: nn.Module) -> torch.Tensor:
    """The effective per-channel gain [d]: ``weight``, or 1 + weight for Gemma's RMSNorms."""
    weight = norm.weight.detach().float()
    return 1.0 + weight if "gemma" in type(norm).__name__.lower() else weight


def norm_eps(norm: nn.Module) -> float:
    """The epsilon added under the square root (``eps`` or ``variance_epsilon``)."""
    for name in ("eps", "variance_epsilon"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    raise AttributeError(f"{type(norm).__name__} has no eps / variance_epsilon")


def centres(norm: nn.Module) -> bool:
    """Whether ``norm`` subtracts the mean (a LayerNorm, incl. Cohere's bias-free one) or not (RMSNorm)."""
    name = type(norm).__name__
    return isinstance(norm, nn.LayerNorm) or ("LayerNorm" in name and "RMS" not in name)


def frozen_rms_scale(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """gain / RMS(x) [..., d] in float32 for an RMSNorm ``norm`` applied to x [..., d]: the norm's
    output is x times this, so parts of x that sum to x map to parts that sum to the output."""
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + norm_eps(norm)) * norm_gain(norm).to(x.device)
