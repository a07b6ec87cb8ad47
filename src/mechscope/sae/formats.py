"""Dictionaries from elsewhere: one reader that recognises the format from the files, and writers.

Supported so far (the rest of the formats issue — circuit-tracer, sparsify transcoders, gated
and transcoder SAELens files — is refused by name until it lands):

- mechscope's own folders (``config.json`` + ``sae.safetensors``, ``SparseCoder.save``);
- Gemma Scope folders (``params.npz``: JumpReLU; the caller names the site, which the folder does
  not say — ``layer_L`` gives only the layer);
- EleutherAI sparsify folders (one per hookpoint: ``cfg.json`` + ``sae.safetensors``, TopK SAEs;
  the folder name gives the site);
- SAELens 6.x folders (``cfg.json`` + ``sae_weights.safetensors``, ``SAE.save_model``) of the
  ``standard``, ``topk`` and ``jumprelu`` architectures, with or without ``apply_b_dec_to_input``,
  ``normalize_activations: none``, ``reshape_activations: none``. SAELens keeps ``W_enc`` as
  [d_in, d_sae]; mechscope keeps it [width, d_in] and subtracts ``b_dec`` from its input, so a
  file without ``apply_b_dec_to_input`` has ``W_enc b_dec`` folded into the encoder bias.

``save_saelens`` writes any mechscope SAE (not transcoders yet) so that SAELens, and what reads its
files, opens it: mechscope's input scaling is folded into the weights, a ``batchtopk`` dictionary is
written as ``jumprelu`` with its inference threshold (as SAELens itself saves BatchTopK).
``save_sparsify`` writes TopK SAEs for sparsify (its format holds nothing else).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .dictionary import CONFIG, WEIGHTS, SAEConfig, SAEError, SparseCoder, load_sae

SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_ARCHS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
SPARSIFY_CONFIG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
GEMMA_SCOPE_WEIGHTS = "params.npz"
# TransformerLens hook names (what SAELens files carry) → mechscope sites
_TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
             "hook_attn_out": "attn.out", "hook_mlp_out": "mlp.out", "mlp.hook_post": "mlp.post",
             "mlp.hook_pre": "mlp.pre", "attn.hook_z": "attn.z"}


def _read_config(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SAEError(f"{file} cannot be read as JSON ({err})") from None


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (OSError, SafetensorError) as err:
        raise SAEError(f"{file} cannot be read ({err})") from None


def _check_weights(w: dict[str, torch.Tensor], need: list[str], file: Path) -> None:
    """Every tensor ``need`` names is there, and no tensor holds NaN or inf."""
    missing = [k for k in need if k not in w]
    if missing:
        raise SAEError(f"{file} lacks {missing} (has {sorted(w)})")
    for name, t in w.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise SAEError(f"{file}: {name} contains NaN or infinite values")


def _write_folder(directory: str | os.PathLike, config_name: str, cfg: dict[str, Any], weights_name: str,
                  tensors: dict[str, torch.Tensor]) -> Path:
    """Write the weights (float32) and the config into ``directory``, each replaced atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{weights_name}.tmp"
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, directory / weights_name)
    tmp = directory / f".{config_name}.tmp"
    tmp.write_text(json.dumps(cfg, indent=1))
    os.replace(tmp, directory / config_name)
    return directory


def site_from_hook(hook: str) -> str:
    """The mechscope site of a TransformerLens hook name (``blocks.8.hook_resid_pre`` →
    ``blocks.8.resid_pre``); ``SAEError`` for hooks with no equal site."""
    parts = hook.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in _TL_HOOKS:
        return f"blocks.{parts[1]}.{_TL_HOOKS[parts[2]]}"
    if hook == "hook_embed":
        return "embed"
    if len(parts) == 3 and parts[2] == "ln2.hook_normalized":
        raise SAEError(f"hook {hook!r} is the pre-MLP norm's output without its gain; mechscope's "
                       f"blocks.{parts[1]}.mlp.in has the gain applied, so this dictionary would read other values")
    raise SAEError(f"hook {hook!r} has no mechscope site; known: blocks.L.{{{', '.join(_TL_HOOKS)}}}, hook_embed")


def load_dictionary(path: str | os.PathLike, device: str | torch.device = "cpu", *, site: str | None = None) -> SparseCoder:
    """A ``SparseCoder`` from a folder in any supported format (see the module docstring).
    ``site``: the site it reads, where the files do not say (Gemma Scope)."""
    path = Path(path)
    if path.name == GEMMA_SCOPE_WEIGHTS and path.is_file():
        path = path.parent
    if path.is_dir() and (path / GEMMA_SCOPE_WEIGHTS).exists():
        return _from_gemma_scope(path, device, site)
    if not path.is_dir():
        raise SAEError(f"{path} is not a folder; a dictionary is a folder with {CONFIG} + {WEIGHTS} (mechscope) "
                       f"or {SAELENS_CONFIG} + {SAELENS_WEIGHTS} (SAELens)")
    if (path / CONFIG).exists():
        return load_sae(path, device)
    if (path / SAELENS_CONFIG).exists() and (path / SAELENS_WEIGHTS).exists():
        return _from_saelens(path, device)
    if (path / SPARSIFY_CONFIG).exists() and (path / SPARSIFY_WEIGHTS).exists():
        return _from_sparsify(path, device)
    raise SAEError(f"{path} holds neither {CONFIG} + {WEIGHTS} (mechscope), {SAELENS_CONFIG} + {SAELENS_WEIGHTS} "
                   f"(SAELens 6) nor {SPARSIFY_CONFIG} + {SPARSIFY_WEIGHTS} (sparsify); found: "
                   f"{', '.join(sorted(p.name for p in path.iterdir())[:8]) or 'nothing'}")


