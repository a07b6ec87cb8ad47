"""Channels of a convolutional network: which ones a prediction needs, what excites them, and how
they are built from the previous layer's channels.

``channel_ablation(model, images, site)`` zero-ablates every channel of ``site``, one channel per
batch row (channels × images rows per forward, ``batch`` rows at a time), and reports each
channel's mean drop in the log-probability of each image's clean top class, and the fraction of
images whose top class changes.

``top_examples(model, "site:channel", images)`` ranks images (and, inside each, the spatial
position) by the channel's activation. ``channel_weights(model, conv, channel)`` reads a
convolution's weights into one output channel: the input channels it adds up, by |weight| summed
over the kernel (for a 1 × 1 projection, the weight matrix row itself): the circuit one layer back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..checks import positive_int
from ..models.interventions import Replace
from ..results import Provenance, Result
from .model import ImageModel, VisionSiteError


@dataclass
class ChannelAblation(Result):
    """Zero-ablating each channel of ``site``: ``effect`` [channels] (mean change in the clean top
    class's log-probability) and ``flips`` [channels] (fraction of images whose top class changes)."""

    site: str
    classes: list[str]
    effect: torch.Tensor
    flips: torch.Tensor
    title: ClassVar[str] = "Channel ablation"

    def top(self, k: int = 5) -> list[tuple[int, float, float]]:
        order = self.effect.argsort()[:k].tolist()
        return [(c, float(self.effect[c]), float(self.flips[c])) for c in order]

    def summary(self) -> str:
        rows = ", ".join(f"ch {c} {e:+.3f} (flips {f:.0%})" for c, e, f in self.top(6))
        return (f"zero-ablating each of {len(self.effect)} channels of {self.site} on {len(self.classes)} images "
                f"({', '.join(c.split(',')[0] for c in self.classes[:4])}{', ...' if len(self.classes) > 4 else ''}): "
                f"largest drops in log p(top class): {rows}")

    def evidence(self) -> dict:
        c, e, f = self.top(1)[0]
        return {"site": self.site, "top_channel": c, "effect": round(e, 4), "flips": round(f, 3)}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.bar(range(len(self.effect)), self.effect.numpy(), width=1.0)
        ax.set(xlabel=f"channel of {self.site}", ylabel="Δ log p(top class)", title="zero-ablating one channel")
        fig.tight_layout()
        return fig


@torch.no_grad()
def channel_ablation(model: ImageModel, images: torch.Tensor, site: str, *, batch_size: int = 64,
                     progress: bool = True) -> ChannelAblation:
    """Zero-ablate every channel of ``site`` on ``images`` [n, 3, H, W] (see the module docstring)."""
    positive_int(batch_size, "batch_size", "images × channels per forward")
    [(name, ch)] = model.resolve(site)
    if ch is not None:
        raise VisionSiteError(f"channel_ablation ablates every channel of a module; give {name!r} without channels")
    clean = model.run(images, cache=name)
    n_ch = clean.cache[name].shape[1]
    logp = clean.logits.log_softmax(-1)
    top = logp.argmax(-1)
    n = len(images)
    per = max(1, batch_size // n)
    effects, flips = [], []
    for c0 in tqdm(range(0, n_ch, per), desc=f"ablating {name} channels", disable=not progress, leave=False):
        chans = list(range(c0, min(n_ch, c0 + per)))
        which = torch.tensor(chans).repeat_interleave(n)

        def zero(x: torch.Tensor, which=which) -> torch.Tensor:
            x = x.clone()
            x[torch.arange(x.shape[0]), which] = 0.0
            return x

        run = model.run(images.repeat(len(chans), 1, 1, 1), interventions=[Replace(name, fn=zero)])
        lp = run.logits.log_softmax(-1).view(len(chans), n, -1)
        effects.append((lp.gather(-1, top.view(1, n, 1).expand(len(chans), n, 1))[..., 0] - logp.gather(-1, top[:, None])[:, 0]).mean(1))
        flips.append((lp.argmax(-1) != top).float().mean(1))
    return ChannelAblation(provenance=Provenance(model=model.name, fingerprint=model.fingerprint,
                                                 params={"site": name, "images": n}),
                           site=name, classes=[model.classes[int(t)] for t in top], effect=torch.cat(effects).float(),
                           flips=torch.cat(flips).float())


@torch.no_grad()
def top_examples(model: ImageModel, target: str, images: torch.Tensor, k: int = 5) -> list[tuple[int, float, tuple]]:
    """[(image index, activation, (row, col) of the peak)] of the ``k`` images that most activate
    ``target`` (``"site:channel"``), by their largest spatial activation."""
    [(name, ch)] = model.resolve(target)
    if ch is None or len(ch) != 1:
        raise VisionSiteError(f"top_examples needs one channel, like '{name}:17'")
    a = model.run(images, cache=name).cache[name][:, ch[0]]
    flat = a.flatten(1)
    peak, where = flat.max(1)
    order = peak.argsort(descending=True)[:k]
    w = a.shape[-1] if a.dim() == 3 else 1
    return [(int(i), float(peak[i]), (int(where[i]) // w, int(where[i]) % w)) for i in order]


def channel_weights(model: ImageModel, conv: str, channel: int, k: int = 8) -> list[tuple[int, float]]:
    """The ``k`` input channels with the largest weights into output ``channel`` of the convolution
    ``conv``, as (input channel, weight summed over the kernel), by |weight|."""
    module = model.modules.get(conv)
    if not isinstance(module, torch.nn.Conv2d):
        raise VisionSiteError(f"{conv!r} is not a Conv2d of {model.name}")
    if not 0 <= channel < module.out_channels:
        raise VisionSiteError(f"{conv} has output channels 0..{module.out_channels - 1}; got {channel}")
    if module.groups != 1:
        raise VisionSiteError(f"{conv} is a grouped (depthwise) convolution: channel {channel} reads only its own group")
    w = module.weight.detach()[channel].sum((1, 2))
    order = w.abs().argsort(descending=True)[:k]
    return [(int(i), float(w[i])) for i in order]
