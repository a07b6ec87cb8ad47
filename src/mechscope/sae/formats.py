"""Dictionaries from elsewhere: one reader that recognises the format from the files, and writers.

- mechscope's own folders (``config.json`` + ``sae.safetensors``, ``SparseCoder.save``);
- SAELens folders (``cfg.json`` + ``sae_weights.safetensors``, ``SAE.save_model``): every
  architecture of SAELens 6's registry but the experimental ones (standard, gated, topk incl.
  ``rescale_acts_by_decoder_norm``, jumprelu, transcoder, skip_transcoder, jumprelu_transcoder,
  jumprelu_skip_transcoder; abstopk, temporal, matching_pursuit are refused by name), with or without
  ``apply_b_dec_to_input``, every ``normalize_activations``, ``reshape_activations: hook_z``,
  ``hook_head_index``, and configs older than 6.0. SAELens keeps ``W_enc`` as [d_in, d_sae] and
  ``W_skip`` as [d_out, d_in]; mechscope keeps [width, d_in] and [d_in, d_out] and subtracts ``b_dec``
  from an SAE's input, so a file without ``apply_b_dec_to_input`` has ``W_enc b_dec`` folded into the
  encoder bias. A dictionary on TransformerLens's ``ln2.hook_normalized`` (the pre-MLP norm's output
  without its gain) is rewritten to read ``mlp.in`` when the model is given; one trained on
  TransformerLens's ``center_writing_weights`` view reads the centred residual (``input_norm="center"``);
- Gemma Scope folders (``params.npz``: JumpReLU; the caller names the site, which the folder does
  not say — ``layer_L`` gives only the layer);
- circuit-tracer transcoder sets (``config.yaml``) are many dictionaries: ``transcoder_sets``;
- EleutherAI sparsify folders (one per hookpoint: ``cfg.json`` + ``sae.safetensors``, TopK SAEs
  and transcoders with or without a skip connection; the folder name gives the sites).

``save_saelens`` writes any mechscope dictionary so that SAELens, and what reads its files, opens
it; ``save_sparsify`` writes TopK SAEs for sparsify (its format holds nothing else).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import CONFIG, WEIGHTS, SAEConfig, SAEError
from .dictionary import SparseCoder, load_sae, nonfinite
from ..models.sites import block_site

SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_ARCHS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
SPARSIFY_CONFIG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
GEMMA_SCOPE_WEIGHTS = "params.npz"
# TransformerLens hook names (what SAELens files carry) → mechscope sites
_TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
             "hook_attn_out": "attn.out", "hook_mlp_out": "mlp.out", "mlp.hook_post": "mlp.post",
             "mlp.hook_pre": "mlp.pre", "attn.hook_z": "attn.z",
             "mlp.hook_in": "mlp.in"}  # circuit-tracer's name for the MLP's input (the norm's output, gain applied)


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
    bad = nonfinite(w)
    if bad:
        raise SAEError(f"{file}: {', '.join(bad)} contains NaN or infinite values")


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


def _hook_site(hook: str) -> tuple[str, bool]:
    """(mechscope site, whether the dictionary reads it without the norm's gain) of a TransformerLens
    hook name; ``ln2.hook_normalized`` is ``mlp.in`` before the gain (and bias) of the pre-MLP norm."""
    parts = hook.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        if parts[2] in _TL_HOOKS:
            return block_site(int(parts[1]), _TL_HOOKS[parts[2]]), False
        if parts[2] == "ln2.hook_normalized":
            return block_site(int(parts[1]), "mlp.in"), True
    if hook == "hook_embed":
        return "embed", False
    raise SAEError(f"hook {hook!r} has no mechscope site; known: blocks.L.{{{', '.join(_TL_HOOKS)}, "
                   f"ln2.hook_normalized}}, hook_embed")


def site_from_hook(hook: str) -> str:
    """The mechscope site of a TransformerLens hook name (``blocks.8.hook_resid_pre`` →
    ``blocks.8.resid_pre``); ``SAEError`` for hooks with no equal site. ``ln2.hook_normalized`` is
    refused: it is ``mlp.in`` divided by the norm's gain (``load_dictionary(..., model=)`` folds it)."""
    site, without_gain = _hook_site(hook)
    if without_gain:
        raise SAEError(f"hook {hook!r} is the pre-MLP norm's output without its gain; mechscope's {site} has the "
                       "gain applied (load_dictionary(path, model=...) folds the gain into the dictionary)")
    return site


def dictionary_format(path: str | os.PathLike) -> str:
    """Which format the folder ``path`` holds: "mechscope", "saelens", "sparsify", "gemma-scope" or
    "circuit-tracer" (a transcoder set: ``load_transcoder_set``);
    ``SAEError`` naming what was found otherwise."""
    path = Path(path)
    if path.name == GEMMA_SCOPE_WEIGHTS and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise SAEError(f"{path} is not a folder; a dictionary is a folder with {CONFIG} + {WEIGHTS} (mechscope), "
                       f"{SAELENS_CONFIG} + {SAELENS_WEIGHTS} (SAELens), {SPARSIFY_CONFIG} + {SPARSIFY_WEIGHTS} "
                       f"(sparsify) or {GEMMA_SCOPE_WEIGHTS} (Gemma Scope)")
    if (path / GEMMA_SCOPE_WEIGHTS).exists():
        return "gemma-scope"
    if (path / "config.yaml").exists():
        return "circuit-tracer"
    if (path / CONFIG).exists():
        return "mechscope"
    if (path / SAELENS_CONFIG).exists() and (path / SAELENS_WEIGHTS).exists():
        return "saelens"
    if (path / SPARSIFY_CONFIG).exists() and (path / SPARSIFY_WEIGHTS).exists():
        return "sparsify"
    raise SAEError(f"{path} holds neither {CONFIG} + {WEIGHTS} (mechscope), {SAELENS_CONFIG} + {SAELENS_WEIGHTS} "
                   f"(SAELens) nor {SPARSIFY_CONFIG} + {SPARSIFY_WEIGHTS} (sparsify); found: "
                   f"{', '.join(sorted(p.name for p in path.iterdir())[:8]) or 'nothing'}")


def load_dictionary(path: str | os.PathLike, device: str | torch.device = "cpu", *, model: Any = None,
                    site: str | None = None, target_site: str | None = None, other_model: bool = False) -> SparseCoder:
    """A ``SparseCoder`` from a folder in any supported format (see the module docstring).

    ``model``: the Model it will be used with — the dictionary is checked against it (model name,
    site, width; ``other_model=True`` skips the name) and, for TransformerLens hooks that mechscope
    sees differently (``ln2.hook_normalized``), rewritten to read mechscope's site. ``site`` /
    ``target_site``: what it reads / writes, where the files do not say (Gemma Scope, some
    transcoders) or to override them."""
    kind = dictionary_format(path)
    path = Path(path)
    if path.is_file():
        path = path.parent
    if kind == "saelens":
        return _from_saelens(path, device, model, site, target_site, other_model)
    if kind == "circuit-tracer":
        raise SAEError(f"{path} is a circuit-tracer transcoder set (config.yaml: one transcoder per layer, or a "
                       "cross-layer transcoder); read it with mechscope.sae.load_transcoder_set(path)")
    sae = {"gemma-scope": lambda: _from_gemma_scope(path, device, site), "mechscope": lambda: load_sae(path, device),
           "sparsify": lambda: _from_sparsify(path, device)}[kind]()
    if site is not None:
        sae.cfg.site = site
    if target_site is not None:
        if not sae.cfg.transcoder:
            raise SAEError(f"{path} is an SAE (it reads and writes one site); target_site= is for transcoders")
        sae.cfg.target_site = target_site
    if model is not None:
        check_against_model(sae, model, path, other_model=other_model)
    return sae


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
    W_enc = w["W_enc"].T  # [d_sae, d_in], a view
    weights = {"W_enc": W_enc, "b_enc": w["b_enc"] + W_enc @ w["b_dec"],  # it reads x, mechscope x − b_dec
               "W_dec": w["W_dec"], "b_dec": w["b_dec"], "log_threshold": w["threshold"].log()}
    return SparseCoder(SAEConfig("jumprelu", int(d_in), int(d_sae), site=site, model="gemma-2"),
                       weights=weights).to(device).eval()


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


def _from_sparsify(path: Path, device: str | torch.device) -> SparseCoder:
    """A sparsify folder: a TopK SAE or transcoder (``transcode``: the encoder reads x itself, not
    x − b_dec), optionally with a skip connection (``W_skip`` [d_in, d_in], applied as x W_skipᵀ)."""
    cfg = _read_config(path / SPARSIFY_CONFIG)
    if cfg.get("activation", "topk") != "topk":
        raise SAEError(f"{path}: sparsify activation {cfg.get('activation')!r} is not supported (only 'topk')")
    transcoder, skip = bool(cfg.get("transcode")), bool(cfg.get("skip_connection"))
    if skip and not transcoder:
        raise SAEError(f"{path}: a skip connection on an autoencoder (skip_connection without transcode) is not supported")
    w = _read_safetensors(path / SPARSIFY_WEIGHTS)
    _check_weights(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"] + (["W_skip"] if skip else []),
                   path / SPARSIFY_WEIGHTS)
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
    return _write_folder(directory, SPARSIFY_CONFIG, cfg, SPARSIFY_WEIGHTS, tensors)


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


def _pre_mlp_norm(model: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(gain [d], bias [d], is LayerNorm) of ``model``'s pre-MLP norm in ``layer``."""
    from ..models.weights import norm_affine

    return norm_affine(model, layer)


def _site_width(model: Any, site: str, head: int | None) -> int:
    """The width of ``site`` in ``model`` as a dictionary reads it (head-layout sites flattened)."""
    from ..models.sites import parse

    c = model.cfg
    kind = parse(site).kind
    if kind in ("attn.q", "attn.z"):
        return c.d_head if head is not None else c.n_heads * c.d_head
    if kind in ("attn.k", "attn.v"):
        return c.d_head if head is not None else c.n_kv_heads * c.d_head
    return c.d_mlp if kind in ("mlp.pre", "mlp.post") else c.d_model


def _same_model(theirs: str, ours: str) -> bool:
    norm = lambda name: "".join(ch for ch in name.lower().rsplit("/", 1)[-1] if ch.isalnum())  # noqa: E731
    a, b = norm(theirs), norm(ours)
    return bool(a) and bool(b) and (a in b or b in a)


def check_against_model(sae: SparseCoder, model: Any, path: Path | str, *, other_model: bool = False) -> None:
    """Refuse ``sae`` for ``model`` when the file names another model (unless ``other_model``), when
    its site is not one of the model's, or when its input width differs from the site's."""
    c = sae.cfg
    if c.model and not other_model and not _same_model(c.model, model.name):
        raise SAEError(f"{path} is a dictionary for {c.model!r}, not {model.name!r} (other_model=True loads it anyway)")
    for verb, site, d in (("reads", c.site, c.d_in), ("writes", c.target_site if c.transcoder else None, c.d_out)):
        if site is None:
            continue
        if site not in model.sites:
            raise SAEError(f"{path} {verb} site {site!r}, which {model.name} does not have")
        want = _site_width(model, site, c.head)
        if want != d:
            raise SAEError(f"{path} has width {d} at {site}; {model.name}'s {site} is {want} wide — a dictionary "
                           f"for another model or site")


# SAELens architecture → (mechscope arch, transcoder, skip); others are refused by name
SAELENS_ARCHS = {"standard": ("relu", False, False), "gated": ("gated", False, False), "topk": ("topk", False, False),
                 "jumprelu": ("jumprelu", False, False), "transcoder": ("relu", True, False),
                 "skip_transcoder": ("relu", True, True), "jumprelu_transcoder": ("jumprelu", True, False),
                 "jumprelu_skip_transcoder": ("jumprelu", True, True)}
_SAELENS_NORMS = {"none": "none", "expected_average_only_in": "none", "covariance_whitening": "none",
                  "constant_norm_rescale": "rescale", "layer_norm": "layer_norm"}
_WRITTEN_SITES = ("resid_pre", "resid_mid", "resid_post", "attn.out", "mlp.out")  # what centring changes


def _from_saelens(path: Path, device: str | torch.device, model: Any = None, site: str | None = None,
                  target_site: str | None = None, other_model: bool = False) -> SparseCoder:
    """A SAELens folder (any 6.x architecture, or an older config) as a ``SparseCoder`` whose encode
    and forward equal SAELens's ``SAE.load_from_disk(path)`` ones."""
    import warnings

    cfg = _saelens_v6(_read_config(path / SAELENS_CONFIG))
    arch_name = cfg.get("architecture", "standard")
    if arch_name not in SAELENS_ARCHS:
        why = ("SAELens saves BatchTopK and Matryoshka SAEs as jumprelu (SAE.save_inference_model); this file holds "
               "the training form" if arch_name in ("batchtopk", "matryoshka_batchtopk") else "not supported")
        raise SAEError(f"{path}: SAELens architecture {arch_name!r}: {why}; supported: {', '.join(SAELENS_ARCHS)}")
    arch, transcoder, skip = SAELENS_ARCHS[arch_name]
    norm = cfg["normalize_activations"]
    if norm not in _SAELENS_NORMS:
        raise SAEError(f"{path}: normalize_activations={norm!r}; known: {', '.join(_SAELENS_NORMS)}")
    if norm in ("expected_average_only_in", "covariance_whitening"):
        warnings.warn(f"{path}: normalize_activations={norm!r} was not folded into these weights; like SAELens's "
                      "load_from_disk, mechscope applies no normalisation (SAELens's from_pretrained folds a "
                      "registry constant that the files do not hold)", stacklevel=3)
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise SAEError(f"{path}: reshape_activations={cfg['reshape_activations']!r}; known: 'none', 'hook_z'")
    w = _read_safetensors(path / SAELENS_WEIGHTS)
    need = ["W_enc", "W_dec", "b_dec"] + (["b_gate", "b_mag", "r_mag"] if arch == "gated" else ["b_enc"])
    need += (["threshold"] if arch == "jumprelu" else []) + (["W_skip"] if skip else [])
    _check_weights(w, need, path / SAELENS_WEIGHTS)
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
        site, without_gain = _hook_site(hook)
    if target_site is None and hook_out:
        target_site, _ = _hook_site(hook_out)
    if transcoder and target_site is None and site and site.endswith(".mlp.in"):
        target_site = site.rsplit(".", 1)[0] + ".out"  # the standard MLP transcoder
    if transcoder and d_out == d_in and (site is None or target_site is None or target_site == site):
        raise SAEError(f"{path}: a transcoder that does not name what it reads and writes; give site= and target_site=")
    centre = not transcoder and _transformer_lens_centres(meta) and site is not None \
        and site.split(".", 2)[-1] in _WRITTEN_SITES
    row_norm = _SAELENS_NORMS[norm]
    if centre and model is not None and not _pre_mlp_norm(model, 0)[2]:
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
        W_enc, b_enc, W_dec, b_dec, W_skip = _fold_norm_gain(model, site, path, hook, transcoder,
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


def _fold_norm_gain(model: Any, site: str, path: Path, hook: str, transcoder: bool, W_enc, b_enc, W_dec, b_dec, W_skip):
    """Weights reading TransformerLens's ``ln2.hook_normalized`` (the norm's output x̂ without its gain g
    and bias b) rewritten to read mechscope's ``mlp.in`` = g·x̂ + b: the encoder sees (x − b)/g; an
    SAE's reconstruction is mapped back by g·ŷ + b."""
    if model is None:
        raise SAEError(f"{path} reads {hook}: the pre-MLP norm's output without its gain; mechscope's "
                       f"{site} has the gain applied — give model= so the gain can be folded into the weights")
    g, b, _ = _pre_mlp_norm(model, int(site.split(".")[1]))
    if (g == 0).any():
        raise SAEError(f"{path}: the norm gain of {site} has zeros; the dictionary's input cannot be recovered")
    shift = W_enc @ (b / g)  # [width]
    W_enc = W_enc / g
    if transcoder:
        b_enc = b_enc - shift
        if W_skip is not None:
            b_dec = b_dec - (b / g) @ W_skip
            W_skip = W_skip / g[:, None]
    else:  # b_enc − W_enc'·b_dec' must equal b_enc − W_enc·b_dec − W_enc·(b/g): b_enc stays
        W_dec, b_dec = W_dec * g, g * b_dec + b
    return W_enc, b_enc, W_dec, b_dec, W_skip


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
    tl = {v: k for k, v in _TL_HOOKS.items()}

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
    return _write_folder(directory, SAELENS_CONFIG, cfg, SAELENS_WEIGHTS, tensors)


__all__ = ["check_against_model", "dictionary_format", "load_dictionary", "save_saelens", "save_sparsify", "site_from_hook", "site_from_hookpoint"]
