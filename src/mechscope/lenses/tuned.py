"""Tuned lens (Belrose et al. 2023): one affine translator per layer, trained so that decoding the
translated residual matches the model's final distribution.

Recipe: translator h ↦ h + A h + b with A = 0, b = 0 at the start (so training starts from the
logit lens), loss KL(final ‖ lens) summed over layers, on the embedded corpus; SGD with Nesterov
momentum, learning rate decayed linearly to zero, gradient norm clipped. Decoding goes through the
model's own final norm and unembedding, which stay frozen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.model import Model
from ..results import Provenance, Result
from ..models.sites import block_site


class TunedLens(nn.Module):
    """Translators for ``layers`` (resid_post of each); ``decode`` maps a residual to logits."""

    def __init__(self, d_model: int, layers: Sequence[int]):
        super().__init__()
        self.layers = list(layers)
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in self.layers)
        for t in self.translators:
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)

    def translate(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        t = self.translators[self.layers.index(layer)]
        return h + t(h)

    def decode(self, model: Model, h: torch.Tensor, layer: int) -> torch.Tensor:
        norm = model.final_norm
        return model.unembed(norm(self.translate(h, layer)))

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, path / "tuned_lens.safetensors")
        (path / "tuned_lens.json").write_text(json.dumps({"layers": self.layers,
                                                          "d_model": self.translators[0].in_features}))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TunedLens":
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads((path / "tuned_lens.json").read_text())
        lens = cls(meta["d_model"], meta["layers"])
        lens.load_state_dict(load_file(path / "tuned_lens.safetensors"))
        return lens


def _kl(final_logp: torch.Tensor, lens_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(final ‖ lens), in nats. final_logp, lens_logits: [tokens, vocab]."""
    lens_logp = lens_logits.float().log_softmax(-1)
    return (final_logp.exp() * (final_logp - lens_logp)).sum(-1).mean()


def _activations(model: Model, blocks: torch.Tensor, layers: Sequence[int]) -> tuple[dict, torch.Tensor]:
    run = model.run(blocks, cache=[block_site(l, "resid_post") for l in layers])
    hs = {l: run.cache[block_site(l, "resid_post")].flatten(0, 1) for l in layers}
    return hs, run.logits.flatten(0, 1).float().log_softmax(-1)


@dataclass
class TunedLensFit(Result):
    """A trained tuned lens: its translators (``weight`` [layers, d, d], ``bias`` [layers, d]) and the
    training loss (mean KL over the layers) at every step. ``lens`` is the ``TunedLens`` module."""

    layers: list[int]
    weight: torch.Tensor
    bias: torch.Tensor
    losses: list[float]
    title: ClassVar[str] = "Tuned lens training"

    @property
    def lens(self) -> TunedLens:
        if "_lens" not in self.__dict__:
            lens = TunedLens(self.weight.shape[-1], self.layers)
            with torch.no_grad():
                for t, w, b in zip(lens.translators, self.weight, self.bias):
                    t.weight.copy_(w)
                    t.bias.copy_(b)
            self.__dict__["_lens"] = lens
        return self.__dict__["_lens"]

    def summary(self) -> str:
        if not self.losses:
            return f"tuned lens for layers {self.layers}: not trained"
        return (f"tuned lens for layers {self.layers}: training KL {self.losses[0]:.3f} → {self.losses[-1]:.3f} nats "
                f"over {len(self.losses)} steps")

    def evidence(self) -> dict:
        return {"layers": self.layers, "first_kl": self.losses[0] if self.losses else None,
                "final_kl": self.losses[-1] if self.losses else None}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 2.6))
        ax.plot(self.losses)
        ax.set(xlabel="step", ylabel="KL(final ‖ lens), nats", title="tuned lens training")
        fig.tight_layout()
        return fig


