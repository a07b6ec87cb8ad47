"""Feature dashboards: the neuron cards of ``mechscope.components.neurons``, for dictionary features.

``feature_cards(sae, model, features)`` runs blocks of the embedded corpus, encodes the SAE's
site (the first position of each block, the attention sink the SAE never saw, gets activation 0),
and builds per feature: top activating contexts with per-token activations, examples from
activation quantiles, the histogram and density, the logit effect of the decoder direction
(W_dec,i / s_out through W_U — for a residual-space target directly, for an MLP-neuron target via
W_out — the final norm's scale left out), and an automatic label from the peak and promoted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch

from .. import distributed, names
from ..models.model import Model
from ..models.sites import parse
from ..models.weights import embedding_weights, mlp_out_weights
from ..components.neurons import NeuronCards, blocks_digest, card_fields
from ..results import Provenance
from .config import SAEError
from .dictionary import SparseCoder
from ..checks import indices


@dataclass
class FeatureCards(NeuronCards):
    """Cards (as ``NeuronCards``) for features of a dictionary at ``site``; ``neurons`` holds the
    feature indices."""

    site: str
    arch: str
    title: ClassVar[str] = "Feature dashboards"

    def name(self, i: int) -> str:
        return names.feature(self.neurons[i]).label

    @property
    def units(self) -> str:
        return f"features of the {self.arch} dictionary at {self.site}"


def parse_features(spec: str, width: int) -> list[int]:
    """``"0-99"``, ``"3,17,40-42"`` → feature indices, each checked against the width."""
    try:
        return indices(spec, "feature", width)
    except ValueError as err:
        raise SAEError(f"{err} (this dictionary has {width} features)") from None


def logit_effect(sae: SparseCoder, model: Model, features: Sequence[int]) -> torch.Tensor:
    """[features, vocab]: what one unit of each feature adds to the logits, directly."""
    site = parse(sae.cfg.target_site or sae.cfg.site)
    w = (sae.W_dec.detach().float()[list(features)] / sae.scale_out.float())
    _, W_U = embedding_weights(model)
    if w.shape[1] == W_U.shape[0]:
        return w @ W_U
    if site.layer is not None and w.shape[1] == model.cfg.d_mlp:
        return w @ mlp_out_weights(model, site.layer) @ W_U
    if site.kind == "attn.z":  # through W_O: one head's [d_head, d_model] or all heads' [head·d_head, d_model]
        w_o = model.out_proj(site.layer)[0].detach().float()
        w_o = w_o[sae.cfg.head] if sae.cfg.head is not None else w_o.reshape(-1, w_o.shape[-1])
        if w.shape[1] == w_o.shape[0]:
            return w @ w_o @ W_U
    raise SAEError(f"cannot read the logit effect of {site.name} features (d={w.shape[1]})")


def encode_features(sae: SparseCoder, x: torch.Tensor, features: Sequence[int]) -> torch.Tensor:
    """[b, pos, features] (float, CPU): the features' activations on the site's values ``x``."""
    return sae.encode(sae.site_rows(x).to(sae.W_enc.device).float())[..., list(features)].float().cpu()


def feature_reader(sae: SparseCoder, model: Model, features: Sequence[int]
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """``read(ids [b, pos]) -> [b, pos, features]`` (float, CPU): the features' activations on those tokens,
    and the key of what they depend on (model, dictionary, features) for sweep records ("" outside
    ``distributed.records``)."""
    c = sae.cfg
    if c.site is None:
        raise SAEError("this dictionary has no site in its config; give it one to read its features from a model")
    features = list(features)
    bad = [f for f in features if not 0 <= f < c.width]
    if bad or not features:
        raise SAEError(f"features {bad or features} out of range: this dictionary has features 0..{c.width - 1}")

    @torch.no_grad()
    def read(ids: torch.Tensor) -> torch.Tensor:
        return encode_features(sae, model.forward_until(ids, c.site), features)  # the later layers are not run

    if not distributed.recording():  # the key names the weights: hashed only where records are kept
        return read, ""
    from ..models.fingerprint import fingerprint_of

    return read, f"{model.fingerprint} {fingerprint_of(sae, {})} {features}"


@torch.no_grad()
def feature_cards(sae: SparseCoder, model: Model, features: Sequence[int], *, blocks: torch.Tensor | None = None,
                  n_blocks: int = 64, length: int = 64, k: int = 8, window: int = 10, batch_size: int = 16,
                  progress: bool = True) -> FeatureCards:
    """Dashboards for ``features`` of ``sae`` over ``blocks`` [n, length] (default: corpus blocks)."""
    c = sae.cfg
    features = list(features)
    read, units_key = feature_reader(sae, model, features)
    if blocks is None:
        from ..data import token_blocks

        blocks = token_blocks(model.tokenizer, n_blocks, length)

    def encode(items: range) -> torch.Tensor:  # [k, length, features]: the features' activations on those blocks
        f = read(blocks[items.start:items.stop])
        f[:, 0] = 0.0
        return f

    key = f"feature cards {units_key} {blocks_digest(blocks)}" if distributed.recording() else ""
    acts = distributed.sweep(len(blocks), encode, key=key, per=batch_size, desc="features", progress=progress)
    fields = card_fields(model, acts, blocks, logit_effect(sae, model, features), k=k, window=window)
    layer = parse(c.site).layer
    return FeatureCards(provenance=Provenance.of(model, dataset="shakespeare blocks", site=c.site, arch=c.arch,
                                                 width=c.width, features=features, n_blocks=len(blocks),
                                                 length=int(blocks.shape[1])),
                        layer=-1 if layer is None else layer, neurons=features, site=c.site, arch=c.arch, **fields)
