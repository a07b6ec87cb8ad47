"""What defines a sparse dictionary: its configuration, the architectures and input norms, the error
every SAE module raises, and the file names of a saved dictionary (``dictionary.py`` holds the
module itself; docs/architecture.md, "sae")."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Literal

ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "gated")
TRAINABLE = ("relu", "topk", "batchtopk", "jumprelu")
INPUT_NORMS = ("none", "center", "rescale", "layer_norm")
LN_EPS = 1e-5  # SAELens layer_norm
UNIT_NORM = ("topk", "batchtopk", "jumprelu")
CONFIG = "config.json"
WEIGHTS = "sae.safetensors"


class SAEError(ValueError):
    """A configuration, input or file that a sparse coder cannot use."""


class SitesNotNamed(SAEError):
    """A dictionary whose files do not say a site it needs (a transcoder's output): ``known`` holds what
    they do say ({"format", "dictionary", "d_in", "d_out", "width", "reads", "model"}), for a description."""

    def __init__(self, message: str, known: dict):
        super().__init__(message)
        self.known = known


@dataclass
class SAEConfig:
    """What defines a dictionary. ``k``: latents per row (topk/batchtopk); ``sparsity``: λ of the
    L1 (relu, default 2) or L0 (jumprelu, default 1) loss; ``bandwidth``/``threshold``: jumprelu's
    ε (0.1) and initial θ (0.5); ``aux_k``/``aux_coef``: AuxK (default k_aux = d_in // 2,
    coefficient 1/32). Values are in normalised units (E‖x_n‖² = d_in), so the defaults carry
    across sites; they are the ones that recover planted dictionaries in the tests (the papers'
    ε = 0.001, θ₀ = 0.001 need ~10⁵ steps to move θ)."""

    arch: Literal["relu", "topk", "batchtopk", "jumprelu", "gated"]
    d_in: int
    width: int
    k: int | None = None
    d_out: int | None = None
    skip: bool = False
    sparsity: float | None = None
    bandwidth: float = 0.1
    threshold: float = 0.5
    aux_k: int | None = None
    aux_coef: float = 1 / 32
    site: str | None = None
    target_site: str | None = None
    model: str | None = None
    input_norm: Literal["none", "center", "rescale", "layer_norm"] = "none"
    head: int | None = None

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise SAEError(f"arch={self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.input_norm not in INPUT_NORMS:
            raise SAEError(f"input_norm={self.input_norm!r}; valid: {', '.join(INPUT_NORMS)}")
        if self.head is not None and (not isinstance(self.head, int) or self.head < 0):
            raise SAEError(f"head={self.head!r}; it must be a head index ≥ 0 or None")
        for name in ("d_in", "width"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise SAEError(f"{name}={getattr(self, name)!r}; it must be a positive integer")
        if self.arch in ("topk", "batchtopk"):
            if self.k is None or not 1 <= self.k <= self.width:
                raise SAEError(f"{self.arch} needs k in 1..width={self.width}; got k={self.k!r}")
        elif self.k is not None:
            raise SAEError(f"k={self.k} is for topk/batchtopk; {self.arch} sets sparsity with sparsity=λ")
        if self.sparsity is None and self.arch in ("relu", "jumprelu"):
            self.sparsity = 2.0 if self.arch == "relu" else 1.0
        if self.d_out is None:
            self.d_out = self.d_in
        if self.skip and not self.transcoder:
            raise SAEError("skip=True is for transcoders (give d_out or a target_site different from site)")
        if self.aux_k is None:
            self.aux_k = max(1, min(self.width, self.d_in // 2))
        need = 4 * self.width * (self.d_in + self.d_out + (self.d_in if self.skip else 0))  # float32 bytes
        have = _memory_bytes()
        if have and need > have:
            raise SAEError(f"d_in={self.d_in}, width={self.width}, d_out={self.d_out} needs {need / 2**30:.1f} GiB of "
                           f"weights; this machine has {have / 2**30:.1f} GiB of memory")

    @property
    def transcoder(self) -> bool:
        return self.target_site is not None and self.target_site != self.site or self.d_out != self.d_in

    @classmethod
    def from_dict(cls, d: dict) -> "SAEConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SAEError(f"unknown SAE config field(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)


def _memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None
