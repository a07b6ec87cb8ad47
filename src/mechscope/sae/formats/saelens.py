"""SAELens folders (``cfg.json`` + ``sae_weights.safetensors``): read (``read_saelens``) and written
(``save_saelens``); see the package docstring for what is supported."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..config import SAEConfig, SAEError, SitesNotNamed
from ..dictionary import SparseCoder
from .common import TL_HOOKS, check_against_model, check_weights, fold_norm_gain, hook_site, pre_mlp_norm, read_config, read_safetensors, write_folder

SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"


# SAELens architecture → (mechscope arch, transcoder, skip); others are refused by name
SAELENS_ARCHS = {"standard": ("relu", False, False), "gated": ("gated", False, False), "topk": ("topk", False, False),
                 "jumprelu": ("jumprelu", False, False), "transcoder": ("relu", True, False),
                 "skip_transcoder": ("relu", True, True), "jumprelu_transcoder": ("jumprelu", True, False),
                 "jumprelu_skip_transcoder": ("jumprelu", True, True)}


_SAELENS_NORMS = {"none": "none", "expected_average_only_in": "none", "covariance_whitening": "none",
                  "constant_norm_rescale": "rescale", "layer_norm": "layer_norm"}
_WRITTEN_SITES = ("resid_pre", "resid_mid", "resid_post", "attn.out", "mlp.out")  # what centring changes


def _saelens_v6(cfg: dict[str, Any]) -> dict[str, Any]:
    """A SAELens config in the 6.x layout: older files (before 6.0: ``hook_point``,
    ``activation_fn_kwargs``, a boolean ``normalize_activations``, metadata at the top level) are
    translated the way SAELens's own ``handle_pre_6_0_config`` does."""
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    major = str(version).split(".")[0] if version else ""
    cfg = dict(cfg)
    if not major.isdigit() or int(major) < 6:
        for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"),
                         ("activation_fn_str", "activation_fn")):
            if old in cfg:
                cfg.setdefault(new, cfg.pop(old))
        cfg.setdefault("apply_b_dec_to_input", True)
        cfg.setdefault("architecture", "standard")
        cfg.setdefault("reshape_activations", "hook_z" if "hook_z" in str(cfg.get("hook_name", "")) else "none")
        k = (cfg.get("activation_fn_kwargs") or {}).get("k")
        if cfg.get("activation_fn") == "topk" and k is not None:
            cfg["architecture"], cfg["k"] = "topk", k
        if isinstance(cfg.get("normalize_activations"), bool):
            cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
    cfg["normalize_activations"] = cfg.get("normalize_activations") or "none"
    meta = {k: cfg[k] for k in ("hook_name", "hook_name_out", "hook_head_index", "model_name",
                                "model_from_pretrained_kwargs") if k in cfg}
    cfg["metadata"] = {**meta, **(cfg.get("metadata") or {})}
    return cfg


def _transformer_lens_centres(meta: dict[str, Any]) -> bool:
    """Whether the model the dictionary was trained on was loaded with TransformerLens's
    ``center_writing_weights`` (SAELens loads models with ``from_pretrained_no_processing`` plus these
    keywords, so only an explicit ``true`` centres)."""
    kwargs = meta.get("model_from_pretrained_kwargs") or {}
    return bool(kwargs.get("center_writing_weights", False))


