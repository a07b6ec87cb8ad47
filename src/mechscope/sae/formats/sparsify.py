"""EleutherAI sparsify folders (one per hookpoint: ``cfg.json`` + ``sae.safetensors``): read
(``read_sparsify``; the folder name gives the sites) and written for TopK SAEs (``save_sparsify``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ...models.sites import block_site
from ..config import SAEConfig, SAEError
from ..dictionary import SparseCoder
from .common import check_weights, read_config, read_safetensors, write_folder

SPARSIFY_CONFIG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"


def site_from_hookpoint(hookpoint: str, transcoder: bool = False) -> tuple[str | None, str | None]:
    """(site read, site written) of a sparsify hookpoint (its folder name): ``layers.5`` is a decoder
    layer — its output ``blocks.5.resid_post`` for an SAE, resid_pre → resid_post for a transcoder;
    ``layers.5.mlp`` the MLP — ``blocks.5.mlp.out``, or mlp.in → mlp.out. (None, None) when unknown."""
    parts = hookpoint.split(".")
    if len(parts) >= 2 and parts[-2].isdigit() and parts[-1] == "mlp":
        layer = int(parts[-2])
        return ((block_site(layer, "mlp.in"), block_site(layer, "mlp.out")) if transcoder
                else (block_site(layer, "mlp.out"), None))
    if parts and parts[-1].isdigit():
        layer = int(parts[-1])
        return ((block_site(layer, "resid_pre"), block_site(layer, "resid_post")) if transcoder
                else (block_site(layer, "resid_post"), None))
    return None, None


def read_sparsify(path: Path, device: str | torch.device) -> SparseCoder:
    """A sparsify folder: a TopK SAE or transcoder (``transcode``: the encoder reads x itself, not
    x − b_dec), optionally with a skip connection (``W_skip`` [d_in, d_in], applied as x W_skipᵀ)."""
    cfg = read_config(path / SPARSIFY_CONFIG)
    if cfg.get("activation", "topk") != "topk":
        raise SAEError(f"{path}: sparsify activation {cfg.get('activation')!r} is not supported (only 'topk')")
    transcoder, skip = bool(cfg.get("transcode")), bool(cfg.get("skip_connection"))
    if skip and not transcoder:
        raise SAEError(f"{path}: a skip connection on an autoencoder (skip_connection without transcode) is not supported")
    w = read_safetensors(path / SPARSIFY_WEIGHTS)
    check_weights(w, {"encoder.weight": "[width, d_in]", "encoder.bias": "[width]", "W_dec": "[width, d_in]",
                      "b_dec": "[d_in]"} | ({"W_skip": "[d_in, d_in]"} if skip else {}), path / SPARSIFY_WEIGHTS)
    width, d_in = w["encoder.weight"].shape
    if (w["W_dec"].shape != (width, d_in) or w["encoder.bias"].shape != (width,) or w["b_dec"].shape != (d_in,)
            or cfg.get("d_in", d_in) != d_in or (skip and w["W_skip"].shape != (d_in, d_in))):
        raise SAEError(f"{path}: shapes disagree — encoder.weight {tuple(w['encoder.weight'].shape)}, W_dec "
                       f"{tuple(w['W_dec'].shape)}, encoder.bias {tuple(w['encoder.bias'].shape)}, b_dec "
                       f"{tuple(w['b_dec'].shape)}, cfg d_in={cfg.get('d_in')}")
    site, target = site_from_hookpoint(path.name, transcoder)
    site, target = cfg.get("mechscope_site") or site, cfg.get("mechscope_target_site") or target
    if transcoder and target is None:
        raise SAEError(f"{path}: a sparsify transcoder whose folder name ({path.name!r}) is not a hookpoint "
                       "mechscope knows (layers.N or layers.N.mlp); give site= and target_site=")
    weights = {"W_enc": w["encoder.weight"].float(), "b_enc": w["encoder.bias"].float(), "W_dec": w["W_dec"].float(),
               "b_dec": w["b_dec"].float()}  # an SAE reads x − b_dec as mechscope does; a transcoder x (b_in = 0)
    if skip:
        weights["W_skip"] = w["W_skip"].float().T
    return SparseCoder(SAEConfig("topk", int(d_in), int(width), k=int(cfg.get("k", 32)), site=site,
                                 target_site=target if transcoder else None, skip=skip, model=cfg.get("model")),
                       weights=weights).to(device).eval()


def save_sparsify(sae: SparseCoder, directory: str | os.PathLike) -> Path:
    """Write a TopK ``sae`` as a sparsify folder (``cfg.json`` + ``sae.safetensors``) that
    ``sparsify.SparseCoder.load_from_disk`` opens; sparsify's format is TopK-only, so other
    architectures are refused by name. Transcoders must write a site as wide as they read (sparsify's
    W_dec is [latents, d_in]); name the folder after the hookpoint (``layers.5.mlp``)."""
    c = sae.cfg
    if c.arch != "topk":
        raise SAEError(f"sparsify files hold TopK dictionaries only; this one is {c.arch!r} (use save_saelens)")
    if c.transcoder and c.d_out != c.d_in:
        raise SAEError(f"sparsify transcoders write as many dimensions as they read; this one maps {c.d_in} → {c.d_out}")
    if c.input_norm != "none":
        raise SAEError(f"sparsify has no input normalisation; this dictionary has input_norm={c.input_norm!r}")
    with torch.no_grad():
        s_in, s_out = float(sae.scale_in), float(sae.scale_out)
        W_enc = sae.W_enc.double() * s_in
        W_dec, b_dec = sae.W_dec.double() / s_out, sae.b_dec.double() / s_out
        if c.transcoder:  # sparsify: x W_encᵀ + b_enc'
            b_enc = sae.encoder_bias().double()
        else:  # sparsify: (x − b_dec') W_encᵀ + b_enc'
            b_enc = sae.encoder_bias().double() + W_enc @ b_dec
        tensors = {"encoder.weight": W_enc, "encoder.bias": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if c.skip:
            tensors["W_skip"] = (sae.W_skip.double() * s_in / s_out).T  # sparsify applies x W_skipᵀ
    cfg = {"activation": "topk", "expansion_factor": max(1, c.width // c.d_in), "normalize_decoder": True,
           "num_latents": c.width, "k": c.k, "multi_topk": False, "skip_connection": c.skip, "transcode": c.transcoder,
           "d_in": c.d_in, "mechscope_site": c.site, "mechscope_target_site": c.target_site, "model": c.model}
    # sparsify drops fields it does not know; mechscope's sites and model travel with the file
    return write_folder(directory, SPARSIFY_CONFIG, cfg, SPARSIFY_WEIGHTS, tensors)
