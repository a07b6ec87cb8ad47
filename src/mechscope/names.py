"""Component names: the one place that formats and parses them.

A component has two spellings, both accepted everywhere a name is read:

| component | in results and summaries | as a graph node (circuits, attribution graphs) |
|---|---|---|
| head h of layer l | ``L3H2`` | ``a3.h2`` (its inputs ``a3.h2.q`` / ``.k`` / ``.v``) |
| key/value head g (grouped-query attention) | ``L3KV1`` | ``a3.kv1`` (``a3.kv1.k`` / ``.v``) |
| MLP of layer l | ``MLP3`` | ``m3`` |
| expert e of layer l's MLP (mixtures of experts) | ``MLP3E5`` | ``m3.e5`` |
| layer l's gated shared expert (Qwen2-MoE) | ``MLP3 shared`` | ``m3.shared`` |
| neuron n of layer l | ``L3 N17`` | ``m3.n17`` |
| attention / MLP layer as a whole (layer ablations) | ``attn3`` / ``mlp3`` | |
| feature f of a dictionary (at layer l, position p) | ``F17`` (``L3 F17``, ``L3 F17 @5``) | ``3_17_5`` (circuit-tracer's id) |
| embeddings, logits | ``embed``, ``logits`` | ``embed``, ``logits`` |

``parse`` reads either spelling into a ``Component``; ``Component.label`` and ``Component.node``
write them, and ``Component.site`` gives the site (with its head or neuron selection) that holds the
component's output. A name that parses as nothing gets an error showing the spellings.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from .models.sites import block_site, expert_site

Kind = Literal["embed", "logits", "head", "kv", "mlp", "expert", "shared_expert", "neuron", "attn_layer", "mlp_layer",
               "feature"]


class ComponentNameError(ValueError):
    """A component name in no known spelling."""


@dataclass(frozen=True)
class Component:
    """One component: ``kind``, its ``layer`` (None for embed/logits), ``index`` (head, kv head,
    expert, neuron or dictionary feature), for a graph node's input ``input`` ("q", "k", "v"), and
    for a feature in an attribution graph its token ``position``."""

    kind: Kind
    layer: int | None = None
    index: int | None = None
    input: str | None = None
    position: int | None = None

    @property
    def label(self) -> str:
        """The spelling in results and summaries (``L3H2``, ``MLP3``, ``L3 N17``, ``L3 F17 @5``)."""
        if self.kind == "feature":
            return " ".join([*([f"L{self.layer}"] if self.layer is not None else []), f"F{self.index}",
                             *([f"@{self.position}"] if self.position is not None else [])])
        return _LABEL[self.kind].format(l=self.layer, i=self.index) + (f".{self.input}" if self.input else "")

    @property
    def node(self) -> str:
        """The graph-node spelling (``a3.h2``, ``a3.h2.q``, ``m3``, ``m3.e5``; a feature: ``3_17_5``)."""
        if self.kind == "feature":
            if self.layer is None or self.position is None:
                raise ComponentNameError(f"{self.label} is a graph node only with its layer and position")
            return f"{self.layer}_{self.index}_{self.position}"
        return _NODE[self.kind].format(l=self.layer, i=self.index) + (f".{self.input}" if self.input else "")

    @property
    def owner(self) -> "Component":
        """The component whose input this is (``a3.h2.q`` → ``a3.h2``); itself when it is no input."""
        return Component(self.kind, self.layer, self.index) if self.input else self

    @property
    def site(self) -> tuple[str, dict[str, list[int]]]:
        """(site, selection) holding the component's output: a head is ``blocks.l.attn.z`` with
        ``heads=[h]``, a neuron ``blocks.l.mlp.post`` with ``neurons=[n]``, an MLP ``blocks.l.mlp.out``."""
        l, i = self.layer, self.index
        if self.kind == "head":
            return block_site(l, f"attn.{self.input or 'z'}"), {"heads": [i]}
        if self.kind == "kv":
            return block_site(l, f"attn.{self.input or 'k'}"), {"heads": [i]}
        if self.kind in ("mlp", "mlp_layer"):
            return block_site(l, "mlp.out"), {}
        if self.kind == "expert":
            return expert_site(l, i), {}
        if self.kind == "shared_expert":
            return block_site(l, "mlp.shared_expert.out"), {}
        if self.kind == "attn_layer":
            return block_site(l, "attn.out"), {}
        if self.kind == "neuron":
            return block_site(l, "mlp.post"), {"neurons": [i]}
        if self.kind == "embed":
            return "embed", {}
        if self.kind == "logits":
            return "logits", {}
        raise ComponentNameError(f"{self.label} has no site of its own")


_LABEL = {"embed": "embed", "logits": "logits", "head": "L{l}H{i}", "kv": "L{l}KV{i}", "mlp": "MLP{l}",
          "expert": "MLP{l}E{i}", "shared_expert": "MLP{l} shared", "neuron": "L{l} N{i}", "attn_layer": "attn{l}", "mlp_layer": "mlp{l}"}
_NODE = {"embed": "embed", "logits": "logits", "head": "a{l}.h{i}", "kv": "a{l}.kv{i}", "mlp": "m{l}",
         "expert": "m{l}.e{i}", "shared_expert": "m{l}.shared", "neuron": "m{l}.n{i}", "attn_layer": "a{l}", "mlp_layer": "m{l}"}


def head(layer: int, h: int, input: str | None = None) -> Component:
    return Component("head", layer, h, input)


def kv_head(layer: int, g: int, input: str | None = None) -> Component:
    return Component("kv", layer, g, input)


def mlp(layer: int) -> Component:
    return Component("mlp", layer)


def expert(layer: int, e: int) -> Component:
    return Component("expert", layer, e)


def shared_expert(layer: int) -> Component:
    return Component("shared_expert", layer)


def neuron(layer: int, n: int) -> Component:
    return Component("neuron", layer, n)


def feature(index: int, layer: int | None = None, position: int | None = None) -> Component:
    """Feature ``index`` of a dictionary; in an attribution graph, of layer ``layer``'s transcoder at
    token ``position``."""
    return Component("feature", layer, index, position=position)


def layer_part(part: str, layer: int) -> Component:
    """A whole attention or MLP layer (``part``: "attn" or "mlp")."""
    return Component("attn_layer" if part == "attn" else "mlp_layer", layer)


EMBED, LOGITS = Component("embed"), Component("logits")

_FORMS = [  # (pattern, kind); groups: layer, index, input
    (r"L(\d+)H(\d+)(?:\.([qkv]))?", "head"), (r"a(\d+)\.h(\d+)(?:\.([qkv]))?", "head"),
    (r"L(\d+)KV(\d+)(?:\.([kv]))?", "kv"), (r"a(\d+)\.kv(\d+)(?:\.([kv]))?", "kv"),
    (r"MLP(\d+)E(\d+)()", "expert"), (r"m(\d+)\.e(\d+)()", "expert"),
    (r"MLP(\d+) shared()()", "shared_expert"), (r"m(\d+)\.shared()()", "shared_expert"),
    (r"L(\d+) N(\d+)()", "neuron"), (r"m(\d+)\.n(\d+)()", "neuron"),
    (r"MLP(\d+)()()", "mlp"), (r"m(\d+)()()", "mlp"),
    (r"attn(\d+)()()", "attn_layer"), (r"mlp(\d+)()()", "mlp_layer"),
]
_COMPILED = [(re.compile(p), k) for p, k in _FORMS]
_FEATURE = re.compile(r"(?:L(\d+) )?F(\d+)(?: @(\d+))?")
SPELLINGS = ("heads L3H2 or a3.h2 (inputs a3.h2.q/.k/.v), key/value heads L3KV1 or a3.kv1, MLPs MLP3 or m3, "
             "experts MLP3E5 or m3.e5 (a shared one: 'MLP3 shared' or m3.shared), neurons 'L3 N17' or m3.n17, "
             "features F17, 'L3 F17' or 'L3 F17 @5', layers attn3 / mlp3, embed, logits")


@functools.lru_cache(maxsize=1 << 16)
def parse(name: str) -> Component:
    """The component ``name`` spells (either spelling; see the module docstring)."""
    if not isinstance(name, str):
        raise ComponentNameError(f"component name {name!r} is not a string; write {SPELLINGS}")
    if name in ("embed", "logits"):
        return Component(name)
    for pattern, kind in _COMPILED:
        m = pattern.fullmatch(name)
        if m:
            layer, index, inp = m.groups()
            return Component(kind, int(layer), int(index) if index else None, inp or None)
    m = _FEATURE.fullmatch(name)
    if m and (m.group(3) is None or m.group(1) is not None):
        layer, index, position = m.groups()
        return feature(int(index), int(layer) if layer else None, int(position) if position else None)
    raise ComponentNameError(f"unknown component {name!r}; write {SPELLINGS}")


def rank(name: str) -> float:
    """Depth order of a graph node: embed < a{l}.* < m{l} < a{l+1}.* < … < logits (unknown names last
    but one)."""
    try:
        c = parse(name)
    except ComponentNameError:
        return 1e8
    if c.kind == "embed":
        return -1.0
    if c.kind == "logits":
        return 1e9
    return (c.layer or 0) + (0.5 if c.kind in ("mlp", "expert", "shared_expert", "neuron", "mlp_layer", "feature") else 0.0)