def read_saelens(path: Path, device: str | torch.device, model: Any = None, site: str | None = None,
                  target_site: str | None = None, other_model: bool = False) -> SparseCoder:
    """A SAELens folder (any 6.x architecture, or an older config) as a ``SparseCoder`` whose encode
    and forward equal SAELens's ``SAE.load_from_disk(path)`` ones."""
    import warnings

    cfg = _saelens_v6(read_config(path / SAELENS_CONFIG))
    arch_name = cfg.get("architecture", "standard")
    if arch_name not in SAELENS_ARCHS:
        why = ("SAELens saves BatchTopK and Matryoshka SAEs as jumprelu (SAE.save_inference_model); this file holds "
               "the training form" if arch_name in ("batchtopk", "matryoshka_batchtopk") else "not supported")
        raise SAEError(f"{path}: SAELens architecture {arch_name!r}: {why}; supported: {', '.join(SAELENS_ARCHS)}")
    arch, transcoder, skip = SAELENS_ARCHS[arch_name]
    if arch == "topk" and (isinstance(cfg.get("k"), bool) or not isinstance(cfg.get("k"), int) or cfg["k"] < 1):
        raise SAEError(f"{path}: a topk config needs k, the latents kept per token (an integer ≥ 1); it has "
                       f"k={cfg.get('k')!r}")
    norm = cfg["normalize_activations"]
    if norm not in _SAELENS_NORMS:
        raise SAEError(f"{path}: normalize_activations={norm!r}; known: {', '.join(_SAELENS_NORMS)}")
    if norm in ("expected_average_only_in", "covariance_whitening"):
        warnings.warn(f"{path}: normalize_activations={norm!r} was not folded into these weights; like SAELens's "
                      "load_from_disk, mechscope applies no normalisation (SAELens's from_pretrained folds a "
                      "registry constant that the files do not hold)", stacklevel=3)
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise SAEError(f"{path}: reshape_activations={cfg['reshape_activations']!r}; known: 'none', 'hook_z'")
    w = read_safetensors(path / SAELENS_WEIGHTS)
    need = {"W_enc": "[d_in, d_sae]", "W_dec": "[d_sae, d_out]", "b_dec": "[d_out]"}
    need |= ({"b_gate": "[d_sae]", "b_mag": "[d_sae]", "r_mag": "[d_sae]"} if arch == "gated" else {"b_enc": "[d_sae]"})
    need |= ({"threshold": "[d_sae]"} if arch == "jumprelu" else {}) | ({"W_skip": "[d_out, d_in]"} if skip else {})
    check_weights(w, need, path / SAELENS_WEIGHTS)
    if arch == "gated":
        w["b_enc"] = w["b_gate"]
    d_in, d_sae = w["W_enc"].shape
    d_out = w["W_dec"].shape[1] if w["W_dec"].dim() == 2 else -1
    shapes = {"W_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_out,), "threshold": (d_sae,), "W_skip": (d_out, d_in),
              "b_mag": (d_sae,), "r_mag": (d_sae,)}
    bad = [f"{k} {tuple(w[k].shape)} (want {v})" for k, v in shapes.items() if k in w and tuple(w[k].shape) != v]
    if bad or cfg.get("d_in", d_in) != d_in or cfg.get("d_sae", d_sae) != d_sae or (not transcoder and d_out != d_in) \
            or cfg.get("d_out", d_out) != d_out:
        raise SAEError(f"{path}: shapes disagree — W_enc {tuple(w['W_enc'].shape)}, {', '.join(bad) or 'W_dec ' + str(tuple(w['W_dec'].shape))}; "
                       f"cfg d_in={cfg.get('d_in')} d_sae={cfg.get('d_sae')} d_out={cfg.get('d_out')}")
    if arch == "jumprelu" and (w["threshold"] < 0).any():
        raise SAEError(f"{path}: threshold must be ≥ 0")
    if "scaling_factor" in w and not torch.allclose(w["scaling_factor"], torch.ones_like(w["scaling_factor"])):
        if not cfg.get("finetuning_scaling_factor"):  # as SAELens refuses it
            raise SAEError(f"{path}: a scaling_factor is present but finetuning_scaling_factor is false")
        if w["scaling_factor"].shape != (d_sae,):
            raise SAEError(f"{path}: scaling_factor must be [{d_sae}]")
        w["W_dec"] = w["W_dec"] * w["scaling_factor"][:, None]  # old SAELens: f·s before W_dec

    meta = cfg["metadata"]
    hook, hook_out, head = meta.get("hook_name"), meta.get("hook_name_out"), meta.get("hook_head_index")
    without_gain = False
    site = site or meta.get("mechscope_site")
    target_site = target_site or meta.get("mechscope_target_site")
    if site is None and hook:
        site, without_gain = hook_site(hook)
    if target_site is None and hook_out:
        target_site, _ = hook_site(hook_out)
    if transcoder and target_site is None and site and site.endswith(".mlp.in"):
        target_site = site.rsplit(".", 1)[0] + ".out"  # the standard MLP transcoder
    if transcoder and d_out == d_in and (site is None or target_site is None or target_site == site):
        missing = " and ".join(f"{name}= (--{name.replace('_', '-')} on the command line)" for name, value in
                               (("site", site), ("target_site", target_site if target_site != site else None))
                               if value is None)
        raise SitesNotNamed(f"{path}: a transcoder whose files do not name the site{'s' if ' and ' in missing else ''} "
                            f"it {'reads and writes' if site is None else 'writes'}; give {missing}",
                            {"format": "saelens", "dictionary": f"{arch} {arch_name}", "d_in": int(d_in),
                             "d_out": int(d_out), "width": int(d_sae), "reads": site, "model": meta.get("model_name")})
    centre = not transcoder and _transformer_lens_centres(meta) and site is not None \
        and site.split(".", 2)[-1] in _WRITTEN_SITES
    row_norm = _SAELENS_NORMS[norm]
    if centre and model is not None and not pre_mlp_norm(model, 0)[2]:
        centre = False  # TransformerLens centres only LayerNorm models
    if centre and row_norm in ("none",):
        row_norm = "center"
        if model is None:
            warnings.warn(f"{path}: trained on TransformerLens's center_writing_weights view; mechscope reads it "
                          "through the same centring (give model= to check the model has LayerNorms, which "
                          "TransformerLens requires to centre)", stacklevel=3)
    if without_gain and row_norm != "none":
        raise SAEError(f"{path}: normalize_activations={norm!r} on {hook} (the norm's output without its gain) "
                       "is not supported")
    config = SAEConfig(arch, int(d_in), int(d_sae), k=int(cfg["k"]) if arch == "topk" else None, d_out=int(d_out),
                       skip=skip, site=site, target_site=target_site if transcoder else None,
                       model=meta.get("model_name"), input_norm=row_norm, head=int(head) if head is not None else None)
    # float32 throughout: the folds below are elementwise or matrix-vector (one rounding per entry, or
    # a sum of d_in terms), far inside the 1e-5 the peer comparison holds them to
    W_enc, b_enc = w["W_enc"].float().T, w["b_enc"].float()  # a transposed view: [d_sae, d_in], no copy
    W_dec, b_dec = w["W_dec"].float(), w["b_dec"].float()
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        # SAELens ranks pre·‖W_dec,i‖ and decodes f/‖W_dec,i‖: the same as rows rescaled once here
        n = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * n[:, None], b_enc * n, W_dec / n[:, None]
    if not transcoder and not cfg.get("apply_b_dec_to_input", True):  # SAELens reads x, mechscope x − b_dec
        shift = W_enc @ b_dec
        b_enc = b_enc + shift
        if arch == "gated":
            w["b_mag"] = w["b_mag"].float() + w["r_mag"].float().exp() * shift
    W_skip = w["W_skip"].float().T if skip else None  # SAELens [d_out, d_in], mechscope [d_in, d_out]
    if without_gain:
        W_enc, b_enc, W_dec, b_dec, W_skip = fold_norm_gain(model, site, path, hook, transcoder,
                                                             W_enc, b_enc, W_dec, b_dec, W_skip)
    weights = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if skip:
        weights["W_skip"] = W_skip
    if arch == "jumprelu":
        weights["log_threshold"] = w["threshold"].float().log()
    if arch == "gated":
        weights.update(b_mag=w["b_mag"].float(), r_mag=w["r_mag"].float())
    ours = SparseCoder(config, weights=weights)
    if model is not None:
        check_against_model(ours, model, path, other_model=other_model)
    return ours.to(device).eval()


