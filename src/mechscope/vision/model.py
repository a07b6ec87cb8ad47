"""Image models with named insides: every submodule's output is a site, channels within it too.

A site is a module's dotted name as PyTorch names it (``_blocks.4``, ``_blocks.4._bn2``,
``_fc``), optionally with channels after a colon: ``_blocks.4:17``, ``_blocks.4:3,17``,
``_conv_head:0-15`` (channels are dim 1 of the output: [batch, channels, (h, w)]). Globs
(``_blocks.*``) match module names.

``model.run(images, cache=..., interventions=..., grads=..., metric=...)`` is the language
models' engine (``models.engine``: the same planning, hooks, ``Selection``, ``Cache`` and
gradients; images that require grad keep the graph through logits and cache, for optimising
inputs). A site is a module path (its output; ``path.output`` / ``path.input`` also work) in the
"channel" layout, viewed channels-last, so every intervention applies to the selected channels as
to a residual's features: ``Ablate`` (zero; mean over batch and space per channel; resample
another image's), ``Patch`` (from another ``ImageRun`` caching the module, or images),
``Add`` (a vector over the selected channels), ``ProjectOut`` (a direction over them) and
``Replace``. Channels are chosen in the site name; ``heads``/``positions`` do not apply.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..models.interventions import Intervention, InterventionError, source_of
from ..models.engine import Engine, whole
from ..models.hooks import HookState, hooked
from ..models.fingerprint import fingerprint_of
from ..models.sites import Site, SiteError, module_site
from ..models.run import Cache
from ..checks import indices


VisionSiteError = SiteError  # a site that names no module of the image model, or channels it lacks (the engine's error)


def parse_channels(spec: str) -> list[int]:
    """``"17"``, ``"3,17"``, ``"0-15"`` → channel indices."""
    try:
        return indices(spec, "channel")
    except ValueError as err:
        raise VisionSiteError(str(err)) from None


@dataclass
class ImageRun:
    """The result of ``ImageModel.run``: ``images`` [batch, 3, H, W] (model input), ``logits``
    [batch, classes], ``cache``/``grads``: ``Cache`` of site → tensor (channel-selected sites as
    selected)."""

    model: "ImageModel" = field(repr=False)
    images: torch.Tensor
    logits: torch.Tensor
    cache: Cache
    grads: Cache = field(default_factory=lambda: Cache({}, what="kept for gradients"))
    metric: torch.Tensor | None = None
    mask = None  # no padding: what the engine reads of a source run

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k classes of each image, as (class name, probability)."""
        p = self.logits.float().softmax(-1)
        v, i = p.topk(k, dim=-1)
        return [[(self.model.classes[int(c)], float(q)) for q, c in zip(vr, ir)] for vr, ir in zip(v, i)]