def _from_gemma_scope(path: Path, device: str | torch.device, site: str | None) -> SparseCoder:
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
    _check_weights(w, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], path / GEMMA_SCOPE_WEIGHTS)
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
    ours = SparseCoder(SAEConfig("jumprelu", int(d_in), int(d_sae), site=site, model="gemma-2"))
    with torch.no_grad():
        W_enc = w["W_enc"].T.double()
        ours.W_enc.copy_(W_enc)
        ours.b_enc.copy_(w["b_enc"].double() + W_enc @ w["b_dec"].double())  # it reads x, mechscope x − b_dec
        ours.W_dec.copy_(w["W_dec"])
        ours.b_dec.copy_(w["b_dec"])
        ours.log_threshold.copy_(w["threshold"].double().log())
    return ours.to(device).eval()


def site_from_hookpoint(hookpoint: str) -> str | None:
    """The mechscope site of a sparsify hookpoint (its folder name): ``layers.5`` (a decoder layer's
    output) → ``blocks.5.resid_post``, ``layers.5.mlp`` → ``blocks.5.mlp.out``; None when unknown."""
    parts = hookpoint.split(".")
    if len(parts) >= 2 and parts[-2].isdigit() and parts[-1] == "mlp":
        return f"blocks.{parts[-2]}.mlp.out"
    if parts and parts[-1].isdigit():
        return f"blocks.{parts[-1]}.resid_post"
    return None


def _from_sparsify(path: Path, device: str | torch.device) -> SparseCoder:
    cfg = _read_config(path / SPARSIFY_CONFIG)
    if cfg.get("activation", "topk") != "topk":
        raise SAEError(f"{path}: sparsify activation {cfg.get('activation')!r} is not supported (only 'topk')")
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise SAEError(f"{path}: sparsify transcoders (transcode / skip_connection) are not supported yet")
    w = _read_safetensors(path / SPARSIFY_WEIGHTS)
    _check_weights(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], path / SPARSIFY_WEIGHTS)
    width, d_in = w["encoder.weight"].shape
    if (w["W_dec"].shape != (width, d_in) or w["encoder.bias"].shape != (width,) or w["b_dec"].shape != (d_in,)
            or cfg.get("d_in", d_in) != d_in):
        raise SAEError(f"{path}: shapes disagree — encoder.weight {tuple(w['encoder.weight'].shape)}, W_dec "
                       f"{tuple(w['W_dec'].shape)}, encoder.bias {tuple(w['encoder.bias'].shape)}, b_dec "
                       f"{tuple(w['b_dec'].shape)}, cfg d_in={cfg.get('d_in')}")
    ours = SparseCoder(SAEConfig("topk", int(d_in), int(width), k=int(cfg.get("k", 32)),
                                 site=site_from_hookpoint(path.name)))
    with torch.no_grad():  # sparsify reads x − b_dec, as mechscope does: the weights carry over as they are
        ours.W_enc.copy_(w["encoder.weight"])
        ours.b_enc.copy_(w["encoder.bias"])
        ours.W_dec.copy_(w["W_dec"])
        ours.b_dec.copy_(w["b_dec"])
    return ours.to(device).eval()


