"""The contexts a language model reads to explain a unit (a dictionary's feature or an MLP neuron) and
to score an explanation, chosen as EleutherAI's delphi chooses them.

``unit_examples(units, model, ...)`` runs blocks of the embedded corpora once (a sweep: divided among
torchrun ranks, resumable inside ``distributed.records``), reads every chosen unit's activation at
every token (the first token of each block, the attention sink, counts as 0), and cuts the blocks into
``ctx_len``-token windows (delphi's ``example_ctx_len``: windows never cross a block). Per unit:

- **activating windows**: those where the unit's peak is > 0, sorted by that peak, strongest first,
  and split into ``n_quantiles`` equal slices (slice 0 the strongest; delphi's ``split_quantiles``);
- **test**: ``n_test // n_quantiles`` windows drawn at random from each slice (what scorers show);
- **train**: what the explainer reads — ``"quantiles"`` (delphi's default: the same draw from each
  slice), ``"top"`` (the strongest) or ``"mix"`` (a ``ratio_top`` share of the strongest, the rest by
  slice). Unlike delphi (whose train and test draws overlap), train never repeats a test window;
- **random negatives**: ``n_negatives`` windows where the unit never fires, drawn without replacement;
- **hard negatives**: windows where it never fires that contain the tokens it fires on most (look-alike
  contexts, for ``negatives="hard"``), the windows holding more of them first.

A unit *fires* where its activation is above 0 (a dictionary's features) or above a tenth of its maximum
(an MLP neuron: a gated MLP's neurons are above 0 at half of all tokens, so "above 0" would leave no
window where one is silent). A unit that fires in fewer than ``min_windows`` windows is kept with the
reason it cannot be explained.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from typing_extensions import TypedDict

from .. import distributed
from ..models.model import Model
from ..models.sites import block_site

TrainType = Literal["quantiles", "top", "mix"]
RANDOM_NEGATIVE = -1  # a context's ``quantile`` when it is a random non-activating window (delphi's distance −1)
HARD_NEGATIVE = -2    # ... a look-alike non-activating window


class Context(TypedDict):
    """One window: its token ids, each token as the tokenizer decodes it alone (delphi's ``str_tokens``),
    the unit's activation on each, and its activation slice (``quantile`` ≥ 0; negatives −1 random, −2 hard)."""

    ids: list[int]
    tokens: list[str]
    acts: list[float]
    quantile: int


class UnitExamples(TypedDict):
    """What one unit's explanation and scores are built from (see the module docstring). ``skipped``: why
    the unit cannot be explained ("" when it can)."""

    unit: int
    max_act: float
    line: float             # it fires where its activation is above this
    n_windows: int          # windows where it fires
    density: float          # share of tokens where it is > 0
    train: list[Context]
    test: list[Context]
    random_negatives: list[Context]
    hard_negatives: list[Context]
    skipped: str


@dataclass(frozen=True)
class ExampleConfig:
    """How examples are chosen; the defaults are delphi's (``SamplerConfig`` and ``ConstructorConfig``)."""

    ctx_len: int = 32
    n_quantiles: int = 10
    n_test: int = 50
    n_train: int = 40
    train_type: TrainType = "quantiles"
    ratio_top: float = 0.2
    n_negatives: int = 50
    min_windows: int = 10
    seed: int = 22

    def __post_init__(self) -> None:
        for name in ("ctx_len", "n_quantiles", "min_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be ≥ 1")
        for name in ("n_test", "n_train", "n_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be ≥ 0")
        if self.train_type not in ("quantiles", "top", "mix"):
            raise ValueError(f"train_type={self.train_type!r}; valid: 'quantiles', 'top', 'mix'")
        if not 0 <= self.ratio_top <= 1:
            raise ValueError(f"ratio_top={self.ratio_top}: must be in [0, 1]")
        for name in ("n_test",) + (("n_train",) if self.train_type == "quantiles" else ()):
            if 0 < getattr(self, name) < self.n_quantiles:
                raise ValueError(f"{name}={getattr(self, name)} draws nothing from each of {self.n_quantiles} quantiles: "
                                 f"give {name} ≥ {self.n_quantiles}, or fewer quantiles (n_quantiles)")


@dataclass(frozen=True)
class Units:
    """What is explained: ``kind`` "feature" (of a dictionary) or "neuron" (of MLP ``layer``), their indices,
    the site they are read at, and ``read(ids [b, pos]) -> [b, pos, units]``."""

    kind: str
    indices: list[int]
    site: str
    read: Callable[[torch.Tensor], torch.Tensor]
    key: str  # what the activations depend on besides the blocks (model, dictionary, units): sweep records
    fires_above: float = 0.0  # a unit fires where its activation exceeds this share of its maximum (and 0)
    coder: Any = None  # the dictionary whose features they are (None for neurons)


def dictionary_units(sae, model: Model, features: Sequence[int]) -> Units:
    """The features ``features`` of a dictionary (any ``SparseCoder`` mechscope opens), read at its site."""
    from ..sae.dashboard import feature_reader

    read, key = feature_reader(sae, model, features)
    return Units("feature", list(features), sae.cfg.site, read, key, coder=sae)


def neuron_units(model: Model, layer: int, neurons: Sequence[int]) -> Units:
    """Neurons ``neurons`` of MLP ``layer`` (``blocks.{layer}.mlp.post``)."""
    from ..components.neurons import neuron_reader

    read, key = neuron_reader(model, layer, neurons)
    return Units("neuron", list(neurons), block_site(layer, "mlp.post"), read, key, fires_above=0.1)


def activations(units: Units, blocks: torch.Tensor, *, batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """[blocks, pos, units]: every unit's activation at every token of ``blocks`` (position 0: 0)."""
    from ..components.neurons import blocks_digest

    def read(items: range) -> torch.Tensor:
        a = units.read(blocks[items.start:items.stop]).float()
        a[:, 0] = 0.0
        return a

    key = f"explain examples {units.key} {blocks_digest(blocks)}" if distributed.recording() else ""
    return distributed.sweep(len(blocks), read, key=key, per=batch_size, desc="examples", progress=progress)


def _context(ids: torch.Tensor, acts: torch.Tensor, quantile: int, decode: Callable[[int], str]) -> Context:
    ids_l = [int(t) for t in ids]
    return {"ids": ids_l, "tokens": [decode(t) for t in ids_l], "acts": [float(a) for a in acts],
            "quantile": quantile}


def _by_slice(order: list[int], n_quantiles: int, per_slice: int, rng: random.Random,
              exclude: set[int] = frozenset()) -> list[tuple[int, int]]:
    """(window, slice) pairs: ``per_slice`` windows drawn from each of ``n_quantiles`` equal slices of ``order``."""
    size = len(order) // n_quantiles
    out = []
    for q in range(n_quantiles):
        pool = [w for w in order[q * size:(q + 1) * size] if w not in exclude]
        pick = pool if len(pool) <= per_slice else rng.sample(pool, per_slice)
        out.extend((w, q) for w in pick)
    return out


def choose(acts: torch.Tensor, ids: torch.Tensor, units: Sequence[int], config: ExampleConfig,
           decode: Callable[[int], str], *, fires_above: float = 0.0) -> list[UnitExamples]:
    """Each unit's examples from its activations ``acts`` [windows, ctx_len, units] over the windows' token
    ids ``ids`` [windows, ctx_len] (see the module docstring). A unit fires where its activation is above
    max(0, ``fires_above`` × its maximum)."""
    c = config
    n_windows = ids.shape[0]
    peaks = acts.amax(1)  # [windows, units]
    out: list[UnitExamples] = []
    for u, unit in enumerate(units):
        peak = peaks[:, u]
        top = float(peak.max()) if n_windows else 0.0
        line = max(0.0, fires_above * top)
        firing = (peak > line).nonzero().flatten()
        order = [int(w) for w in firing[peak[firing].argsort(descending=True, stable=True)]]
        silent = [int(w) for w in (peak <= line).nonzero().flatten()]
        density = float((acts[..., u] > line).double().mean()) if n_windows else 0.0
        ex: UnitExamples = {"unit": int(unit), "max_act": top, "line": line,
                            "n_windows": len(order), "density": density, "train": [], "test": [],
                            "random_negatives": [], "hard_negatives": [], "skipped": ""}
        if not order:
            ex["skipped"] = f"never fires in the {n_windows * ids.shape[1]:,} tokens read"
            out.append(ex)
            continue
        if not silent:
            ex["skipped"] = f"fires in every one of the {n_windows:,} windows: no silent context to score against"
            out.append(ex)
            continue
        if len(order) < max(c.min_windows, c.n_quantiles):
            ex["skipped"] = (f"fires in {len(order)} of {n_windows:,} windows; explaining needs at least "
                             f"{max(c.min_windows, c.n_quantiles)}")
            out.append(ex)
            continue
        rng = random.Random(c.seed)
        test = _by_slice(order, c.n_quantiles, c.n_test // c.n_quantiles, rng)
        taken = {w for w, _ in test}
        if c.train_type == "top":
            train = [(w, -1) for w in order if w not in taken][:c.n_train]
        elif c.train_type == "quantiles":
            train = _by_slice(order, c.n_quantiles, c.n_train // c.n_quantiles, rng, taken)
        else:
            n_top = int(c.n_train * c.ratio_top)
            top = [w for w in order if w not in taken][:n_top]
            rest = [w for w in order if w not in taken and w not in top]
            train = [(w, -1) for w in top] + _by_slice(rest, c.n_quantiles, (c.n_train - n_top) // c.n_quantiles,
                                                        rng)
        slice_of = {w: i * c.n_quantiles // len(order) for i, w in enumerate(order)}
        ex["test"] = [_context(ids[w], acts[w, :, u], q, decode) for w, q in test]
        ex["train"] = [_context(ids[w], acts[w, :, u], slice_of[w] if q < 0 else q, decode) for w, q in train]
        picked = silent if len(silent) <= c.n_negatives else rng.sample(silent, c.n_negatives)
        ex["random_negatives"] = [_context(ids[w], acts[w, :, u], RANDOM_NEGATIVE, decode) for w in picked]
        ex["hard_negatives"] = [_context(ids[w], acts[w, :, u], HARD_NEGATIVE, decode)
                                for w in _look_alikes(acts[..., u] > line, ids, order, silent, c.n_negatives)]
        out.append(ex)
    return out


def _look_alikes(fires: torch.Tensor, ids: torch.Tensor, order: list[int], silent: list[int], n: int) -> list[int]:
    """Up to ``n`` silent windows holding the tokens the unit fires on most (``fires`` [windows, ctx_len]),
    by how many of its 10 commonest firing tokens (weighted by how often it fires on each) they contain;
    ties in window order."""
    fired = Counter(int(ids[w, p]) for w in order for p in fires[w].nonzero().flatten().tolist())
    weight = dict(fired.most_common(10))
    if not weight or n == 0:
        return []
    scored = []
    for w in silent:
        present = set(ids[w].tolist()) & weight.keys()
        if present:
            scored.append((-sum(weight[t] for t in present), w))
    return [w for _, w in sorted(scored)[:n]]


def unit_examples(units: Units, model: Model, *, config: ExampleConfig = ExampleConfig(),
                  blocks: torch.Tensor | None = None, n_blocks: int = 256, length: int = 64,
                  corpora: Sequence[str] = ("shakespeare",), batch_size: int = 16,
                  progress: bool = True) -> list[UnitExamples]:
    """Examples of every unit of ``units`` over ``blocks`` [n, length] of token ids (default: ``n_blocks``
    blocks of ``length`` tokens of the named embedded corpora; ``length`` a multiple of ``config.ctx_len``)."""
    if blocks is None:
        from ..data import corpus, token_blocks

        blocks = token_blocks(model.tokenizer, n_blocks, length, texts=corpus(list(corpora)))
    if blocks.shape[1] % config.ctx_len:
        raise ValueError(f"blocks of {blocks.shape[1]} tokens do not cut into {config.ctx_len}-token windows: "
                         f"give a length that is a multiple of ctx_len={config.ctx_len}")
    acts = activations(units, blocks, batch_size=batch_size, progress=progress)
    windows = blocks.reshape(-1, config.ctx_len)
    tok = model.tokenizer
    return choose(acts.reshape(-1, config.ctx_len, acts.shape[-1]), windows, units.indices, config,
                  lambda t: tok.decode([t]), fires_above=units.fires_above)
