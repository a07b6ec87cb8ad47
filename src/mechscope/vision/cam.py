"""Grad-CAM on image models (Selvaraju et al. 2017).

For class c and the feature maps A [k, h, w] at ``site``:

    α_k = (1/hw) Σ_ij ∂y_c/∂A_k,ij        (y_c: the class logit, before the softmax)
    L   = ReLU(Σ_k α_k A_k)                (the ReLU keeps what speaks *for* the class)

then L is upsampled bilinearly to the image. The default site for EfficientNet-Lite0 is ``_bn1``,
the last feature maps (7 × 7 × 1280) before pooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..results import Provenance, Result
from .model import ImageModel


@dataclass
class ImageAttribution(Result):
    """A map over an image's pixels for one class: ``image`` [3, H, W] in [0, 1], ``heatmap`` [H, W];
    for integrated gradients also ``attributions`` [3, H, W] and the completeness ``gap``."""

    image: torch.Tensor
    heatmap: torch.Tensor
    method: str
    target: str
    site: str
    probability: float
    attributions: torch.Tensor | None = None
    gap: float | None = None
    title: ClassVar[str] = "Image attribution"

    def mass_in(self, mask: torch.Tensor) -> float:
        """Fraction of the map's positive mass inside ``mask`` [H, W] (bool)."""
        pos = self.heatmap.clamp(min=0).double()
        return float(pos[mask.bool()].sum() / pos.sum().clamp(min=1e-30))

    def summary(self) -> str:
        h = self.heatmap.clamp(min=0).flatten()
        top = h.sort(descending=True).values
        share = float(top[: max(1, len(top) // 5)].sum() / top.sum().clamp(min=1e-30))
        ys, xs = torch.nonzero(self.heatmap == self.heatmap.max(), as_tuple=True)
        return (f"{self.method} for {self.target!r} (p = {self.probability:.3f}) at {self.site}: "
                f"{share:.0%} of the map in its top 20% of pixels; peak at (row {int(ys[0])}, col {int(xs[0])}) "
                f"of {tuple(self.heatmap.shape)}"
                + (f"; completeness gap {self.gap:+.3g} (sum {float(self.attributions.sum()):.4g})"
                   if self.gap is not None else ""))

    def evidence(self) -> dict:
        return {"target": self.target, "probability": round(self.probability, 4), "site": self.site}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
        img = self.image.permute(1, 2, 0).numpy()
        img = img[..., 0] if img.shape[-1] == 1 else img
        cmap = "gray" if img.ndim == 2 else None
        axes[0].imshow(img, cmap=cmap)
        axes[0].set_title("image", fontsize=9)
        axes[1].imshow(img, cmap=cmap)
        signed = self.heatmap.min() < 0
        lim = float(self.heatmap.abs().max()) or 1.0
        axes[1].imshow(self.heatmap.numpy(), cmap="bwr" if signed else "jet", alpha=0.55 if signed else 0.45,
                       vmin=-lim if signed else None, vmax=lim if signed else None)
        axes[1].set_title(f"{self.method}: {self.target.split(',')[0]}", fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        return fig


def grad_cam(model: ImageModel, image: torch.Tensor, target: str | int | None = None, *, site: str = "_bn1"
             ) -> ImageAttribution:
    """Grad-CAM of ``target`` (a class name or index; default: the top class) for ``image``
    [1, 3, H, W] in [0, 1] (see ``images.prepare``) at ``site``."""
    if image.dim() == 3:
        image = image[None]
    with torch.no_grad():
        probs = model.run(image).logits.softmax(-1)[0]
    c = int(probs.argmax()) if target is None else model.class_index(target)
    run = model.run(image, cache=site, grads=site, metric=lambda r: r.logits[0, c])
    A, G = run.cache[site][0], run.grads[site][0]
    if A.dim() != 3:
        raise ValueError(f"Grad-CAM needs feature maps [channels, h, w] at the site; {site} gives {tuple(A.shape)}")
    alpha = G.mean((1, 2))
    cam = torch.relu((alpha[:, None, None] * A).sum(0))
    heat = torch.nn.functional.interpolate(cam[None, None], size=image.shape[-2:], mode="bilinear",
                                           align_corners=False)[0, 0]
    return ImageAttribution(provenance=Provenance(model=model.name, fingerprint=model.fingerprint,
                                                      params={"site": site, "class": c}),
                            image=image[0].detach().cpu(), heatmap=heat.detach().cpu(), method="Grad-CAM",
                            target=model.classes[c], site=site, probability=float(probs[c]))