def save_sparsify(sae: SparseCoder, directory: str | os.PathLike) -> Path:
    """Write a TopK ``sae`` as a sparsify folder (``cfg.json`` + ``sae.safetensors``) that
    ``sparsify.SparseCoder.load_from_disk`` opens; sparsify's format is TopK-only, so other
    architectures are refused by name."""
    c = sae.cfg
    if c.arch != "topk":
        raise SAEError(f"sparsify files hold TopK dictionaries only; this one is {c.arch!r} (use save_saelens)")
    if c.transcoder:
        raise SAEError("writing transcoders as sparsify files is not supported yet")
    with torch.no_grad():
        s_in, s_out = float(sae.scale_in), float(sae.scale_out)
        W_enc = sae.W_enc.double() * s_in
        W_dec, b_dec = sae.W_dec.double() / s_out, sae.b_dec.double() / s_out
        b_enc = sae.encoder_bias().double() + W_enc @ b_dec  # sparsify: (x − b_dec') W_encᵀ + b_enc'
        tensors = {"encoder.weight": W_enc, "encoder.bias": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    cfg = {"activation": "topk", "expansion_factor": max(1, c.width // c.d_in), "normalize_decoder": True,
           "num_latents": c.width, "k": c.k, "multi_topk": False, "skip_connection": False, "transcode": False,
           "d_in": c.d_in}
    return _write_folder(directory, SPARSIFY_CONFIG, cfg, SPARSIFY_WEIGHTS, tensors)


def _from_saelens(path: Path, device: str | torch.device) -> SparseCoder:
    cfg = _read_config(path / SAELENS_CONFIG)
    arch = cfg.get("architecture", "standard")
    if arch not in SAELENS_ARCHS:
        raise SAEError(f"{path}: SAELens architecture {arch!r} is not supported yet; supported: "
                       f"{', '.join(SAELENS_ARCHS)}")
    for key, allowed in (("normalize_activations", ("none", None)), ("reshape_activations", ("none", None))):
        if cfg.get(key) not in allowed:
            raise SAEError(f"{path}: {key}={cfg.get(key)!r} is not supported yet (only 'none')")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise SAEError(f"{path}: rescale_acts_by_decoder_norm=true is not supported yet")
    w = _read_safetensors(path / SAELENS_WEIGHTS)
    _check_weights(w, ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if arch == "jumprelu" else []),
                   path / SAELENS_WEIGHTS)
    d_in, d_sae = w["W_enc"].shape
    if (w["W_dec"].shape != (d_sae, d_in) or w["b_enc"].shape != (d_sae,) or w["b_dec"].shape != (d_in,)
            or cfg.get("d_in", d_in) != d_in or cfg.get("d_sae", d_sae) != d_sae):
        raise SAEError(f"{path}: shapes disagree — W_enc {tuple(w['W_enc'].shape)}, W_dec {tuple(w['W_dec'].shape)}, "
                       f"b_enc {tuple(w['b_enc'].shape)}, b_dec {tuple(w['b_dec'].shape)}, cfg d_in={cfg.get('d_in')} "
                       f"d_sae={cfg.get('d_sae')}")
    if arch == "jumprelu" and (w["threshold"].shape != (d_sae,) or (w["threshold"] < 0).any()):
        raise SAEError(f"{path}: threshold must be [d_sae] = [{d_sae}] and ≥ 0")
    meta = cfg.get("metadata") or {}
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    ours = SparseCoder(SAEConfig(SAELENS_ARCHS[arch], int(d_in), int(d_sae), k=cfg.get("k") if arch == "topk" else None,
                                 site=site_from_hook(hook) if hook else None,
                                 model=meta.get("model_name") or cfg.get("model_name")))
    with torch.no_grad():
        W_enc = w["W_enc"].T.double()
        b_enc = w["b_enc"].double()
        if not cfg.get("apply_b_dec_to_input", True):  # SAELens reads x, mechscope reads x − b_dec: fold it
            b_enc = b_enc + W_enc @ w["b_dec"].double()
        ours.W_enc.copy_(W_enc)
        ours.b_enc.copy_(b_enc)
        ours.W_dec.copy_(w["W_dec"])
        ours.b_dec.copy_(w["b_dec"])
        if arch == "jumprelu":
            ours.log_threshold.copy_(w["threshold"].double().log())
    return ours.to(device).eval()


def save_saelens(sae: SparseCoder, directory: str | os.PathLike, *, hook_name: str | None = None,
                 model_name: str | None = None) -> Path:
    """Write ``sae`` as a SAELens 6 folder (``cfg.json`` + ``sae_weights.safetensors``) that
    ``SAE.load_from_disk`` opens; ``hook_name`` is the TransformerLens hook it reads (default: the
    one matching its site, when there is one)."""
    c = sae.cfg
    if c.transcoder:
        raise SAEError("writing transcoders as SAELens files is not supported yet")
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}[c.arch]
    with torch.no_grad():
        s_in, s_out = float(sae.scale_in), float(sae.scale_out)
        W_enc = (sae.W_enc.double() * s_in).T  # [d_in, d_sae]: x ↦ x·s_in W_encᵀ
        W_dec = sae.W_dec.double() / s_out
        b_dec = sae.b_dec.double() / s_out
        # SAELens: (x − b_dec') W_enc' + b_enc' must equal mechscope's x·s_in W_encᵀ + (b_enc − W_enc b_dec)
        b_enc = sae.encoder_bias().double() + b_dec @ W_enc
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if arch == "jumprelu":
            tensors["threshold"] = (sae.threshold if c.arch == "jumprelu"
                                    else sae.batch_threshold.expand(c.width)).double()
    if hook_name is None and c.site is not None:
        tl = {v: k for k, v in _TL_HOOKS.items()}
        layer, _, kind = c.site.partition(".")[2].partition(".")
        hook_name = f"blocks.{layer}.{tl[kind]}" if c.site.startswith("blocks.") and kind in tl else None
    cfg = {"architecture": arch, "d_in": c.d_in, "d_sae": c.width, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"hook_name": hook_name, "model_name": model_name or c.model}}
    if arch == "topk":
        cfg["k"] = c.k
    return _write_folder(directory, SAELENS_CONFIG, cfg, SAELENS_WEIGHTS, tensors)


__all__ = ["load_dictionary", "save_saelens", "save_sparsify", "site_from_hook", "site_from_hookpoint"]
