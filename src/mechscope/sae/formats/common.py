"""What every format shares: reading and checking files, TransformerLens hook names as sites, and a
dictionary checked against the model it will be used with (widths, sites, the model's name)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ...models.sites import block_site
from ..config import SAEError
from ..dictionary import SparseCoder, nonfinite

# TransformerLens hook names (what SAELens files carry) → mechscope sites
TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
             "hook_attn_out": "attn.out", "hook_mlp_out": "mlp.out", "mlp.hook_post": "mlp.post",
             "mlp.hook_pre": "mlp.pre", "attn.hook_z": "attn.z",
             "mlp.hook_in": "mlp.in"}  # circuit-tracer's name for the MLP's input (the norm's output, gain applied)


def read_config(file: Path) -> dict[str, Any]:
    """A dictionary's JSON config: an object, or a clear ``SAEError``."""
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise SAEError(f"{file} cannot be read as JSON ({err})") from None
    if not isinstance(config, dict):
        raise SAEError(f"{file} holds a JSON {type(config).__name__}; a dictionary's config is a JSON object "
                       "({\"d_in\": ..., \"d_sae\": ..., ...})")
    return config


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (OSError, SafetensorError) as err:
        raise SAEError(f"{file} cannot be read ({err})") from None


def check_weights(w: dict[str, torch.Tensor], need: list[str] | dict[str, str], file: Path) -> None:
    """Every tensor ``need`` names is there, of the rank its layout shows where ``need`` maps names to
    layouts (``{"W_enc": "[d_in, width]"}``), and no tensor holds NaN or inf."""
    missing = [k for k in need if k not in w]
    if missing:
        raise SAEError(f"{file} lacks {missing} (has {sorted(w)})")
    for name, layout in (need.items() if isinstance(need, dict) else ()):
        rank = layout.split(" or ")[0].count(",") + 1
        if w[name].dim() != rank:
            raise SAEError(f"{file}: {name} has shape {list(w[name].shape)} (rank {w[name].dim()}); "
                           f"it should be {layout} (rank {rank})")
    bad = nonfinite(w)
    if bad:
        raise SAEError(f"{file}: {', '.join(bad)} contains NaN or infinite values")


def write_folder(directory: str | os.PathLike, config_name: str, cfg: dict[str, Any], weights_name: str,
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


def hook_site(hook: str) -> tuple[str, bool]:
    """(mechscope site, whether the dictionary reads it without the norm's gain) of a TransformerLens
    hook name; ``ln2.hook_normalized`` is ``mlp.in`` before the gain (and bias) of the pre-MLP norm."""
    parts = hook.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        if parts[2] in TL_HOOKS:
            return block_site(int(parts[1]), TL_HOOKS[parts[2]]), False
        if parts[2] == "ln2.hook_normalized":
            return block_site(int(parts[1]), "mlp.in"), True
    if hook == "hook_embed":
        return "embed", False
    raise SAEError(f"hook {hook!r} has no mechscope site; known: blocks.L.{{{', '.join(TL_HOOKS)}, "
                   f"ln2.hook_normalized}}, hook_embed")


def site_from_hook(hook: str) -> str:
    """The mechscope site of a TransformerLens hook name (``blocks.8.hook_resid_pre`` →
    ``blocks.8.resid_pre``); ``SAEError`` for hooks with no equal site. ``ln2.hook_normalized`` is
    refused: it is ``mlp.in`` divided by the norm's gain (``load_dictionary(..., model=)`` folds it)."""
    site, without_gain = hook_site(hook)
    if without_gain:
        raise SAEError(f"hook {hook!r} is the pre-MLP norm's output without its gain; mechscope's {site} has the "
                       "gain applied (load_dictionary(path, model=...) folds the gain into the dictionary)")
    return site


def pre_mlp_norm(model: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(gain [d], bias [d], is LayerNorm) of ``model``'s pre-MLP norm in ``layer``."""
    from ...models.weights import norm_affine

    return norm_affine(model, layer)


def _site_width(model: Any, site: str, head: int | None) -> int:
    """The width of ``site`` in ``model`` as a dictionary reads it (head-layout sites flattened)."""
    from ...models.sites import parse

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


def model_names(model: Any) -> list[str]:
    """The names a model goes by: mechscope's (an embedded name, or the folder it was loaded from) and
    the one its HF config records (the hub id a saved folder came from)."""
    config = getattr(getattr(model, "hf", None), "config", None)
    recorded = [getattr(config, attr, "") for attr in ("_name_or_path", "name_or_path")] if config is not None else []
    return [n for n in dict.fromkeys([model.name, *recorded]) if n]


def check_against_model(sae: SparseCoder, model: Any, path: Path | str, *, other_model: bool = False) -> None:
    """The one rule for pairing a dictionary with a model: compare what can be compared. Refused: a site
    the model does not have, a width that differs from the site's. A model name in the files that
    matches none of the model's names (``model_names``) is only a warning when everything else fits (a
    folder-loaded model is named by its path; public dictionaries name hub ids); ``other_model`` says
    the mismatch is meant and silences it."""
    c = sae.cfg
    for verb, site, d in (("reads", c.site, c.d_in), ("writes", c.target_site if c.transcoder else None, c.d_out)):
        if site is None:
            continue
        if site not in model.sites:
            raise SAEError(f"{path} {verb} site {site!r}, which {model.name} does not have")
        want = _site_width(model, site, c.head)
        if want != d:
            raise SAEError(f"{path} has width {d} at {site}; {model.name}'s {site} is {want} wide — a dictionary "
                           f"for another model or site")
    if c.model and not other_model and not any(_same_model(c.model, name) for name in model_names(model)):
        import warnings

        warnings.warn(f"{path} names the model {c.model!r}; this one is {' / '.join(map(repr, model_names(model)))}. "
                      "Its sites and widths fit, so it is used (other_model=True, or --other-model, says the mismatch "
                      "is meant)", UserWarning, stacklevel=3)


def fold_norm_gain(model: Any, site: str, path: Path, hook: str, transcoder: bool, W_enc, b_enc, W_dec, b_dec, W_skip):
    """Weights reading TransformerLens's ``ln2.hook_normalized`` (the norm's output x̂ without its gain g
    and bias b) rewritten to read mechscope's ``mlp.in`` = g·x̂ + b: the encoder sees (x − b)/g; an
    SAE's reconstruction is mapped back by g·ŷ + b."""
    if model is None:
        raise SAEError(f"{path} reads {hook}: the pre-MLP norm's output without its gain; mechscope's "
                       f"{site} has the gain applied — give model= so the gain can be folded into the weights")
    g, b, _ = pre_mlp_norm(model, int(site.split(".")[1]))
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
