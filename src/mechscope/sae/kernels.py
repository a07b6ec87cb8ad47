"""The autograd kernels the dictionaries train with: the JumpReLU and step functions with their
straight-through gradients (a rectangle kernel of bandwidth ε), and TopK encoding with a backward
that touches only the k selected latents per row (see ``dictionary``'s docstring)."""

from __future__ import annotations

import torch


class JumpReLU(torch.autograd.Function):
    """pre·H(pre − θ); ∂/∂pre = H(pre − θ), ∂/∂θ = −(θ/ε)·K((pre − θ)/ε), K the unit rectangle."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        near = ((pre - theta).abs() < eps / 2).to(g.dtype)
        g_theta = (g * -(theta / eps) * near).sum(0)
        return g * (pre > theta).to(g.dtype), g_theta, None


class Step(torch.autograd.Function):
    """H(pre − θ); ∂/∂pre = 0, ∂/∂θ = −(1/ε)·K((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        near = ((pre - theta).abs() < eps / 2).to(g.dtype)
        return torch.zeros_like(pre), (g * -(1.0 / eps) * near).sum(0), None


class TopKEncode(torch.autograd.Function):
    """(values [n, k], indices [n, k], pre [n, width]) of ReLU(x W_encᵀ + b) with a sparse backward:
    the values' gradient reaches W_enc, b and x through the k selected latents only; a gradient
    on ``pre`` (AuxK's dead latents) is added densely when there is one."""

    @staticmethod
    def forward(ctx, x, w, b, k):
        pre = torch.nn.functional.linear(x, w, b)
        vals, idx = torch.relu(pre).topk(k, dim=-1, sorted=False)
        ctx.save_for_backward(x, w, idx, vals)
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)  # an unused ``pre`` (no AuxK this step) must cost nothing
        return vals, idx, pre

    @staticmethod
    def backward(ctx, g_vals, g_idx, g_pre):
        x, w, idx, vals = ctx.saved_tensors
        if g_vals is None:
            g_vals = torch.zeros_like(vals)
        g_vals = g_vals * (vals > 0)  # ReLU: a selected latent at 0 passes no gradient
        g_x = torch.nn.functional.embedding_bag(idx, w, per_sample_weights=g_vals, mode="sum") \
            if ctx.needs_input_grad[0] else None
        rows = torch.arange(len(x), device=x.device).repeat_interleave(idx.shape[1])
        selected = torch.sparse_coo_tensor(torch.stack([idx.reshape(-1), rows]), g_vals.reshape(-1),
                                           (w.shape[0], len(x)), check_invariants=False)
        g_w = torch.sparse.mm(selected, x)  # Σ over selected (row, latent) of g · x_row: [width, d_in]
        g_b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device).index_add_(0, idx.reshape(-1), g_vals.reshape(-1))
        if g_pre is not None:
            g_x = g_x + g_pre @ w if g_x is not None else None
            g_w = g_w + g_pre.T @ x
            g_b = g_b + g_pre.sum(0)
        return g_x, g_w, g_b, None
