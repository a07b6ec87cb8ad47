"""Gemma Scope folders (``params.npz``: JumpReLU SAEs; the caller names the site)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import SAEConfig, SAEError
from ..dictionary import SparseCoder
from .common import check_weights

GEMMA_SCOPE_WEIGHTS = "params.npz"


def read_gemma_scope(path: Path, device: str | torch.device, site: str | None) -> SparseCoder:
    """Gemma Scope's ``params.npz``: a JumpReLU SAE (W_enc [d_in, d_sae], W_dec, b_enc, b_dec, threshold)
    whose encoder reads x itself (no b_dec subtraction: folded into the encoder bias)."""
    import re
    import zipfile

    import numpy as np

    layer = re.search(r"layer_(\d+)", str(path))
    if site is None:
        hint = f"e.g. blocks.{layer.group(1)}.resid_post, .mlp.out or .attn.out" if layer else "e.g. blocks.L.resid_post"
        raise SAEError(f"{path}: a Gemma Scope folder does not say which site it reads; give site= ({hint})")
    if "embedding" in str(path):
        raise SAEError(f"{path}: Gemma Scope's embedding SAEs are trained on rescaled embeddings; not supported yet")
    try:
        with np.load(path / GEMMA_SCOPE_WEIGHTS, allow_pickle=False) as data:
            w = {("W_" + k[2:] if k.startswith("w_") else k): torch.from_numpy(np.asarray(data[k], dtype=np.float32))
                 for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SAEError(f"{path / GEMMA_SCOPE_WEIGHTS} cannot be read ({err})") from None
    check_weights(w, {"W_enc": "[d_in, width]", "W_dec": "[width, d_out]", "b_enc": "[width]", "b_dec": "[d_out]",
                      "threshold": "[width]"}, path / GEMMA_SCOPE_WEIGHTS)
    if "scaling_factor" in w and not torch.allclose(w["scaling_factor"], torch.ones_like(w["scaling_factor"])):
        raise SAEError(f"{path}: a scaling_factor other than 1 is not supported yet")
    d_in, d_sae = w["W_enc"].shape
    if (w["W_dec"].shape != (d_sae, d_in) or w["b_enc"].shape != (d_sae,) or w["b_dec"].shape != (d_in,)
            or w["threshold"].shape != (d_sae,)):
        raise SAEError(f"{path}: shapes disagree — W_enc {tuple(w['W_enc'].shape)}, W_dec {tuple(w['W_dec'].shape)}, "
                       f"b_enc {tuple(w['b_enc'].shape)}, b_dec {tuple(w['b_dec'].shape)}, "
                       f"threshold {tuple(w['threshold'].shape)}")
    if (w["threshold"] < 0).any():
        raise SAEError(f"{path}: threshold must be ≥ 0")
    W_enc = w["W_enc"].T  # [d_sae, d_in], a view
    weights = {"W_enc": W_enc, "b_enc": w["b_enc"] + W_enc @ w["b_dec"],  # it reads x, mechscope x − b_dec
               "W_dec": w["W_dec"], "b_dec": w["b_dec"], "log_threshold": w["threshold"].log()}
    return SparseCoder(SAEConfig("jumprelu", int(d_in), int(d_sae), site=site, model="gemma-2"),
                       weights=weights).to(device).eval()
