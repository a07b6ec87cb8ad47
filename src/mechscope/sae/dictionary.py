"""Sparse dictionaries: SAEs and transcoders, four activation rules, one module.

A ``SparseCoder`` maps an input x [n, d_in] to latents f [n, width] and back to a target [n, d_out]:

    x_n  = x · s_in                               (input normalisation: a constant, E‖x_n‖² = d_in)
    pre  = (x_n − b_in) W_encᵀ + b_enc            (SAE: b_in = b_dec; transcoder: b_in = the input mean)
    f    = σ(pre)                                 (the architecture's activation rule, below)
    ŷ_n  = f W_dec + b_dec  (+ x_n W_skip)        (W_enc, W_dec [width, d]: rows are per feature)
    ŷ    = ŷ_n / s_out                            (SAE: s_out = s_in)

Activation rules and how each treats the decoder's norms:

- ``relu`` (Anthropic, April 2024 update): f = ReLU(pre); sparsity loss λ Σ_i f_i ‖W_dec,i‖ (the
  L1 weighted by decoder norms, so rescaling a feature cannot dodge it); decoder *unconstrained*.
- ``topk`` (Gao et al. 2024): f keeps the k largest of ReLU(pre) per row; decoder rows unit-norm
  (gradient parallel to each row removed before the step, rows renormalised after); AuxK loss:
  the k_aux largest pre-activations of *dead* latents reconstruct the residual error.
- ``batchtopk`` (Bussmann et al. 2024): training keeps the k·n largest of ReLU(pre) over the whole
  batch; inference uses the threshold θ (running mean of the smallest kept activation): f = pre·[pre > θ].
  Decoder as topk; AuxK as topk.
- ``jumprelu`` (Rajamanoharan et al. 2024): f = pre·H(pre − θ_i), θ = exp(log θ) per latent;
  sparsity loss λ Σ_i H(pre_i − θ_i) (L0), gradients to θ by a straight-through estimator with a
  rectangle kernel of bandwidth ε. Decoder unit-norm, as topk.
- ``gated`` (Rajamanoharan et al., April 2024), read from files (SAELens), not trained here: pre is
  the gate, f = H(pre)·ReLU(exp(r_mag)·(pre − b_enc) + b_mag) — the magnitude path shares W_enc,
  rescaled per latent by exp(r_mag) [width], with its own bias b_mag [width].

Dictionaries read from elsewhere may normalise each input row (``input_norm``, before the
constant scale): ``center`` subtracts the row's mean over d_in (TransformerLens's
``center_writing_weights`` view of the residual stream), ``rescale`` multiplies the row by
√d_in/‖x‖ (SAELens ``constant_norm_rescale``), ``layer_norm`` maps it to (x − μ)/(σ + 10⁻⁵)
(SAELens ``layer_norm``, σ with Bessel's correction). An SAE's reconstruction is mapped back with the
same row's statistics (÷ the rescale factor; ·σ + μ; + μ); a transcoder's output is not. ``head``:
the dictionary reads one head of a [..., head, d_head] site (SAELens ``hook_head_index``); without
it a head-layout site is read flattened, [..., head·d_head] (SAELens ``hook_z``).

TopK trains sparsely: the encoder's backward touches only the k selected latents per row and the
decoder is a weighted gather of k rows (``embedding_bag``), so a step costs one dense matmul (the
encoder's forward) instead of five.

Transcoders read one site and predict another (``d_out``, ``target_site``), optionally with a
linear skip connection W_skip [d_in, d_out] (initialised to zero).
"""

from __future__ import annotations

import json
import math
import os
import dataclasses
from dataclasses import asdict
from typing import Any
from pathlib import Path

import torch
from torch import nn

from .kernels import JumpReLU, Step, TopKEncode

from .config import CONFIG, UNIT_NORM, WEIGHTS, LN_EPS, SAEConfig, SAEError
from .metrics import fvu