class ImageModel(Engine):
    """An image classifier (``module``: images [batch, C, H, W] → logits [batch, classes]) with
    its class names and input normalisation (``mean``/``std`` per colour channel, on images in
    [0, 1]; C = len(mean): 3 for colour, 1 for grey)."""

    def __init__(self, module: nn.Module, classes: Sequence[str], *, name: str, size: int,
                 mean: Sequence[float], std: Sequence[float]):
        self.module = module.eval()
        self.classes = list(classes)
        self.name, self.size = name, size
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.modules = {n: m for n, m in module.named_modules() if n}

    @property
    def cfg(self) -> dict:
        """What the archive records about the model."""
        return {"kind": "image classifier", "size": self.size, "classes": len(self.classes),
                "modules": len(self.modules), "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @cached_property
    def fingerprint(self) -> str:
        """``fingerprint_of`` the weights and ``cfg`` (provenance of every result)."""
        return fingerprint_of(self.module, self.cfg)

    def __repr__(self) -> str:
        return f"ImageModel({self.name!r}: {len(self.modules)} modules, {len(self.classes)} classes, {self.size}px)"

    @property
    def sites(self) -> list[str]:
        return list(self.modules)

    def class_index(self, name: str | int) -> int:
        """A class by index, exact name, or the first name containing it (``"tabby"``)."""
        if isinstance(name, int):
            if not 0 <= name < len(self.classes):
                raise ValueError(f"class {name} out of range: {len(self.classes)} classes")
            return name
        low = name.lower()
        for i, c in enumerate(self.classes):
            if c.lower() == low or low in (s.strip().lower() for s in c.split(",")):
                return i
        hits = [i for i, c in enumerate(self.classes) if low in c.lower()]
        if not hits:
            raise ValueError(f"no class named {name!r} (e.g. {', '.join(repr(c) for c in self.classes[:3])}, ...)")
        return hits[0]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → the model's input units."""
        return (images - self.mean.to(images)) / self.std.to(images)

    def resolve(self, spec: str | Iterable[str] | None) -> list[tuple[str, list[int] | None]]:
        """Sites (globs, ``name:channels``) → [(module name, channels or None)]."""
        return [(s.module, list(s.channels) if s.channels is not None else None) for s in self._sites(spec)]

    def _sites(self, spec: str | Iterable[str] | None) -> list[Site]:
        if spec is None:
            return []
        specs = [spec] if isinstance(spec, str) else list(spec)
        out = []
        for s in specs:
            if not isinstance(s, str):
                raise TypeError(f"a site name must be a string, got {s!r}")
            name, _, ch = s.partition(":")
            channels = tuple(parse_channels(ch)) if ch else None
            if any(c in name for c in "*?["):
                found = [module_site(n, self.modules, "channel", default_io="output") for n in fnmatch.filter(self.modules, name)]
            else:
                found = [module_site(name, self.modules, "channel", default_io="output")]
            if not found or found[0] is None:
                close = [n for n in self.modules if n.count(".") <= 1][:8]
                raise VisionSiteError(f"no module {name!r} in {self.name}; modules are named like "
                                      f"{', '.join(close)}, ... (model.sites lists all {len(self.modules)})")
            for site in found:
                if channels is not None:
                    site = replace(site, name=f"{site.name}:{','.join(map(str, channels))}", channels=channels)
                out.append(site)
        return out

    def _check_intervention(self, iv: Intervention) -> None:
        super()._check_intervention(iv)
        for field_name in ("heads", "positions"):
            if getattr(iv, field_name) is not None:
                raise InterventionError(f"{type(iv).__name__} at {iv.site}: {field_name}= does not apply to image "
                                        "sites; select channels in the site name (e.g. '_blocks.4:17')")

    def _source_run(self, iv: Intervention, sites: list[Site]) -> "ImageRun | None":
        """The run an intervention reads from: an ``ImageRun`` that cached the modules, or images
        [batch, C, H, W] run here."""
        if not iv.needs_source():
            return None
        src = source_of(iv)
        wanted = sorted({whole(s) for s in sites})
        if isinstance(src, ImageRun):
            missing = [n for n in wanted if n not in src.cache]
            if missing:
                raise InterventionError(f"{type(iv).__name__} at {missing[0]}: the source run did not cache {missing[0]}")
            return src
        if isinstance(src, torch.Tensor) and src.dim() == 4:
            return self.run(src, cache=wanted)
        raise InterventionError(f"{type(iv).__name__} at {iv.site}: the source must be an ImageRun caching the site, "
                                "or images [batch, 3, H, W]")

    def run(self, images: torch.Tensor, *, cache: str | Iterable[str] | None = None,
            interventions: Sequence[Intervention] = (), grads: str | Iterable[str] | None = None,
            metric: Callable[[ImageRun], torch.Tensor] | None = None) -> ImageRun:
        """One forward over ``images`` [batch, 3, H, W] in [0, 1] (see the module docstring)."""
        c = self.mean.shape[1]
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != c:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be [batch, {c}, H, W] in [0, 1]; got {got}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if grads is not None and metric is None:
            raise ValueError("grads=[...] needs metric=fn(run) -> scalar to differentiate")
        # gradients flow when a metric asks for them, or when the images themselves require grad
        # (feature visualization: then logits and cache keep their graph)
        keep_graph = metric is not None or images.requires_grad
        state = HookState(self._plan(cache, interventions, grads), keep_graph=keep_graph)
        x = self.normalise(images if images.dtype == torch.float32 else images.float())
        with torch.set_grad_enabled(keep_graph), hooked(self, state):
            logits = self.module(x)
        run = ImageRun(self, images, logits, Cache(state.cache))
        if metric is not None:
            self._gradients(run, state, metric)
            run.cache = Cache({k: v.detach() for k, v in state.cache.items()})
        return run
