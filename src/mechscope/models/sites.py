"""Canonical site names: the same for every architecture (docs/architecture.md, "The data path of one run").

A *site* is a named activation inside the model, e.g. ``blocks.3.attn.pattern``. Globs select many
(``blocks.*.resid_post``). This module only knows names and layouts; which module a site lives on
is the adapter's business (``adapters.py``).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Iterable, Literal

# Per-block sites in the order the forward pass produces them.
BLOCK_SITES: tuple[str, ...] = (
    "resid_pre",
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.scores",
    "attn.pattern",
    "attn.z",
    "attn.out",
    "resid_mid",
    "mlp.in",
    "mlp.pre",
    "mlp.post",
    "mlp.out",
    "resid_post",
)
ATTN_INTERNAL = frozenset({"attn.q", "attn.k", "attn.v", "attn.scores", "attn.pattern"})

# Layout of each site's tensor:
#   "resid":   [batch, pos, d]              positions on dim 1, no heads
#   "head":    [batch, pos, head, d_head]   positions on dim 1, heads on dim 2
#   "pattern": [batch, head, q_pos, k_pos]  positions (queries) on dim 2, heads on dim 1
#   "channel": [batch, channel, ...]         an image model's module: channels on dim 1, selected by index
Layout = Literal["resid", "head", "pattern", "channel"]
_LAYOUT: dict[str, Layout] = {
    "attn.q": "head",
    "attn.k": "head",
    "attn.v": "head",
    "attn.z": "head",
    "attn.scores": "pattern",
    "attn.pattern": "pattern",
}


class SiteError(KeyError):
    """An unknown site name; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Site:
    """One parsed site name. ``layer`` is None for ``embed``, ``final_norm`` and ``logits``.

    A *module site* (kind ``"module"``) is any submodule's output or input, named by its module
    path (``model.layers.3.mlp.down_proj.output``; an image model's ``_blocks.4`` is its output):
    ``module`` is the path, ``io`` "output" or "input" (the first positional input), ``channels``
    the channels an image site selects (``_blocks.4:17``), ``module_layout`` its tensor layout."""

    name: str
    layer: int | None
    kind: str  # "embed", "final_norm", "logits", a BLOCK_SITES entry, or "module"
    module: str | None = None
    io: Literal["output", "input"] = "output"
    channels: tuple[int, ...] | None = None
    module_layout: Layout | None = None
    expert: int | None = None  # ``blocks.L.mlp.experts.E.out``: one expert's weighted output (kind "mlp.expert")
    # (``blocks.L.mlp.router``, kind "mlp.router": a mixture of experts' router logits [batch, pos, experts];
    # ``blocks.L.mlp.shared_expert.out``, kind "mlp.shared_expert": Qwen2-MoE's gated shared expert)

    @property
    def layout(self) -> Layout:
        return self.module_layout or _LAYOUT.get(self.kind, "resid")

    @property
    def is_attn_internal(self) -> bool:
        """True for sites computed inside the attention function (need the mechscope attention)."""
        return self.kind in ATTN_INTERNAL

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: the order in which a forward pass produces the site."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind == "module":
            return (-1, 1)  # hooks on a module run in the order the forward reaches it
        if self.layer is None:
            return (1 << 30, 0 if self.kind == "final_norm" else 1)
        if self.kind in ("mlp.expert", "mlp.shared_expert"):  # inside the MoE block, where mlp.post would be
            return (self.layer, BLOCK_SITES.index("mlp.post"))
        if self.kind == "mlp.router":  # the MoE block's routing, before its experts run
            return (self.layer, BLOCK_SITES.index("mlp.pre"))
        return (self.layer, BLOCK_SITES.index(self.kind))


MOE_SITES = ("mlp.router", "mlp.shared_expert.out")  # (and ``mlp.experts.E.out``: ``expert_site``)