class SparseCoder(nn.Module):
    """An SAE or transcoder (see the module docstring). ``encode`` [n, d_in] → [n, width],
    ``decode`` [n, width] → [n, d_out], ``forward`` → reconstruction; ``fit``/``transform``/
    ``score`` in scikit-learn's manner."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: the dictionary's definition as a table (its config's fields that are set)."""
        from ..display import fields_html

        c = self.cfg
        rows = [(f.name, getattr(c, f.name)) for f in dataclasses.fields(c) if getattr(c, f.name) is not None]
        title = f"{c.arch} dictionary, {c.d_in} → {c.width}" + (f" at {c.site}" if c.site else "")
        return {"text/html": fields_html(title, rows), "text/plain": title}

    def __init__(self, cfg: SAEConfig, seed: int = 0, *, weights: dict[str, torch.Tensor] | None = None):
        """A fresh dictionary initialised from ``seed``, or — with ``weights`` (parameter and buffer
        names as in ``state_dict``) — one holding copies of those tensors with their strides kept
        (a transposed view stays transposed: no reordering). Copies, because a memory-mapped file's
        tensors can be misaligned, and BLAS then sums in another order: a saved and reloaded
        dictionary must give the same bits."""
        super().__init__()
        self.cfg = cfg
        shapes = self.shapes(cfg)
        if weights is None:
            weights = self._initial(cfg, seed)
        unknown = sorted(set(weights) - set(shapes))
        missing = sorted(k for k in shapes if k not in weights and k not in _DEFAULTS)
        wrong = [f"{k} {tuple(v.shape)} (want {shapes[k]})" for k, v in weights.items()
                 if k in shapes and tuple(v.shape) != shapes[k]]
        if unknown or missing or wrong:
            raise SAEError(f"weights do not fit the {cfg.arch} dictionary {cfg.d_in}→{cfg.width}→{cfg.d_out}: "
                           + "; ".join(x for x in (f"unknown {unknown}" if unknown else "",
                                                   f"missing {missing}" if missing else "", ", ".join(wrong)) if x))
        for name in shapes:
            value = weights.get(name)
            value = value.detach().clone() if value is not None else _DEFAULTS[name](cfg)
            if name in _DEFAULTS:
                self.register_buffer(name, value)
            else:
                setattr(self, name, nn.Parameter(value))
        if not cfg.skip:
            self.W_skip = None
        self.log_ = None

    @staticmethod
    def shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        """Every parameter and buffer of a dictionary with ``cfg``, by name: its shape."""
        shapes = {"W_enc": (cfg.width, cfg.d_in), "b_enc": (cfg.width,), "W_dec": (cfg.width, cfg.d_out),
                  "b_dec": (cfg.d_out,)}
        if cfg.skip:
            shapes["W_skip"] = (cfg.d_in, cfg.d_out)
        if cfg.arch == "jumprelu":
            shapes["log_threshold"] = (cfg.width,)
        if cfg.arch == "gated":
            shapes.update(r_mag=(cfg.width,), b_mag=(cfg.width,))
        return {**shapes, "b_in": (cfg.d_in,), "scale_in": (), "scale_out": (), "batch_threshold": ()}

    @staticmethod
    def _initial(cfg: SAEConfig, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(cfg.width, cfg.d_out, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        if cfg.arch == "relu":
            w = w * 0.1  # Anthropic: small decoder norms at the start, free to grow
        # an SAE starts tied (encoder = decoder); a transcoder's input and output are different spaces
        tied = cfg.d_out == cfg.d_in and not cfg.transcoder
        enc = w.clone() if tied else torch.randn(cfg.width, cfg.d_in, generator=g) / math.sqrt(cfg.d_in)
        out = {"W_dec": w, "W_enc": enc, "b_enc": torch.zeros(cfg.width), "b_dec": torch.zeros(cfg.d_out)}
        if cfg.skip:
            out["W_skip"] = torch.zeros(cfg.d_in, cfg.d_out)
        if cfg.arch == "jumprelu":
            out["log_threshold"] = torch.full((cfg.width,), math.log(cfg.threshold))
        if cfg.arch == "gated":
            out.update(r_mag=torch.zeros(cfg.width), b_mag=torch.zeros(cfg.width))
        return out

    # ------------------------------------------------------------------ forward
    @property
    def threshold(self) -> torch.Tensor | None:
        """Per-latent θ [width] (jumprelu) or the batch θ (batchtopk); None otherwise."""
        if self.cfg.arch == "jumprelu":
            return self.log_threshold.exp()
        return self.batch_threshold if self.cfg.arch == "batchtopk" else None

    def _check(self, x: torch.Tensor, d: int, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.shape[-1] != d:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise SAEError(f"{what} must be [..., {d}]; got {got}")
        return x

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """x_n [..., d_in] of raw inputs x (the row normalisation ``input_norm``, then the scale)."""
        self._check(x, self.cfg.d_in, "input")
        x = x.to(self.W_enc.dtype)
        mode = self.cfg.input_norm
        if mode == "center":
            x = x - x.mean(-1, keepdim=True)
        elif mode == "rescale":
            x = x * (self.cfg.d_in ** 0.5 / x.norm(dim=-1, keepdim=True))
        elif mode == "layer_norm":
            x = x - x.mean(-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + LN_EPS)
        return x * self.scale_in

    def _row_inverse(self, y: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """An SAE's reconstruction y mapped back through the row normalisation of its input x."""
        mode = self.cfg.input_norm
        if mode == "none" or self.cfg.transcoder:
            return y
        if x is None:
            raise SAEError(f"this dictionary normalises each input row (input_norm={mode!r}): decode(f, x) needs x")
        x = x.to(y.dtype)
        if mode == "center":
            return y + x.mean(-1, keepdim=True)
        if mode == "rescale":
            return y * (x.norm(dim=-1, keepdim=True) / self.cfg.d_in ** 0.5)
        mu = x.mean(-1, keepdim=True)
        return y * (x - mu).std(dim=-1, keepdim=True) + mu

    def encoder_bias(self) -> torch.Tensor:
        """b_enc − W_enc b_in [width]: (x_n − b_in) W_encᵀ + b_enc = x_n W_encᵀ + this, so b_dec's
        gradient is a matrix-vector product instead of a pass back through the batch."""
        return self.b_enc - self.W_enc @ (self.b_in if self.cfg.transcoder else self.b_dec)

    def preacts(self, x: torch.Tensor) -> torch.Tensor:
        """pre [..., width] of inputs x [..., d_in] (raw units)."""
        return torch.nn.functional.linear(self.normalised(x), self.W_enc, self.encoder_bias())

    def activate(self, pre: torch.Tensor, train: bool = False) -> torch.Tensor:
        """f = σ(pre) [..., width]; ``train`` selects batchtopk's batch rule (else its threshold)."""
        arch = self.cfg.arch
        if arch == "relu":
            return torch.relu(pre)
        if arch == "jumprelu":
            return JumpReLU.apply(pre, self.threshold, self.cfg.bandwidth)
        if arch == "topk":  # the k largest, then ReLU on those alone (not a pass over all of pre)
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        if arch == "gated":
            return (pre > 0) * torch.relu(self.r_mag.exp() * (pre - self.b_enc) + self.b_mag)
        if train:  # batchtopk over the whole batch
            flat = torch.relu(pre).reshape(-1)
            vals, idx = flat.topk(min(flat.numel(), self.cfg.k * pre[..., 0].numel()), sorted=False)
            return torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
        return pre * (pre > self.batch_threshold)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents f [..., width] of x [..., d_in]."""
        return self.activate(self.preacts(x))

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """ŷ [..., d_out] (raw units) from latents f; transcoders with a skip need the input x."""
        self._check(f, self.cfg.width, "latents")
        y = f @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise SAEError("this transcoder has a skip connection: decode(f, x) needs the input x")
            y = y + (x.to(self.W_skip.dtype) * self.scale_in) @ self.W_skip
        return self._row_inverse(y / self.scale_out, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ŷ [..., d_out] of x [..., d_in]."""
        return self.decode(self.encode(x), x)

    def site_rows(self, a: torch.Tensor) -> torch.Tensor:
        """The dictionary's input [batch, pos, d_in] from a site's activation: a head-layout site
        [batch, pos, head, d_head] gives its ``head`` or, without one, all heads flattened."""
        if a.dim() == 4:
            return a[..., self.cfg.head, :] if self.cfg.head is not None else a.flatten(-2)
        return a

    def into_site(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``rows`` [batch, pos, d] put back in the shape of the site activation ``like`` (the
        inverse of ``site_rows``; other heads keep their values)."""
        if like.dim() != 4:
            return rows
        if self.cfg.head is None:
            return rows.reshape(like.shape)
        out = like.clone()
        out[..., self.cfg.head, :] = rows.to(out.dtype)
        return out

    # ------------------------------------------------------------------ scikit-learn manner
    def fit(self, data, target=None, **options) -> "SparseCoder":
        """Train on ``data`` (an ActivationStore or a tensor [n, d_in]; ``target`` for transcoders);
        options as ``mechscope.sae.trainer.train``. The training log is kept as ``log_``."""
        from .trainer import train

        self.log_ = train(self, data, target, **options)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Latents f [n, width] (no gradient)."""
        with torch.no_grad():
            return self.encode(x)

    def score(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """1 − FVU of the reconstruction (like R²): 1 is perfect."""
        with torch.no_grad():
            return 1.0 - float(fvu(self.forward(x), x if y is None else y))

    # ------------------------------------------------------------------ decoder norms
    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Remove the component of ∂L/∂W_dec along each (unit) decoder row (unit-norm archs)."""
        if self.cfg.arch in UNIT_NORM and self.W_dec.grad is not None:
            w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
            self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rescale decoder rows to unit norm (unit-norm archs)."""
        if self.cfg.arch in UNIT_NORM:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)

    @property
    def directions(self) -> torch.Tensor:
        """Unit feature directions [width, d_out] in the target's raw space."""
        w = self.W_dec.detach().float()
        return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``sae.safetensors`` + ``config.json`` into ``directory`` (each replaced atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))
        os.replace(tmp, directory / WEIGHTS)
        tmp = directory / f".{CONFIG}.tmp"
        tmp.write_text(json.dumps(asdict(self.cfg), indent=1))
        os.replace(tmp, directory / CONFIG)
        return directory

    def extra_repr(self) -> str:
        c = self.cfg
        kind = "transcoder" if c.transcoder else "SAE"
        extra = f", k={c.k}" if c.k else f", sparsity={c.sparsity}"
        return f"{c.arch} {kind} {c.site or ''}{' → ' + c.target_site if c.transcoder and c.target_site else ''} " \
               f"{c.d_in}→{c.width}→{c.d_out}{extra}{', skip' if c.skip else ''}"


# buffers: the input mean (transcoders), the normalisation constants, batchtopk's inference θ
_DEFAULTS = {"b_in": lambda c: torch.zeros(c.d_in), "scale_in": lambda c: torch.tensor(1.0),
             "scale_out": lambda c: torch.tensor(1.0), "batch_threshold": lambda c: torch.tensor(0.0)}


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or ±inf. One pass each without a mask: a NaN
    or inf makes the sum non-finite (the mask only confirms, for sums that overflow)."""
    return [name for name, t in tensors.items() if t.is_floating_point()
            and not torch.isfinite(t.sum()) and not torch.isfinite(t).all()]


def load_sae(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SparseCoder:
    """Read a dictionary written by ``SparseCoder.save``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).exists():
            raise SAEError(f"{directory} holds no {name}: not a saved SAE (expected {CONFIG} and {WEIGHTS})")
    try:
        cfg = SAEConfig.from_dict(json.loads((directory / CONFIG).read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise SAEError(f"{directory / CONFIG} is not a valid SAE config ({e})") from e
    try:
        state = load_file(str(directory / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - truncated or foreign file
        raise SAEError(f"{directory / WEIGHTS} cannot be read ({e})") from e
    bad = nonfinite(state)
    if bad:
        raise SAEError(f"{directory / WEIGHTS}: {', '.join(bad)} hold NaN or infinite values; refusing a broken dictionary")
    try:
        sae = SparseCoder(cfg, weights=state)
    except SAEError as e:
        raise SAEError(f"{directory / WEIGHTS} does not match its config ({e})") from None
    return sae.to(device)