def save_saelens(sae: SparseCoder, directory: str | os.PathLike, *, hook_name: str | None = None,
                 model_name: str | None = None) -> Path:
    """Write ``sae`` as a SAELens 6 folder (``cfg.json`` + ``sae_weights.safetensors``) that
    ``SAE.load_from_disk`` opens; ``hook_name`` is the TransformerLens hook it reads (default: the
    one matching its site, when there is one). mechscope's input scaling is folded into the
    weights; a batchtopk dictionary is written as jumprelu with its inference threshold, as SAELens
    saves BatchTopK; transcoders as (skip_)transcoder or jumprelu_(skip_)transcoder with the input
    centring folded into ``b_enc``."""
    c = sae.cfg
    if c.transcoder and c.arch not in ("relu", "jumprelu"):
        raise SAEError(f"SAELens transcoders are ReLU or JumpReLU; this one is {c.arch!r}")
    if c.input_norm == "center":
        raise SAEError("SAELens has no centring normalisation; this dictionary reads a centred view "
                       "(TransformerLens's center_writing_weights) and cannot be written as SAELens files")
    if c.transcoder and c.input_norm != "none":
        raise SAEError(f"input_norm={c.input_norm!r} transcoders cannot be written as SAELens files")
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "gated": "gated"}[c.arch]
    if c.transcoder:
        arch = {"standard": "", "jumprelu": "jumprelu_"}[arch] + ("skip_" if c.skip else "") + "transcoder"
    with torch.no_grad():
        s_in, s_out = float(sae.scale_in), float(sae.scale_out)
        W_enc = (sae.W_enc.double() * s_in).T  # [d_in, d_sae]: x ↦ x·s_in W_encᵀ
        W_dec = sae.W_dec.double() / s_out
        b_dec = sae.b_dec.double() / s_out
        if c.transcoder:  # SAELens: x W_enc' + b_enc' must equal x·s_in W_encᵀ + (b_enc − W_enc b_in)
            b_enc = sae.encoder_bias().double()
        else:  # SAELens: (x − b_dec') W_enc' + b_enc' must equal x·s_in W_encᵀ + (b_enc − W_enc b_dec)
            b_enc = sae.encoder_bias().double() + b_dec @ W_enc
        tensors = {"W_enc": W_enc, "W_dec": W_dec, "b_dec": b_dec}
        if c.arch == "gated":  # magnitude: e^r·(pre − b_gate) + b_mag, pre − b_gate unchanged by the fold
            tensors.update(b_gate=b_enc, r_mag=sae.r_mag.double(), b_mag=sae.b_mag.double())
        else:
            tensors["b_enc"] = b_enc
        if c.skip:
            tensors["W_skip"] = (sae.W_skip.double() * s_in / s_out).T  # [d_out, d_in]
        if "jumprelu" in arch:
            tensors["threshold"] = (sae.threshold if c.arch == "jumprelu"
                                    else sae.batch_threshold.expand(c.width)).double()
    tl = {v: k for k, v in TL_HOOKS.items()}

    def hook_of(site: str | None) -> str | None:
        if site is None or not site.startswith("blocks."):
            return "hook_embed" if site == "embed" else None
        layer, _, kind = site.partition(".")[2].partition(".")
        return f"blocks.{layer}.{tl[kind]}" if kind in tl else None  # a TransformerLens hook name, not a site

    # SAELens keeps unknown metadata keys: mechscope's own site names travel with the file, for sites
    # TransformerLens has no hook for (mlp.in is the norm's output *with* its gain)
    meta = {"hook_name": hook_name or hook_of(c.site), "model_name": model_name or c.model, "mechscope_site": c.site}
    if c.transcoder:
        meta.update(hook_name_out=hook_of(c.target_site), mechscope_target_site=c.target_site)
    if c.head is not None:
        meta["hook_head_index"] = c.head
    cfg = {"architecture": arch, "d_in": c.d_in, "d_sae": c.width, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": not c.transcoder,
           "normalize_activations": {"none": "none", "rescale": "constant_norm_rescale", "layer_norm": "layer_norm"}[c.input_norm],
           "reshape_activations": "hook_z" if c.site and c.site.endswith(".attn.z") and c.head is None else "none",
           "metadata": meta}
    if c.transcoder:
        cfg["d_out"] = c.d_out
    if arch == "topk":
        cfg["k"] = c.k
    return write_folder(directory, SAELENS_CONFIG, cfg, SAELENS_WEIGHTS, tensors)
