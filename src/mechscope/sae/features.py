"""Features as interventions: splice a dictionary into a run, clamp or ablate its features, steer
along a decoder direction.

``splice(sae)`` replaces the target site's activation y by the reconstruction:

    y ← ŷ(f′) + (y − ŷ(f))   with ``error=True``  (the model's output is unchanged until f′ ≠ f)
    y ← ŷ(f′)                 with ``error=False``

where f = encode(x) and f′ is f with ``ablate``d features set to 0 and ``clamp``ed ones set to
their values. For an SAE x = y (one site); a transcoder reads x at ``cfg.site`` in the same
forward and writes at ``cfg.target_site``. ``positions`` narrow where it applies (as for every
intervention); ``record`` (a dict) receives the latents f [batch, pos, width] and the activations
it replaced, for measurements.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.interventions import Add, Intervention, Replace
from .config import SAEError
from .dictionary import SparseCoder


def _sites(sae: SparseCoder, site: str | None, target_site: str | None) -> tuple[str, str]:
    c = sae.cfg
    site = site or c.site
    target = target_site or c.target_site or site
    if site is None:
        raise SAEError("this dictionary has no site in its config: give site=")
    return site, target


def splice(sae: SparseCoder, *, error: bool = False, clamp: dict[int, float] | None = None,
           ablate: Sequence[int] = (), positions: Sequence[int] | None = None, site: str | None = None,
           target_site: str | None = None, record: dict | None = None) -> list[Intervention]:
    """Interventions that run the model through the dictionary (see the module docstring)."""
    c = sae.cfg
    site, target = _sites(sae, site, target_site)
    clamp = dict(clamp or {})
    bad = [i for i in [*clamp, *ablate] if not 0 <= int(i) < c.width]
    if bad:
        raise SAEError(f"feature(s) {bad} out of range: this dictionary has features 0..{c.width - 1}")
    held: dict[str, torch.Tensor] = {}

    def capture(x: torch.Tensor) -> torch.Tensor:
        held["x"] = x
        return x

    def replace(site_y: torch.Tensor) -> torch.Tensor:
        x = sae.site_rows(held.pop("x", site_y) if c.transcoder else site_y)
        y = site_y if c.transcoder else x  # a transcoder writes a whole [batch, pos, d_out] site
        xs = x.to(sae.W_enc.device, sae.W_enc.dtype)
        f = sae.encode(xs)
        y_hat = sae.decode(f, xs)
        new = y_hat
        if clamp or ablate:
            f2 = f.clone()
            if ablate:
                f2[..., list(ablate)] = 0.0
            for i, v in clamp.items():
                f2[..., int(i)] = float(v)
            new = sae.decode(f2, xs)
        if error:
            new = new + (y.to(new) - y_hat)
        if record is not None:
            record["latents"] = f.detach()
            record["target"] = y.detach()
            record["reconstruction"] = y_hat.detach()
        new = new.to(y.device, y.dtype)
        return new if c.transcoder else sae.into_site(new, site_y)

    out: list[Intervention] = []
    if c.transcoder:
        out.append(Replace(site, fn=capture, positions=positions))
    out.append(Replace(target, fn=replace, positions=positions))
    return out


def steer(sae: SparseCoder, feature: int, coef: float, *, positions: Sequence[int] | None = None,
          site: str | None = None) -> Add:
    """Add ``coef`` × the feature's decoder row (raw units: one unit of the feature) at the target site."""
    c = sae.cfg
    if not 0 <= feature < c.width:
        raise SAEError(f"feature {feature} out of range: this dictionary has features 0..{c.width - 1}")
    _, target = _sites(sae, site, None)
    if target.endswith(".attn.z"):
        raise SAEError(f"steering adds a vector at a [batch, pos, d] site; {target} is per head — "
                       "clamp the feature with splice(sae, clamp={feature: value}) instead")
    return Add(target, vector=(sae.W_dec[feature].detach() / sae.scale_out).float().cpu(), coef=coef, positions=positions)
