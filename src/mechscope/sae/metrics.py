"""Numbers of a reconstruction and of its latents: FVU, MSE, L0, and the mean max cosine similarity
of learned to true directions. Tensors in, tensors (or floats) out."""

from __future__ import annotations

import torch


def fvu(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained, Σ‖y − ŷ‖² / Σ‖y − ȳ‖², of rows [..., d]."""
    y, y_hat = y.reshape(-1, y.shape[-1]).double(), y_hat.reshape(-1, y.shape[-1]).double()
    return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp(min=1e-30)


def mse(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per element."""
    return (y.double() - y_hat.double()).pow(2).mean()


def l0(f: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero latents per row of f [..., width]."""
    return (f != 0).double().sum(-1).mean()


def mmcs(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Mean over true directions [m, d] of the largest cosine with a learned one [w, d]."""
    a = true / true.norm(dim=1, keepdim=True)
    b = learned / learned.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return float((a.float() @ b.float().T).max(1).values.mean())