def train_tuned_lens(model: Model, blocks: torch.Tensor, *, layers: Sequence[int] | None = None, steps: int = 100,
                     batch_size: int = 4, lr: float = 1.0, momentum: float = 0.9, clip: float = 1.0, seed: int = 0,
                     progress: bool = True) -> TunedLensFit:
    """Train on ``blocks`` [n, length] of token ids (e.g. ``data.token_blocks``); returns the fit:
    ``.lens`` (the module) and ``.losses`` (the training loss, mean KL over the layers, at every
    step)."""
    layers = list(range(model.cfg.n_layers - 1)) if layers is None else list(layers)
    lens = TunedLens(model.cfg.d_model, layers).to(model.device)
    opt = torch.optim.SGD(lens.parameters(), lr=lr, momentum=momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    for p in model.hf.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    try:
        bar = tqdm(range(steps), desc="tuned lens", disable=not progress)
        for _ in bar:
            idx = torch.randint(0, len(blocks), (batch_size,), generator=gen)
            hs, final = _activations(model, blocks[idx], layers)
            loss = sum(_kl(final, lens.decode(model, hs[l], l)) for l in layers) / len(layers)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(lens.parameters(), clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(kl=f"{losses[-1]:.3f}")
    finally:
        for p in model.hf.parameters():
            p.requires_grad_(True)
    fit = TunedLensFit(
        provenance=Provenance.of(model, prompts=blocks.tolist(), dataset="token blocks", layers=layers, steps=steps,
                                 batch_size=batch_size, lr=lr, momentum=momentum, clip=clip, seed=seed),
        layers=layers, weight=torch.stack([t.weight.detach().cpu() for t in lens.translators]),
        bias=torch.stack([t.bias.detach().cpu() for t in lens.translators]), losses=losses)
    fit.__dict__["_lens"] = lens  # the trained module itself (on the model's device)
    return fit


@dataclass
class LensComparison(Result):
    """KL(final ‖ lens) per layer on held-out text: logit lens vs tuned lens (nats/token)."""

    layers: list[int]
    logit_kl: torch.Tensor
    tuned_kl: torch.Tensor
    tokens: int
    train_loss: list[float]
    title: ClassVar[str] = "Tuned lens vs logit lens"

    def summary(self) -> str:
        better = int((self.tuned_kl < self.logit_kl).sum())
        return (f"Held-out KL(final ‖ lens) over {self.tokens} tokens: tuned lens {float(self.tuned_kl.mean()):.2f} "
                f"nats vs logit lens {float(self.logit_kl.mean()):.2f} on average; tuned is better at {better} of "
                f"{len(self.layers)} layers.")

    def evidence(self) -> dict:
        return {"tuned_mean_kl": float(self.tuned_kl.mean()), "logit_mean_kl": float(self.logit_kl.mean()),
                "tokens": self.tokens}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        a1.plot(self.layers, self.logit_kl.numpy(), "o-", label="logit lens")
        a1.plot(self.layers, self.tuned_kl.numpy(), "o-", label="tuned lens")
        a1.set_xlabel("layer")
        a1.set_ylabel("KL(final ‖ lens), nats")
        a1.set_yscale("log")
        a1.legend()
        a1.set_title("held-out text", fontsize=9)
        a2.plot(self.train_loss)
        a2.set_xlabel("step")
        a2.set_ylabel("training KL")
        a2.set_title("training", fontsize=9)
        fig.tight_layout()
        return fig


@torch.no_grad()
def compare_lenses(model: Model, lens: TunedLens, blocks: torch.Tensor, train_loss: Sequence[float] = (),
                   batch_size: int = 4) -> LensComparison:
    """Held-out KL per layer of the logit lens and of ``lens`` on ``blocks``."""
    logit, tuned = torch.zeros(len(lens.layers)), torch.zeros(len(lens.layers))
    norm = model.final_norm
    unembed = model.unembed
    n = 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start:start + batch_size]
        hs, final = _activations(model, chunk, lens.layers)
        w = chunk.numel()
        for i, l in enumerate(lens.layers):
            logit[i] += float(_kl(final, unembed(norm(hs[l])))) * w
            tuned[i] += float(_kl(final, lens.decode(model, hs[l], l))) * w
        n += w
    return LensComparison(provenance=Provenance.of(model, dataset="shakespeare (held-out works)", layers=lens.layers,
                                                   tokens=n),
                          layers=lens.layers, logit_kl=logit / n, tuned_kl=tuned / n, tokens=n,
                          train_loss=[float(x) for x in train_loss])
