"""What a normalisation module does, read from the module itself: its gain, bias and epsilon, and
its RMS scale with the statistics frozen (how per-component decompositions pass through a norm).
An ``nn.Identity`` in a norm's place (compiled programs' architecture: no norms) is the identity map
everywhere here."""

from __future__ import annotations

import torch
from torch import nn

from .offload import loaded


def norm_gain(norm: nn.Module) -> torch.Tensor:
    """The effective per-channel gain [d]: ``weight``, or 1 + weight for Gemma's RMSNorms (read under
    ``loaded``: real even inside a hook on an offloaded norm)."""
    with loaded(norm):
        weight = norm.weight.detach().float().clone()
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


def is_identity(norm: nn.Module) -> bool:
    """A place holder where an architecture has no norm."""
    return isinstance(norm, nn.Identity)


def frozen_rms_scale(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """gain / RMS(x) [..., d] in float32 for an RMSNorm ``norm`` applied to x [..., d]: the norm's
    output is x times this, so parts of x that sum to x map to parts that sum to the output."""
    if is_identity(norm):
        return torch.ones_like(x, dtype=torch.float32)
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + norm_eps(norm)) * norm_gain(norm).to(x.device)


def frozen(norm: nn.Module, x: torch.Tensor, y: torch.Tensor, reference: bool = False) -> torch.Tensor:
    """The output y = norm(x) [..., d] with the norm's statistics frozen: linear in x.

    ``reference=False``: frozen at each row's own input — the value is y bit for bit and the
    gradient passes through gain ⊙ centre(·) / σ(x) (the local replacement model's backward).
    ``reference=True``: frozen at row 0 (the clean prompt) — every row gets y₀ + gain ⊙
    centre(x − x₀) / σ(x₀), so an edited row moves linearly from the clean one."""
    if is_identity(norm):
        return x.to(y.dtype) + 0  # already linear; a new tensor, so a Replace counts as an edit
    x_ref = (x[:1] if reference else x).detach().float()
    y_ref = (y[:1] if reference else y).detach()
    delta = x.float() - x_ref
    if centres(norm):
        delta = delta - delta.mean(-1, keepdim=True)
        scale = torch.rsqrt(x_ref.var(-1, unbiased=False, keepdim=True) + norm_eps(norm))
    else:
        scale = torch.rsqrt(x_ref.pow(2).mean(-1, keepdim=True) + norm_eps(norm))
    return y_ref + (delta * scale * norm_gain(norm).to(x.device)).to(y.dtype)
