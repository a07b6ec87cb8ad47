"""Per-head weight matrices in one convention, whatever the family stores (row vectors: x @ W).

W_Q [head, d_model, d_head], W_K and W_V [kv_head, d_model, d_head], W_O [head, d_head, d_model],
W_E [vocab, d_model], W_U [d_model, vocab]. Biases, norms and rotary embeddings are not included:
circuit scores built from these (OV, QK) are the usual linear approximations.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import Model
from .offload import loaded


def _in_out(module: nn.Module) -> torch.Tensor:
    """A projection's weight as [in, out] (nn.Linear stores [out, in]; GPT-2's Conv1D [in, out])."""
    return module.weight.T if isinstance(module, nn.Linear) else module.weight


def attention_weights(model: Model, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_Q, W_K, W_V, W_O) of ``layer``, detached, float32."""
    attn = model.hf.get_submodule(f"{model.adapter.blocks}.{layer}.{model.adapter.attn}")
    with loaded(attn):  # real weights even where the block is offloaded
        return _attention_weights(model, layer, attn)


def _attention_weights(model: Model, layer: int, attn: nn.Module) -> tuple[torch.Tensor, ...]:
    c, d, dh = model.cfg, model.cfg.d_model, model.cfg.d_head

    def heads(w: torch.Tensor, n: int) -> torch.Tensor:  # [d, n * dh] -> [n, d, dh]
        return w.reshape(d, n, dh).permute(1, 0, 2)

    if hasattr(attn, "q_proj"):  # llama family
        wq, wk, wv = (heads(_in_out(getattr(attn, f"{x}_proj")), n)
                      for x, n in (("q", c.n_heads), ("k", c.n_kv_heads), ("v", c.n_kv_heads)))
    elif hasattr(attn, "qkv_proj"):  # phi3: one Linear, [q | k | v] with grouped-query widths
        sizes = [c.n_heads * dh, c.n_kv_heads * dh, c.n_kv_heads * dh]
        wq, wk, wv = (heads(w, n) for w, n in zip(_in_out(attn.qkv_proj).split(sizes, dim=1),
                                                  (c.n_heads, c.n_kv_heads, c.n_kv_heads)))
    elif hasattr(attn, "c_attn"):  # gpt2: [d, 3d] = q | k | v
        wq, wk, wv = (heads(w, c.n_heads) for w in _in_out(attn.c_attn).split(d, dim=1))
    elif hasattr(attn, "query_key_value"):  # gpt_neox: per head [q | k | v]
        w = _in_out(attn.query_key_value).reshape(d, c.n_heads, 3, dh).permute(2, 1, 0, 3)
        wq, wk, wv = w[0], w[1], w[2]
    else:  # pragma: no cover - every adapter family is handled above
        raise NotImplementedError(f"no weight reader for {type(attn).__name__}")
    w_o, _ = model.out_proj(layer)
    return tuple(t.detach().float().clone() for t in (wq, wk, wv, w_o))


def embedding_weights(model: Model) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_E [vocab, d_model], W_U [d_model, vocab])."""
    with loaded(model.embed, model.unembed):
        return model.embed.weight.detach().float().clone(), model.unembed.weight.detach().float().T.clone()


def mlp_out_weights(model: Model, layer: int) -> torch.Tensor:
    """W_out [d_mlp, d_model]: row n is what one unit of neuron n writes into the residual stream."""
    if model.adapter.mlp_down is None:
        raise ValueError(f"{model.cfg.family} is a mixture of experts: its MLP has no single down projection "
                         "(no neurons to read)")
    down = model.hf.get_submodule(f"{model.adapter.blocks}.{layer}.{model.adapter.mlp_down}")
    with loaded(down):
        return _in_out(down).detach().float().clone()


def norm_affine(model: Model, layer: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(gain [d_model], bias [d_model], is LayerNorm) of the pre-MLP norm of ``layer``: its output is
    gain·x̂ + bias with x̂ the normalised input (x/RMS, or (x − μ)/σ for a LayerNorm). Gemma's
    RMSNorm multiplies by 1 + weight; a family without pre-norms gives the identity (1, 0)."""
    from .norms import norm_gain

    if model.adapter.attn_norm is None:  # no pre-norms (OLMo 2/3): the MLP reads the residual itself
        ones = torch.ones(model.cfg.d_model)
        return ones, torch.zeros_like(ones), False
    # the norm the MLP reads through: its own, or (Cohere) the one attention shares with it
    norm = model.hf.get_submodule(f"{model.adapter.blocks}.{layer}.{model.adapter.mid_norm or model.adapter.attn_norm}")
    from .norms import is_identity

    if is_identity(norm):  # no norms at all (compiled programs)
        ones = torch.ones(model.cfg.d_model)
        return ones, torch.zeros_like(ones), False
    from .norms import centres

    with loaded(norm):
        gain = norm_gain(norm)
        bias = getattr(norm, "bias", None)
        bias = bias.detach().float().clone() if bias is not None else torch.zeros_like(gain)
    return gain, bias, centres(norm) or getattr(norm, "bias", None) is not None
