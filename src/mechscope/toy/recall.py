"""A toy model trained for causal scrubbing: recall the first token.

A 1-layer attention-only transformer (2 heads) reads 8 random tokens and is trained to predict,
at the last position, the *first* token. The truth is known by construction: the answer can only
reach the logits through attention (the direct path sees the last token alone), and what the heads
send to the logits can depend on the first token only.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..models.model import Model
from .attn_only import attn_only


def recall_data(n: int, length: int = 8, vocab: int = 16, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """n random sequences over tokens 1 … vocab−1 and their targets (the first token)."""
    x = torch.randint(1, vocab, (n, length), generator=torch.Generator().manual_seed(seed))
    return x.tolist(), x[:, 0].tolist()


def train_first_token(steps: int = 400, *, vocab: int = 16, length: int = 8, seed: int = 0,
                      progress: bool = False) -> Model:
    """Train the first-token-recall model (≈ 2 s on one CPU thread; final loss ≈ 0.003)."""
    model = attn_only(1, n_heads=2, d_model=32, vocab=vocab, context=length, seed=seed)
    opt = torch.optim.AdamW(model.hf.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed + 1)
    model.hf.train()
    for _ in tqdm(range(steps), desc="first-token recall", disable=not progress):
        x = torch.randint(1, vocab, (128, length), generator=g)
        loss = torch.nn.functional.cross_entropy(model.hf(input_ids=x).logits[:, -1], x[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.hf.eval()
    model.name = "first-token-recall"
    return model
