"""A transformer whose circuit is known because its weights are set by hand.

A 2-layer GPT-2 (4 heads of width 4, d_model 16, ReLU MLP, no norms, untied unembedding) over 4
tokens. Each component writes its own four residual dimensions, and reads only what the circuit
says, so exactly these six edges carry the computation:

- ``embed → a0.h0.v``: head 0.0 averages the one-hot tokens seen so far (uniform attention) into dims 4–7;
- ``a0.h0 → m0``: MLP 0 passes those averages through ReLU(x − 0.2) into dims 8–11;
- ``embed → a1.h0.q`` and ``embed → a1.h0.k``: head 1.0 attends to earlier copies of the current token;
- ``m0 → a1.h0.v``: … and reads their MLP-0 features into dims 12–15;
- ``a1.h0 → logits``: the unembedding reads dims 12–15 (logit of token t = dim 12 + t).

Every other head and MLP 1 have zero weights. Circuit-discovery methods should find exactly these
edges; faithfulness of the circuit is 1 and of its complement 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.model import Model
from ..tasks.base import Task
from .attn_only import toy_tokenizer

PLANTED_EDGES = [("embed", "a0.h0.v"), ("a0.h0", "m0"), ("embed", "a1.h0.q"), ("embed", "a1.h0.k"),
                 ("m0", "a1.h0.v"), ("a1.h0", "logits")]


def planted_model() -> Model:
    """The hand-set model (see the module docstring) as a mechscope ``Model``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=4, n_positions=32, n_embd=16, n_layer=2, n_head=4, n_inner=8,
                     activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=False, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(cfg)
    hf.config._attn_implementation = "sdpa"
    eye = torch.eye(4)
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        t = hf.transformer
        t.wte.weight[:, 0:4] = eye  # token t -> dim t
        for block in t.h:
            block.ln_1, block.ln_2 = nn.Identity(), nn.Identity()
        t.ln_f = nn.Identity()
        a0, a1 = t.h[0].attn, t.h[1].attn  # c_attn: [in, q(16) | k(16) | v(16)]; head h owns cols 4h..4h+3
        a0.c_attn.weight[0:4, 32:36] = eye  # a0.h0 value reads the token dims
        a0.c_proj.weight[0:4, 4:8] = eye  # ... and writes dims 4-7
        t.h[0].mlp.c_fc.weight[4:8, 0:4] = eye  # m0 reads dims 4-7
        t.h[0].mlp.c_fc.bias[0:4] = -0.2
        t.h[0].mlp.c_proj.weight[0:4, 8:12] = eye  # ... and writes dims 8-11
        a1.c_attn.weight[0:4, 0:4] = 2 * eye  # a1.h0 query: the current token
        a1.c_attn.weight[0:4, 16:20] = 2 * eye  # a1.h0 key: each earlier token
        a1.c_attn.weight[8:12, 32:36] = eye  # a1.h0 value: m0's features
        a1.c_proj.weight[0:4, 12:16] = eye  # ... written to dims 12-15
        hf.lm_head.weight[:, 12:16] = eye  # logit of token t reads dim 12 + t
    return Model(hf, toy_tokenizer(4), name="planted-circuit")


def planted_task(model: Model, n: int = 16, length: int = 8, seed: int = 0) -> Task:
    """Random clean/corrupted sequences over the 4 tokens; good = the clean run's top token, bad
    = the corrupted run's (pairs where they coincide are dropped)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 4, (4 * n, length), generator=g)
    corrupted = torch.randint(0, 4, (4 * n, length), generator=g)
    with torch.no_grad():
        good = model.run(clean).logits[:, -1].argmax(-1)
        bad = model.run(corrupted).logits[:, -1].argmax(-1)
    keep = (good != bad).nonzero().flatten()[:n].tolist()
    return Task(name="planted", version=1, seed=seed, clean=clean[keep].tolist(), corrupted=corrupted[keep].tolist(),
                good=[[int(good[i])] for i in keep], bad=[[int(bad[i])] for i in keep])
