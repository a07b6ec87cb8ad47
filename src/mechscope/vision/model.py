"""Image models with named insides: every submodule's output is a site, channels within it too.

A site is a module's dotted name as PyTorch names it (``_blocks.4``, ``_blocks.4._bn2``,
``_fc``), optionally with channels after a colon: ``_blocks.4:17``, ``_blocks.4:3,17``,
``_conv_head:0-15`` (channels are dim 1 of the output: [batch, channels, (h, w)]). Globs
(``_blocks.*``) match module names.

``model.run(images, cache=..., interventions=..., grads=..., metric=...)`` works as for language
models (images that require grad keep the graph through logits and cache, for optimising inputs): the same ``Ablate`` (zero, or the mean over batch and space per channel), ``Patch`` (from
another ``ImageRun`` or images), ``Add`` (a vector over the selected channels) and ``Replace``
apply at sites, selected channels only; ``heads``/``positions``/``rows`` do not apply to images.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..interventions import Ablate, Add, Intervention, InterventionError, Patch, Replace


class VisionSiteError(KeyError):
    """A site that names no module of the image model, or channels it does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


def parse_channels(spec: str) -> list[int]:
    """``"17"``, ``"3,17"``, ``"0-15"`` → channel indices."""
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.strip().partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            raise VisionSiteError(f"channels {spec!r}: write them like 17, 3,17 or 0-15")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


@dataclass
class ImageRun:
    """The result of ``ImageModel.run``: ``images`` [batch, 3, H, W] (model input), ``logits``
    [batch, classes], ``cache``/``grads``: site → tensor (channel-selected sites as selected)."""

    model: "ImageModel" = field(repr=False)
    images: torch.Tensor
    logits: torch.Tensor
    cache: dict
    grads: dict = field(default_factory=dict)
    metric: torch.Tensor | None = None

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k classes of each image, as (class name, probability)."""
        p = self.logits.float().softmax(-1)
        v, i = p.topk(k, dim=-1)
        return [[(self.model.classes[int(c)], float(q)) for q, c in zip(vr, ir)] for vr, ir in zip(v, i)]


class ImageModel:
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
        self._fingerprint: str | None = None

    @property
    def cfg(self) -> dict:
        """What the archive records about the model."""
        return {"kind": "image classifier", "size": self.size, "classes": len(self.classes),
                "modules": len(self.modules), "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @property
    def fingerprint(self) -> str:
        """A hash of the weights (provenance of every result)."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.blake2b(digest_size=16)
            for k, v in self.module.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

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
        if spec is None:
            return []
        specs = [spec] if isinstance(spec, str) else list(spec)
        out = []
        for s in specs:
            name, _, ch = s.partition(":")
            names = fnmatch.filter(self.modules, name) if any(c in name for c in "*?[") else [name]
            if not names or names[0] not in self.modules:
                close = [n for n in self.modules if n.count(".") <= 1][:8]
                raise VisionSiteError(f"no module {name!r} in {self.name}; modules are named like "
                                      f"{', '.join(close)}, ... (model.sites lists all {len(self.modules)})")
            out += [(n, parse_channels(ch) if ch else None) for n in names]
        return out

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
        plan: dict[str, list] = {}
        for name, ch in self.resolve(cache):
            plan.setdefault(name, []).append(("cache", ch, None))
        for name, ch in self.resolve(grads):
            plan.setdefault(name, []).append(("grad", ch, None))
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise TypeError(f"not an intervention: {iv!r} (use ms.Ablate, ms.Patch, ms.Add, ms.Replace)")
            for field_name in ("heads", "positions", "rows"):
                if getattr(iv, field_name) is not None:
                    raise InterventionError(f"{type(iv).__name__} at {iv.site}: {field_name}= does not apply to image "
                                            "sites; select channels in the site name (e.g. '_blocks.4:17')")
            for name, ch in self.resolve(iv.site):
                plan.setdefault(name, []).append(("edit", ch, (iv, self._source(iv, name))))
        cache_out: dict[str, torch.Tensor] = {}
        kept: dict[str, torch.Tensor] = {}
        x = self.normalise(images if images.dtype == torch.float32 else images.float())
        # gradients flow when a metric asks for them, or when the images themselves require grad
        # (feature visualization: then logits and cache keep their graph)
        with torch.set_grad_enabled(metric is not None or images.requires_grad), self._hooks(plan, cache_out, kept):
            logits = self.module(x)
        run = ImageRun(self, images, logits, cache_out)
        if metric is not None:
            value = metric(run)
            value = value.sum() if value.dim() else value
            names = list(kept)
            gs = torch.autograd.grad(value, [kept[n] for n in names], allow_unused=True) if names else []
            run.grads = {n: (g if g is not None else torch.zeros_like(kept[n])).detach() for n, g in zip(names, gs)}
            run.metric = value.detach()
            run.logits = run.logits.detach()
            run.cache = {k: v.detach() for k, v in cache_out.items()}
        return run

    def _source(self, iv: Intervention, name: str):
        if isinstance(iv, Patch) or (isinstance(iv, Ablate) and iv.how == "mean" and iv.reference is not None):
            src = iv.source if isinstance(iv, Patch) else iv.reference
            if isinstance(src, ImageRun):
                if name not in src.cache:
                    raise InterventionError(f"{type(iv).__name__} at {name}: the source run did not cache {name}")
                return src.cache[name]
            if isinstance(src, torch.Tensor) and src.dim() == 4:
                return self.run(src, cache=name).cache[name]
            raise InterventionError(f"{type(iv).__name__} at {name}: the source must be an ImageRun caching the site, "
                                    "or images [batch, 3, H, W]")
        if isinstance(iv, Ablate) and iv.how == "resample":
            raise InterventionError("Ablate how='resample' is for token models; use 'zero' or 'mean' on images")
        return None

    @contextmanager
    def _hooks(self, plan: dict, cache_out: dict, kept: dict):
        from ..models.hooks import model_lock

        handles = []
        with model_lock(self.module):
            try:
                for name, actions in plan.items():
                    handles.append(self.modules[name].register_forward_hook(self._hook(name, actions, cache_out, kept)))
                yield
            finally:
                for h in handles:
                    h.remove()

    @staticmethod
    def _hook(name: str, actions: list, cache_out: dict, kept: dict):
        calls = [0]

        def hook(module, inputs, y):
            calls[0] += 1
            if calls[0] > 1:
                raise VisionSiteError(f"{name} runs more than once per forward (a shared module, like EfficientNet's "
                                      "_swish); its output is not one site: pick a module that runs once")
            if not isinstance(y, torch.Tensor):
                raise VisionSiteError(f"{name} does not output a tensor ({type(y).__name__})")
            for kind, ch, payload in actions:
                if ch is not None and (y.dim() < 2 or max(ch) >= y.shape[1]):
                    raise VisionSiteError(f"{name} has {y.shape[1] if y.dim() > 1 else 0} channels; "
                                          f"channel {max(ch)} is out of range")
                if kind == "edit":
                    y = _edit(y, ch, *payload, name)
            if any(kind == "grad" for kind, _, _ in actions):
                if not y.requires_grad:
                    y = y.detach().requires_grad_()
                kept[name] = y
            for kind, ch, _ in actions:
                if kind in ("cache", "grad") and name not in cache_out:
                    cache_out[name] = y if kind == "grad" or torch.is_grad_enabled() else y.detach()
            for kind, ch, _ in actions:
                if kind == "cache" and ch is not None:
                    cache_out[f"{name}:{','.join(map(str, ch))}"] = y[:, ch]
            return y
        return hook


