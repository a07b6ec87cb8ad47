"""Explanations on an attribution graph's nodes: the features a pruned graph keeps, explained and scored
layer by layer (one ``Explanations`` per layer), with their examples read in one pass over the corpus
for every layer at once. Each explained feature's explanation and scores go into
``graph.extra["explanations"]`` keyed ``"L_F"``: the viewer shows them on hover, and the Neuronpedia
export writes them as the node's ``clerp``."""

from __future__ import annotations

from typing import Any

import torch

from ..models.model import Model
from .examples import ExampleConfig, Units, activations, choose, dictionary_units
from .result import Explanations
from .run import explain_units


def explain_graph(graph: Any, model: Model, transcoders: Any, *, node_threshold: float = 0.8,
                  edge_threshold: float = 0.98, max_features: int | None = None,
                  config: ExampleConfig = ExampleConfig(), blocks: torch.Tensor | None = None, n_blocks: int = 256,
                  length: int = 64, progress: bool = True, **kw: Any) -> list[Explanations]:
    """Explain the features ``graph`` keeps at these thresholds (the ``max_features`` most influential; all
    by default). ``kw``: ``explain_units``'s (``explainer``, ``scorer``, ``scorers``, ``cache``, ...)."""
    from ..tracing.replacement import TranscoderStack

    kept = graph.prune(node_threshold, edge_threshold)
    order = [i for i in torch.argsort(kept.cumulative[: graph.n_features]).tolist() if kept.nodes[i]]
    chosen: dict[int, list[int]] = {}
    for i in order[:max_features] if max_features is not None else order:
        layer, _, f = graph.features[i].tolist()
        if f not in chosen.setdefault(layer, []):
            chosen[layer].append(f)
    if not chosen:
        return []
    stack = TranscoderStack(transcoders, model)
    units = {layer: dictionary_units(stack.clt.layer_coder(layer) if stack.clt is not None else stack.coders[layer],
                                     model, feats) for layer, feats in sorted(chosen.items())}
    if blocks is None:
        from ..data import token_blocks

        blocks = token_blocks(model.tokenizer, n_blocks, length)
    acts = _every_layer(units, model, blocks, progress)
    tok = model.tokenizer
    results, found = [], dict(graph.extra.get("explanations", {}))
    for layer, u in units.items():
        examples = choose(acts[layer].reshape(-1, config.ctx_len, len(u.indices)), blocks.reshape(-1, config.ctx_len),
                          u.indices, config, lambda t: tok.decode([t]))
        r = explain_units(u, model, examples=examples, config=config, progress=progress, **kw)
        results.append(r)
        for line in r.units:
            if line["explanation"] is not None:
                found[f"{layer}_{line['unit']}"] = {
                    "explanation": line["explanation"], "explainer": r.explainer,
                    "scores": {s: round(sc["metrics"]["balanced_accuracy"], 4) for s, sc in line["scores"].items()}}
                sim = line.get("simulation", {}).get("explanation")
                if sim is not None and sim["correlation"] is not None:
                    found[f"{layer}_{line['unit']}"]["scores"]["simulation"] = round(sim["correlation"], 4)
    graph.extra["explanations"] = found
    return results


def _every_layer(units: dict, model: Model, blocks: torch.Tensor, progress: bool) -> dict[int, torch.Tensor]:
    """{layer: [blocks, pos, features]}: every layer's chosen features from one forward per batch (the
    position-0 attention sink read as 0)."""
    from ..sae.dashboard import encode_features

    sites = sorted({u.site for u in units.values()})

    @torch.no_grad()
    def read(ids: torch.Tensor) -> torch.Tensor:
        cache = model.run(ids, cache=sites).cache
        return torch.cat([encode_features(units[layer].coder, cache[units[layer].site], units[layer].indices)
                          for layer in sorted(units)], -1)

    width = [len(units[layer].indices) for layer in sorted(units)]
    joint = Units("feature", list(range(sum(width))), sites[0], read, key=" ".join(u.key for u in units.values()))
    every = activations(joint, blocks, progress=progress)
    return dict(zip(sorted(units), every.split(width, -1)))
