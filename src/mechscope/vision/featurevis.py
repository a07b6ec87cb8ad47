"""Feature visualization by activation maximisation (Olah, Mordvintsev & Schubert 2017).

The image is not optimised pixel by pixel but through a decorrelated parameterisation:

- Fourier: the image's 2-D spectrum per colour channel is the parameter, each frequency scaled by
  1 / max(f, 1/size)^decay (so all frequencies learn at comparable rates), inverse-FFT to pixels;
- colour decorrelation: the three channels are mixed by the square root of ImageNet's colour
  covariance (Lucid's matrix, normalised), then squashed to [0, 1] by a sigmoid.

Each step applies random transformations before the model sees the image (transformation
robustness): pad 12 px, jitter ±8 px, scale ×{0.95 … 1.05}, rotate ±5°, jitter ±4 px, resize back
(pixel sizes for 224 px images, scaled for smaller ones).
The objective is a channel's mean activation over space (``"_blocks.10:17"``), one channel at the
centre position (``neuron=True``) or a class logit (``"class:tabby"``); Adam at ``lr`` for
``steps``; the forward stops at the objective's module. A seed makes the run reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..results import Provenance, Result
from .model import ImageModel, VisionSiteError

COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR = COLOR_SQRT / COLOR_SQRT.norm(dim=0).max()


class FourierImage(torch.nn.Module):
    """A [1, C, size, size] image in [0, 1] from a scaled spectrum [C, size, size // 2 + 1]
    (complex); colour images (C = 3) are decorrelated, grey ones (C = 1) only squashed."""

    def __init__(self, size: int, decay: float = 1.0, sd: float = 0.01, generator: torch.Generator | None = None,
                 channels: int = 3):
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freq = (fx ** 2 + fy ** 2).sqrt()
        self.register_buffer("scale", (1.0 / freq.clamp(min=1.0 / size) ** decay) * size ** 0.5)
        self.spectrum = torch.nn.Parameter(sd * torch.randn(channels, size, size // 2 + 1, 2, generator=generator))
        self.size = size

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size)) / 4.0  # unnormalised inverse ÷ N, as Lucid
        if img.shape[0] == 3:
            img = torch.einsum("chw,dc->dhw", img, COLOR.to(img))
        return torch.sigmoid(img)[None]


def transform(img: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Lucid's standard robustness transforms on [1, C, H, W] (pads and jitters scaled from 224 px),
    resized back to ``size``."""
    def rnd(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    p = max(2, 12 * size // 224)  # Lucid's 12 px at 224, scaled to the image
    x = torch.nn.functional.pad(img, (p, p, p, p), value=0.5)
    j1, j2 = max(1, 8 * size // 224), max(1, 4 * size // 224)
    x = torch.roll(x, (rnd(-j1, j1), rnd(-j1, j1)), dims=(2, 3))
    scale = [0.95, 0.975, 1.0, 1.025, 1.05][rnd(0, 4)]
    angle = math.radians(rnd(-5, 5))
    theta = torch.tensor([[math.cos(angle) / scale, -math.sin(angle) / scale, 0.0],
                          [math.sin(angle) / scale, math.cos(angle) / scale, 0.0]], dtype=x.dtype)[None]
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    x = torch.roll(x, (rnd(-j2, j2), rnd(-j2, j2)), dims=(2, 3))
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@dataclass
class FeatureVisualization(Result):
    """The optimised ``image`` [3, H, W], the objective per step ``curve``, and the target's value
    on the image vs on natural images (``natural``: per reference image)."""

    target: str
    image: torch.Tensor
    curve: torch.Tensor
    value: float
    natural: torch.Tensor
    steps: int
    title: ClassVar[str] = "Feature visualization"

    @property
    def ratio(self) -> float:
        """The visualization's value over the largest natural image's (> 1: it beats every photo)."""
        return self.value / max(float(self.natural.max()), 1e-12)

    def summary(self) -> str:
        return (f"{self.target}: {self.value:.3g} after {self.steps} steps vs {float(self.natural.max()):.3g} at most "
                f"on {len(self.natural)} natural images (mean {float(self.natural.mean()):.3g}) — {self.ratio:.1f}×")

    def evidence(self) -> dict:
        return {"target": self.target, "value": round(self.value, 4), "ratio": round(self.ratio, 3)}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.0), gridspec_kw={"width_ratios": [1, 1.3]})
        axes[0].imshow(self.image.permute(1, 2, 0).numpy())
        axes[0].set_title(self.target, fontsize=9)
        axes[0].axis("off")
        axes[1].plot(self.curve.numpy(), label="visualization (transformed)")
        axes[1].axhline(float(self.natural.max()), color="C1", ls="--", label="best natural image")
        axes[1].set(xlabel="step", ylabel="objective")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        return fig


def objective(model: ImageModel, target: str, neuron: bool = False):
    """(site or None, f: tensor → [batch]) for ``"module:channel"`` (f of the module's output) or
    ``"class:NAME"`` (f of the logits)."""
    if target.startswith("class:"):
        c = model.class_index(target[6:] if not target[6:].isdigit() else int(target[6:]))
        return None, lambda logits: logits[:, c]
    name, _, ch = target.partition(":")
    if not ch.isdigit():
        raise VisionSiteError(f"target {target!r}: give one channel as 'module:17', or 'class:NAME'")
    model.resolve(name)
    c = int(ch)

    def f(acts):
        a = acts[:, c]
        if neuron:
            return a[:, a.shape[1] // 2, a.shape[2] // 2] if a.dim() == 3 else a
        return a.flatten(1).mean(1) if a.dim() > 1 else a
    return name, f


def _forward(model: ImageModel, images: torch.Tensor, site: str | None) -> torch.Tensor:
    """The site's output (the forward stops there) or, for site None, the logits."""
    return model.run(images).logits if site is None else model.forward_until(images, site)


def value_on(model: ImageModel, images: torch.Tensor, target: str, neuron: bool = False) -> torch.Tensor:
    """The objective on images [n, 3, H, W] (no transformations): [n]."""
    site, f = objective(model, target, neuron)
    with torch.no_grad():
        return f(_forward(model, images, site)).float()


def visualize(model: ImageModel, target: str, *, steps: int = 256, lr: float = 0.05, seed: int = 0,
              neuron: bool = False, decay: float = 1.0, natural: torch.Tensor | None = None,
              progress: bool = True) -> FeatureVisualization:
    """Maximise ``target`` (see the module docstring); ``natural`` images [n, 3, H, W] to compare
    with (default: scikit-image's bundled photos)."""
    site, f = objective(model, target, neuron)
    g = torch.Generator().manual_seed(seed)
    param = FourierImage(model.size, decay=decay, generator=g, channels=model.mean.shape[1])
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    curve = []
    for _ in tqdm(range(steps), desc=f"visualize {target}", disable=not progress, leave=False):
        value = f(_forward(model, transform(param(), model.size, g), site)).mean()  # the graph is kept
        opt.zero_grad()
        (-value).backward()
        opt.step()
        curve.append(float(value.detach()))
    with torch.no_grad():
        image = param()
    if natural is None:
        from .images import PHOTOS, photo, prepare

        if model.mean.shape[1] != 3:
            raise ValueError(f"{model.name} takes {model.mean.shape[1]}-channel images: give natural= images to compare")
        natural = torch.cat([prepare(photo(p), model.size) for p in PHOTOS])
    return FeatureVisualization(
        provenance=Provenance(model=model.name, fingerprint=model.fingerprint, seed=seed,
                              params={"target": target, "steps": steps, "lr": lr, "neuron": neuron, "decay": decay}),
        target=target, image=image[0].detach().cpu(), curve=torch.tensor(curve),
        value=float(value_on(model, image, target, neuron)[0]), natural=value_on(model, natural, target, neuron).cpu(),
        steps=steps)
