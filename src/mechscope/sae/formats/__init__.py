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

import os
from pathlib import Path
from typing import Any

import torch

from ..config import CONFIG, WEIGHTS, SAEError
from ..dictionary import SparseCoder, load_sae
from .common import check_against_model, site_from_hook
from .gemma_scope import GEMMA_SCOPE_WEIGHTS, read_gemma_scope
from .saelens import SAELENS_CONFIG, SAELENS_WEIGHTS, read_saelens, save_saelens
from .sparsify import SPARSIFY_CONFIG, SPARSIFY_WEIGHTS, read_sparsify, save_sparsify, site_from_hookpoint


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
        return read_saelens(path, device, model, site, target_site, other_model)
    if kind == "circuit-tracer":
        raise SAEError(f"{path} is a circuit-tracer transcoder set (config.yaml: one transcoder per layer, or a "
                       "cross-layer transcoder); read it with mechscope.sae.load_transcoder_set(path)")
    sae = {"gemma-scope": lambda: read_gemma_scope(path, device, site), "mechscope": lambda: load_sae(path, device),
           "sparsify": lambda: read_sparsify(path, device)}[kind]()
    if site is not None:
        sae.cfg.site = site
    if target_site is not None:
        if not sae.cfg.transcoder:
            raise SAEError(f"{path} is an SAE (it reads and writes one site); target_site= is for transcoders")
        sae.cfg.target_site = target_site
    if model is not None:
        check_against_model(sae, model, path, other_model=other_model)
    return sae


__all__ = ["check_against_model", "dictionary_format", "load_dictionary", "save_saelens", "save_sparsify", "site_from_hook",
           "site_from_hookpoint"]