def block_site(layer: int, kind: str) -> str:
    """The name of block ``layer``'s site ``kind`` (``block_site(3, "attn.z")`` → ``blocks.3.attn.z``): the
    one way code outside ``models/`` spells a block site. ``kind``: a ``BLOCK_SITES`` entry or a
    mixture of experts' ``mlp.router`` / ``mlp.shared_expert.out``."""
    if kind not in BLOCK_SITES and kind not in MOE_SITES:
        raise SiteError(f"{kind!r} is no block site; valid: {', '.join(BLOCK_SITES + MOE_SITES)}")
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise SiteError(f"layer {layer!r} must be an integer ≥ 0")
    return f"blocks.{layer}.{kind}"


def expert_site(layer: int, expert: int) -> str:
    """``blocks.{layer}.mlp.experts.{expert}.out``: one expert's weighted output."""
    return f"{block_site(layer, 'mlp.router').removesuffix('router')}experts.{int(expert)}.out"


def parse(name: str) -> Site:
    """Parse a concrete site name (no globs); raises ``ValueError`` for a malformed name."""
    if name in ("embed", "final_norm", "logits"):
        return Site(name, None, name)
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in BLOCK_SITES:
        return Site(name, int(parts[1]), parts[2])
    rest = parts[2].split(".") if len(parts) == 3 else []
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and rest == ["mlp", "router"]:
        return Site(name, int(parts[1]), "mlp.router")
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and rest == ["mlp", "shared_expert", "out"]:
        return Site(name, int(parts[1]), "mlp.shared_expert")
    if (len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and len(rest) == 4
            and rest[:2] == ["mlp", "experts"] and rest[2].isdigit() and rest[3] == "out"):
        return Site(name, int(parts[1]), "mlp.expert", expert=int(rest[2]))
    raise ValueError(f"malformed site name {name!r}")


def module_site(name: str, modules: Iterable[str], layout: Layout = "resid",
                default_io: Literal["output", "input"] | None = None) -> Site | None:
    """The module site ``name`` names among ``modules`` (module paths), or None: ``path.output`` /
    ``path.input``, or — with ``default_io`` — a bare module path. A module literally called
    ``output`` (as in BERT) is its own output site."""
    modules = modules if isinstance(modules, (set, dict, frozenset)) else set(modules)
    if default_io is not None and name in modules:
        return Site(name, None, "module", module=name, io=default_io, module_layout=layout)
    path, _, io = name.rpartition(".")
    if io in ("output", "input") and path in modules:
        return Site(name, None, "module", module=path, io=io, module_layout=layout)
    return None


def all_sites(n_layers: int, exclude: Iterable[str] = ()) -> list[str]:
    """Every site name of a model with ``n_layers`` blocks, in forward order.

    ``exclude`` drops block-site kinds the architecture lacks (``resid_mid`` for parallel blocks).
    """
    skip = set(exclude)
    names = ["embed"]
    for layer in range(n_layers):
        names += [f"blocks.{layer}.{kind}" for kind in BLOCK_SITES if kind not in skip]
    return names + ["final_norm", "logits"]


def expand(patterns: str | Iterable[str], valid: list[str]) -> list[str]:
    """Resolve names and globs against ``valid``, keeping forward order and dropping repeats.

    An unknown name, or a glob that matches nothing, raises ``SiteError`` naming the closest sites.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    valid_set = set(valid)
    chosen: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"a site name must be a string, got {pattern!r}")
        if any(ch in pattern for ch in "*?["):
            hits = fnmatch.filter(valid, pattern)
        else:
            hits = [pattern] if pattern in valid_set else []
        if not hits:
            raise SiteError(unknown_site_message(pattern, valid))
        chosen.update(hits)
    return [name for name in valid if name in chosen]


def unknown_site_message(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    layers = sorted({s.split(".")[1] for s in valid if s.startswith("blocks.")}, key=int)
    span = f"blocks.0 .. blocks.{layers[-1]}" if layers else "no blocks"
    kinds = ", ".join(k for k in BLOCK_SITES if any(v.endswith("." + k) for v in valid))
    return (
        f"unknown site {name!r}.{hint} Valid sites: embed, {span} with {kinds}; final_norm, logits "
        "(globs like 'blocks.*.resid_post' select many)."
    )