def _edit(y: torch.Tensor, ch: list[int] | None, iv: Intervention, source, name: str) -> torch.Tensor:
    idx = slice(None) if ch is None else torch.tensor(ch, device=y.device)
    sel = y[:, idx]
    if isinstance(iv, Ablate):
        if iv.how == "zero":
            new = torch.zeros_like(sel)
        else:
            ref = source if source is not None else y
            dims = [0] + list(range(2, ref.dim()))
            mean = ref[:, idx].mean(dims, keepdim=True)
            new = mean.expand_as(sel).to(sel)
    elif isinstance(iv, Patch):
        src = source[:, idx]
        if src.shape[0] == 1:
            src = src.expand_as(sel)
        if src.shape != sel.shape:
            raise InterventionError(f"Patch at {name}: source {tuple(src.shape)} vs run {tuple(sel.shape)}")
        new = src.to(sel)
    elif isinstance(iv, Add):
        v = iv.vector.to(sel)
        v = v.reshape(1, -1, *([1] * (sel.dim() - 2))) if v.dim() == 1 and sel.dim() > 2 else v
        new = sel + iv.coef * v
    elif isinstance(iv, Replace):
        new = iv.fn(sel)
        if not isinstance(new, torch.Tensor) or new.shape != sel.shape:
            raise InterventionError(f"Replace at {name}: fn returned a different shape than {tuple(sel.shape)}")
    else:
        raise InterventionError(f"{type(iv).__name__} is not supported on image models")
    if ch is None:
        return new
    out = y.clone()
    out[:, idx] = new
    return out
