"""Data with a known sparse dictionary, for checking that a dictionary learner finds it.

``planted(n_features, d, p, n)`` draws ``n_features`` random unit directions in ``d`` dimensions
and ``n`` rows x = Σ_i a_i g_i, each feature active independently with probability ``p`` and,
when active, a magnitude a_i ~ Uniform(0.5, 1.5) (so an active feature is never negligible).
"""

from __future__ import annotations

import torch


def planted(n_features: int = 512, d: int = 64, p: float = 0.01, n: int = 200_000, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [n, d], true directions [n_features, d])."""
    if not 0 < p <= 1:
        raise ValueError(f"p={p}: a probability in (0, 1]")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_features, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    active = torch.rand(n, n_features, generator=g) < p
    mags = 0.5 + torch.rand(n, n_features, generator=g)
    codes = (active * mags).to_sparse()
    return torch.sparse.mm(codes, dirs), dirs
