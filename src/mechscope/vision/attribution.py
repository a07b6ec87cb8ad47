"""Pixel attribution on image models: integrated gradients (with SmoothGrad-style smoothing) and
occlusion maps, as ``ImageAttribution`` results drawn over the image.

``image_ig``: IG of the class logit from a baseline image (``"black"``, ``"grey"``, ``"blur"`` or a
tensor) with the shared IG engine (``mechscope.attribution.integrate``: Captum's integration rules,
the completeness gap); ``smooth=n`` averages IG over n copies of the image with Gaussian noise of
standard deviation ``sigma`` (SmoothGrad applied to IG, Captum's NoiseTunnel "smoothgrad"). The map
is the attributions summed over colour channels.

``occlusion``: every ``window`` × ``window`` patch (``stride`` apart) is replaced by the baseline;
each pixel gets the mean logit drop of the windows covering it (Captum's Occlusion). Occluded
images are run ``batch`` at a time.
"""

from __future__ import annotations

import torch

from ..attribution.integrate import integrated_gradients
from ..results import Provenance
from .cam import ImageAttribution
from .model import ImageModel


def _target(model: ImageModel, image: torch.Tensor, target) -> tuple[int, float]:
    with torch.no_grad():
        p = model.run(image).logits.softmax(-1)[0]
    c = int(p.argmax()) if target is None else model.class_index(target)
    return c, float(p[c])


def _baseline(image: torch.Tensor, baseline) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != image.shape:
            raise ValueError(f"baseline {tuple(baseline.shape)} must have the image's shape {tuple(image.shape)}")
        return baseline
    if baseline == "black":
        return torch.zeros_like(image)
    if baseline == "grey":
        return torch.full_like(image, 0.5)
    if baseline == "blur":
        k = torch.ones(3, 1, 15, 15) / 225.0
        return torch.nn.functional.conv2d(torch.nn.functional.pad(image, (7, 7, 7, 7), mode="replicate"), k, groups=3)
    raise ValueError(f"baseline={baseline!r}; valid: 'black', 'grey', 'blur' or an image tensor")


def image_ig(model: ImageModel, image: torch.Tensor, target: str | int | None = None, *, baseline="black",
             steps: int = 32, method: str = "gausslegendre", smooth: int = 0, sigma: float = 0.15, seed: int = 0,
             batch_size: int = 16) -> ImageAttribution:
    """Integrated gradients of the class logit for ``image`` [1, 3, H, W] in [0, 1]."""
    c, prob = _target(model, image, target)
    base = _baseline(image, baseline)[0]

    def f(points: torch.Tensor) -> torch.Tensor:
        return model.module(model.normalise(points))[:, c]

    g = torch.Generator().manual_seed(seed)
    inputs = [image[0]] if not smooth else [image[0] + sigma * torch.randn(image[0].shape, generator=g)
                                            for _ in range(smooth)]
    outs = [integrated_gradients(f, x, base, steps=steps, method=method, batch_size=batch_size) for x in inputs]
    attr = torch.stack([o.attributions for o in outs]).mean(0)
    gap = sum(o.gap for o in outs) / len(outs)
    name = "integrated gradients" + (f" (SmoothGrad × {smooth}, σ {sigma})" if smooth else "")
    return ImageAttribution(
        provenance=Provenance(model=model.name, fingerprint=model.fingerprint, seed=seed,
                              params={"class": c, "baseline": baseline if isinstance(baseline, str) else "tensor",
                                      "steps": steps, "method": method, "smooth": smooth, "sigma": sigma}),
        image=image[0].detach().cpu(), heatmap=attr.sum(0).detach().cpu(), method=name, target=model.classes[c],
        site="input", probability=prob, attributions=attr.detach().cpu(), gap=gap)


def occlusion(model: ImageModel, image: torch.Tensor, target: str | int | None = None, *, window: int = 32,
              stride: int = 16, baseline="grey", batch_size: int = 32) -> ImageAttribution:
    """Occlusion map of the class logit for ``image`` [1, 3, H, W] (see the module docstring)."""
    c, prob = _target(model, image, target)
    H, W = image.shape[-2:]
    if not 0 < window <= min(H, W) or stride < 1:
        raise ValueError(f"window={window}, stride={stride}: need 0 < window ≤ {min(H, W)} and stride ≥ 1")
    base = _baseline(image, baseline)
    rows = list(range(0, H - window + 1, stride))
    cols = list(range(0, W - window + 1, stride))
    spots = [(r, q) for r in rows for q in cols]
    total, count = torch.zeros(H, W, dtype=torch.float64), torch.zeros(H, W, dtype=torch.float64)
    with torch.no_grad():
        clean = float(model.run(image).logits[0, c])
        for s in range(0, len(spots), batch_size):
            chunk = spots[s:s + batch_size]
            imgs = image.repeat(len(chunk), 1, 1, 1)
            for i, (r, q) in enumerate(chunk):
                imgs[i, :, r:r + window, q:q + window] = base[0, :, r:r + window, q:q + window]
            drops = clean - model.run(imgs).logits[:, c].double()
            for (r, q), d in zip(chunk, drops):
                total[r:r + window, q:q + window] += d
                count[r:r + window, q:q + window] += 1
    heat = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total)).float()
    return ImageAttribution(
        provenance=Provenance(model=model.name, fingerprint=model.fingerprint,
                              params={"class": c, "window": window, "stride": stride,
                                      "baseline": baseline if isinstance(baseline, str) else "tensor"}),
        image=image[0].detach().cpu(), heatmap=heat, method=f"occlusion ({window}px, stride {stride})",
        target=model.classes[c], site="input", probability=prob)
