"""Neurons of an MLP layer: what fires them, what they write, how many things they mean, and which
ones a behaviour cannot do without.

``neuron_cards(model, layer, neurons)`` runs blocks of the embedded corpus once, caching
``blocks.{layer}.mlp.post``, and for each neuron keeps:

- the top activating contexts (``window`` tokens up to the peak, every token's activation kept for
  highlighting) and examples from activation quantiles (what weaker firing looks like);
- its activation histogram and density (fraction of tokens where it is > 0);
- its direct logit effect: W_out[n] · W_U, the tokens one unit of it promotes and suppresses (the
  final norm's scale left out, as in Neuroscope);
- polysemanticity: the top-activating positions (each as its token's and the previous token's
  embedding, concatenated and normalised) clustered by average linkage at cosine distance 0.6; the
  effective number of clusters (exp entropy of their sizes), and the effective number of distinct
  tokens (exp entropy of the peak tokens).

``gating_neurons(model, task, layer)`` zero-ablates every neuron of the layer, many neurons per
forward (one row per neuron × prompt), and reports each one's effect on the task metric and the
fraction of prompts whose behaviour it switches off (metric from > 0 to ≤ 0). ``candidates=N``
first ranks every neuron by the first-order estimate of its ablation effect, −Σ a·∂M/∂a (one
backward), and ablates only the N largest |estimates| exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from tqdm.auto import tqdm
from typing_extensions import TypedDict

from .. import distributed, names
from ..models.interventions import Replace
from ..models.model import Model
from ..models.weights import embedding_weights, mlp_out_weights
from ..results import Provenance, Result
from ..models.sites import block_site


class Example(TypedDict):
    """One context of a card: its tokens, the unit's activation on each, and the peak's index."""

    tokens: list[str]
    acts: list[float]
    peak: int


class QuantileExample(Example):
    """A context sampled from one activation quantile (``quantile``: its lower edge)."""

    quantile: float


class CardExplanation(TypedDict):
    """A unit's explanation as its card shows it (``mechscope.explain``): the text, who wrote it, and per
    scorer its headline number — balanced accuracy (detection, fuzz), correlation (simulation)."""

    explanation: str
    explainer: str
    scores: dict[str, float | None]


SCORE_ORDER = ("detection", "fuzz", "simulation")  # the score a card is sorted by: the first one it has


@dataclass
class NeuronCards(Result):
    """Cards for neurons of one layer (see the module docstring). Per neuron: ``top`` and
    ``quantile_examples`` are lists of {"tokens", "acts", "peak"}; ``hist`` [neurons, bins] over
    ``edges`` [bins + 1]."""

    layer: int
    neurons: list[int]
    top: list[list[Example]]
    quantile_examples: list[list[QuantileExample]]
    edges: torch.Tensor
    hist: torch.Tensor
    density: list[float]
    max_act: list[float]
    promoted: list[list[tuple[str, float]]]  # per neuron: [[token, logit effect], ...]
    suppressed: list[list[tuple[str, float]]]
    clusters: list[float]
    effective_tokens: list[float]
    n_tokens: int
    explanations: dict[str, CardExplanation] = field(default_factory=dict, kw_only=True)  # by unit index (as text)
    title: ClassVar[str] = "Neuron cards"

    def explained(self, i: int) -> CardExplanation | None:
        """The i-th unit's explanation (None where it has none)."""
        return self.explanations.get(str(self.neurons[i]))

    def score(self, i: int) -> float | None:
        """The i-th unit's explanation score: its first of detection, fuzz, simulation (None: unexplained or
        unscored)."""
        e = self.explained(i)
        return next((e["scores"][s] for s in SCORE_ORDER if e and e["scores"].get(s) is not None), None)

    def with_explanations(self, entries: Mapping[int | str, CardExplanation]) -> "NeuronCards":
        """The same cards with ``entries`` (unit → explanation; ``explain.sidecar.card_explanations`` makes
        them) added for the units they hold, replacing older ones."""
        import dataclasses

        mine = {str(n) for n in self.neurons}
        return dataclasses.replace(self, explanations={**self.explanations,
                                                       **{str(k): v for k, v in entries.items() if str(k) in mine}})

    def label(self, i: int) -> str:
        """A short automatic label: the commonest peak tokens and the top promoted token."""
        peaks = [ex["tokens"][ex["peak"]] for ex in self.top[i]]
        common = sorted(dict.fromkeys(peaks), key=lambda t: -peaks.count(t))[:3]  # ties: the stronger first (a
        # set's order changed with PYTHONHASHSEED, so one card read differently in two processes)
        return f"fires on {', '.join(repr(t) for t in common)}; promotes {self.promoted[i][0][0]!r}"

    def name(self, i: int) -> str:
        """The i-th unit's name (``L3 N17``)."""
        return names.neuron(self.layer, self.neurons[i]).label

    def summary(self) -> str:
        rows = [f"  {self.name(i)}: max {self.max_act[i]:.2f}, density {self.density[i]:.1%}, "
                f"{self.clusters[i]:.1f} context clusters, {self.effective_tokens[i]:.1f} effective tokens — {self.label(i)}"
                + (f" — “{e['explanation']}”" if (e := self.explained(i)) else "")
                for i, n in enumerate(self.neurons)]
        return f"{len(self.neurons)} {self.units} over {self.n_tokens} tokens:\n" + "\n".join(rows)

    @property
    def units(self) -> str:
        return f"neurons of layer {self.layer}"

    def subset(self, rows: Sequence[int]) -> "NeuronCards":
        """The same cards for the units at positions ``rows`` only (same type, same provenance)."""
        import dataclasses

        rows = list(rows)
        per_unit = {f.name: [getattr(self, f.name)[i] for i in rows] for f in dataclasses.fields(self)
                    if f.name in ("neurons", "top", "quantile_examples", "density", "max_act", "promoted", "suppressed",
                                  "clusters", "effective_tokens")}
        return dataclasses.replace(self, **per_unit, hist=self.hist[rows])

    def matches(self, i: int, text: str) -> bool:
        """Whether unit ``i``'s label, promoted tokens, top contexts or explanation contain ``text`` (any case)."""
        text = text.lower()
        e = self.explained(i)
        hay = [self.label(i), self.name(i), *(t for t, _ in self.promoted[i]), *(t for ex in self.top[i] for t in ex["tokens"]),
               *([e["explanation"]] if e else [])]
        return any(text in h.lower() for h in hay)

    def to_neuronpedia(self, model_id: str, source_set: str, *, layer: int | None = None) -> dict[str, Any]:
        """The cards as a Neuronpedia dashboard batch — the JSON sae-dashboard's ``NeuronpediaConverter``
        writes for upload: {model_id, layer, sae_set, sae_id_suffix, features: [...]}, per feature its
        index, promoted / suppressed tokens (``pos_str``/``pos_values``, ``neg_str``/``neg_values``), density
        (``frac_nonzero``), the histogram of its non-zero activations (``freq_hist_data_*``) and its
        ``activations``: top contexts in one bin (bin_min −1, bin_max the top activation, bin_contains −1,
        as sae-dashboard writes "TOP ACTIVATIONS"), then each quantile example as a bin of its own
        (bin_min = bin_max = its activation, bin_contains = the share of tokens above the quantile).
        Values are rounded to 3 decimals, as sae-dashboard rounds them. Tables mechscope does not
        compute (neuron alignment, correlated units, logit histogram) are empty lists."""
        r3 = lambda xs: [round(float(x), 3) for x in xs]  # noqa: E731
        centres = (self.edges[1:] + self.edges[:-1]) / 2
        params = self.provenance.params if self.provenance is not None else {}
        features = []
        for i, unit in enumerate(self.neurons):
            nonzero = centres > 0  # sae-dashboard's histogram leaves out the zeros
            acts = [{"bin_min": -1, "bin_max": round(self.max_act[i], 3), "bin_contains": -1, "tokens": ex["tokens"],
                     "values": r3(ex["acts"]), "qualifying_token_index": ex["peak"]} for ex in self.top[i]]
            acts += [{"bin_min": round(ex["acts"][ex["peak"]], 3), "bin_max": round(ex["acts"][ex["peak"]], 3),
                      "bin_contains": round(1 - ex["quantile"], 3), "tokens": ex["tokens"], "values": r3(ex["acts"]),
                      "qualifying_token_index": ex["peak"]} for ex in self.quantile_examples[i]]
            features.append({
                "feature_index": int(unit), "neuron_alignment_indices": [], "neuron_alignment_values": [],
                "neuron_alignment_l1": [], "correlated_neurons_indices": [], "correlated_neurons_l1": [],
                "correlated_neurons_pearson": [], "correlated_features_indices": [], "correlated_features_l1": [],
                "correlated_features_pearson": [],
                "neg_str": [t for t, _ in self.suppressed[i]], "neg_values": r3(v for _, v in self.suppressed[i]),
                "pos_str": [t for t, _ in self.promoted[i]], "pos_values": r3(v for _, v in self.promoted[i]),
                "frac_nonzero": float(self.density[i]),
                "freq_hist_data_bar_values": r3(centres[nonzero]), "freq_hist_data_bar_heights": r3(self.hist[i][nonzero]),
                "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
                "n_prompts_total": int(params.get("n_blocks", 0)), "n_tokens_in_prompt": int(params.get("length", 0)),
                "dataset": (self.provenance.dataset or "") if self.provenance is not None else "",
                "decoder_weights_dist": [], "activations": acts, "vector": []})
        return {"model_id": model_id, "layer": self.layer if layer is None else layer, "sae_set": source_set,
                "sae_id_suffix": None, "features": features}

    def evidence(self) -> dict:
        return {"layer": self.layer, "neurons": self.neurons, "clusters": self.clusters,
                "density": [round(d, 5) for d in self.density]}

    def figure(self):
        import matplotlib.pyplot as plt

        k = len(self.neurons)
        cols = min(k, 4)
        rows = (k + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
        centres = ((self.edges[1:] + self.edges[:-1]) / 2).numpy()
        for i, ax in enumerate(axes.flat):
            if i >= k:
                ax.axis("off")
                continue
            ax.bar(centres, self.hist[i].numpy(), width=float(self.edges[1] - self.edges[0]), color="C0")
            ax.set_yscale("log")
            ax.set_title(self.name(i), fontsize=8)
            ax.tick_params(labelsize=6)
        fig.supxlabel("activation", fontsize=8)
        fig.tight_layout()
        return fig

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        return self._render("results/neurons.html", png=png, draw=draw)


def _clusters(features: torch.Tensor, distance: float = 0.6) -> float:
    """Effective number of clusters, exp(entropy of the cluster sizes), of the rows clustered by
    average linkage cut at cosine distance ``distance`` (1: one kind of context; k equal clusters: k)."""
    if features.shape[0] < 2:
        return float(features.shape[0])
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(features.double().numpy(), method="average", metric="cosine"), distance,
                      criterion="distance")
    counts = torch.bincount(torch.as_tensor(labels)).double()
    p = counts[counts > 0] / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def blocks_digest(blocks: torch.Tensor) -> str:
    """What a card sweep's progress records are keyed by, besides the model and the units."""
    from ..models.fingerprint import fingerprint_of

    return fingerprint_of({"blocks": blocks}, {})


def neuron_reader(model: Model, layer: int, neurons: Sequence[int]
                  ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """``read(ids [b, pos]) -> [b, pos, neurons]`` (float): the neurons' ``mlp.post`` activations on those
    tokens, and the key of what they depend on (model, site, neurons) for sweep records."""
    d_mlp = model.cfg.d_mlp
    neurons = list(neurons)
    bad = [n for n in neurons if not 0 <= n < d_mlp]
    if bad or not neurons:
        raise ValueError(f"neurons {bad or neurons} out of range: layer {layer} has neurons 0..{d_mlp - 1}")
    site = block_site(layer, "mlp.post")

    @torch.no_grad()
    def read(ids: torch.Tensor) -> torch.Tensor:
        return model.forward_until(ids, site)[..., neurons].float().cpu()  # the later layers are not run

    return read, f"{model.fingerprint} {site} {neurons}"


def neuron_cards(model: Model, layer: int, neurons: Sequence[int], *, blocks: torch.Tensor | None = None,
                 n_blocks: int = 64, length: int = 64, k: int = 8, window: int = 10, bins: int = 40,
                 cluster_top: int = 32, batch_size: int = 16, progress: bool = True) -> NeuronCards:
    """Cards for ``neurons`` of MLP ``layer`` over ``blocks`` [n, length] of token ids (default:
    ``n_blocks`` blocks of the embedded Shakespeare corpus)."""
    neurons = list(neurons)
    read_ids, units_key = neuron_reader(model, layer, neurons)
    if blocks is None:
        from ..data import token_blocks

        blocks = token_blocks(model.tokenizer, n_blocks, length)

    def read(items: range) -> torch.Tensor:  # [k, length, neurons]
        return read_ids(blocks[items.start:items.stop])

    key = f"neuron cards {units_key} {blocks_digest(blocks)}" if distributed.recording() else ""
    acts = distributed.sweep(len(blocks), read, key=key, per=batch_size, desc=f"neurons L{layer}", progress=progress)
    _, W_U = embedding_weights(model)
    fields = card_fields(model, acts, blocks, mlp_out_weights(model, layer)[neurons] @ W_U, k=k,
                         window=window, bins=bins, cluster_top=cluster_top)
    return NeuronCards(provenance=Provenance.of(model, dataset="shakespeare blocks", layer=layer, neurons=neurons,
                                                n_blocks=len(blocks), length=int(blocks.shape[1])),
                       layer=layer, neurons=neurons, **fields)


def card_fields(model: Model, A: torch.Tensor, blocks: torch.Tensor, effect: torch.Tensor, *, k: int = 8,
                window: int = 10, bins: int = 40, cluster_top: int = 32) -> dict:
    """The per-unit contents of cards from activations A [blocks, pos, units] over ``blocks``
    [blocks, pos] and each unit's logit effect [units, vocab] (see the module docstring)."""
    flat = A.reshape(-1, A.shape[-1])
    lo, hi = float(flat.min()), float(flat.max())
    edges = torch.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    hist = torch.stack([torch.histc(flat[:, i], bins, edges[0].item(), edges[-1].item()) for i in range(flat.shape[1])])
    tok = model.tokenizer
    E, _ = embedding_weights(model)

    def example(b: int, p: int, i: int) -> dict:
        s = max(0, p - window + 1)
        ids = blocks[b, s:p + 1].tolist()
        return {"tokens": [tok.decode([t]) for t in ids], "acts": A[b, s:p + 1, i].tolist(), "peak": p - s}

    top, quantile_examples, density, max_act, promoted, suppressed, clusters, eff = ([] for _ in range(8))
    n_pos = A.shape[1]
    for i in range(flat.shape[1]):
        col = flat[:, i]
        order = col.argsort(descending=True)
        top.append([example(int(j) // n_pos, int(j) % n_pos, i) for j in order[:k]])
        qs = []
        for q in (0.5, 0.9, 0.99):
            j = int(order[min(len(order) - 1, int((1 - q) * len(order)))])
            qs.append({**example(j // n_pos, j % n_pos, i), "quantile": q})
        quantile_examples.append(qs)
        density.append(float((col > 0).double().mean()))
        max_act.append(float(col.max()))
        vals, ids = effect[i].topk(8)
        promoted.append([[tok.decode([int(t)]), float(v)] for v, t in zip(vals, ids)])
        vals, ids = (-effect[i]).topk(8)
        suppressed.append([[tok.decode([int(t)]), -float(v)] for v, t in zip(vals, ids)])
        peaks = order[:cluster_top]
        b_idx, p_idx = peaks // n_pos, peaks % n_pos
        cur = blocks[b_idx, p_idx]
        prev = blocks[b_idx, (p_idx - 1).clamp(min=0)]
        feats = torch.cat([E[cur], E[prev]], 1)
        clusters.append(_clusters(feats / feats.norm(dim=1, keepdim=True)))
        _, counts = torch.unique(cur, return_counts=True)
        p = counts.double() / counts.sum()
        eff.append(float(torch.exp(-(p * p.log()).sum())))
    return dict(top=top, quantile_examples=quantile_examples, edges=edges, hist=hist, density=density,
                max_act=max_act, promoted=promoted, suppressed=suppressed, clusters=clusters, effective_tokens=eff,
                n_tokens=int(flat.shape[0]))


@dataclass
class GatingNeurons(Result):
    """Zero-ablating each neuron of a layer on a task: ``effect`` [d_mlp] (mean metric change) and
    ``switched`` [d_mlp] (fraction of prompts whose metric goes from > 0 to ≤ 0)."""

    task: str
    layer: int
    clean_metric: float
    effect: torch.Tensor
    switched: torch.Tensor
    title: ClassVar[str] = "Gating neurons"

    def gating(self, fraction: float = 0.5) -> list[int]:
        """Neurons whose ablation switches the behaviour off on at least ``fraction`` of prompts."""
        return [int(n) for n in (self.switched >= fraction).nonzero().flatten()]

    def summary(self) -> str:
        order = self.effect.nan_to_num(float("inf")).argsort()[:8].tolist()
        rows = ", ".join(f"N{n} {float(self.effect[n]):+.3f} (off on {float(self.switched[n]):.0%})" for n in order)
        gates = self.gating()
        tested = int((~self.effect.isnan()).sum())
        return (f"zero-ablating {tested} of {len(self.effect)} neurons of layer {self.layer} on {self.task} (clean metric "
                f"{self.clean_metric:.3f}): largest drops {rows}; gating neurons (switch ≥ 50 % off): "
                f"{gates if gates else 'none'}")

    def evidence(self) -> dict:
        n = int(self.effect.nan_to_num(float("inf")).argmin())
        return {"layer": self.layer, "top_neuron": n, "effect": float(self.effect[n]), "gating": self.gating()}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.plot(self.effect.numpy(), lw=0.6)
        ax.set(xlabel=f"neuron (layer {self.layer})", ylabel="metric change when zeroed", title=self.task)
        fig.tight_layout()
        return fig


def gating_neurons(model: Model, task, layer: int, *, neurons: Sequence[int] | None = None,
                   candidates: int | None = None, batch_size: int = 256, progress: bool = True) -> GatingNeurons:
    """Zero-ablate each neuron (default: all of the layer; ``candidates``: the N with the largest
    estimated effect), one row per neuron × prompt. Neurons not ablated get effect NaN."""
    d_mlp = model.cfg.d_mlp
    neurons = list(range(d_mlp)) if neurons is None else list(neurons)
    pairs = len(task)
    clean = task.run_metric(model, "clean")
    site = block_site(layer, "mlp.post")
    if candidates is not None:
        run = model.run(task.clean, cache=site, grads=site, metric=lambda r: task.score(task.read(r.logits)).sum())
        a = run.cache[site].float()
        estimate = -(a * run.grads[site].float() * run.mask[..., None].to(a.device)).sum((0, 1)).cpu()
        order = estimate[neurons].abs().argsort(descending=True)[:candidates]
        neurons = [neurons[i] for i in order.tolist()]
    effects, switched = [], []
    per = max(1, batch_size // pairs)
    for start in tqdm(range(0, len(neurons), per), desc=f"ablating L{layer} neurons", disable=not progress, leave=False):
        chunk = neurons[start:start + per]
        which = torch.tensor(chunk).repeat_interleave(pairs)  # row r zeroes neuron which[r]

        def zero(x: torch.Tensor, which=which) -> torch.Tensor:
            x = x.clone()
            x[torch.arange(x.shape[0]), :, which.to(x.device)] = 0.0
            return x

        with torch.no_grad():
            run = model.run([c for _ in chunk for c in task.clean], interventions=[Replace(site, zero)])
        metric = task.score(task.read(run.logits)).view(len(chunk), pairs).cpu()
        effects.append((metric - clean.cpu()).mean(1))
        on = clean.cpu() > 0
        switched.append(((metric <= 0) & on).double().sum(1) / on.sum().clamp(min=1))
    effect = torch.full((d_mlp,), float("nan"))
    off = torch.full((d_mlp,), float("nan"))
    effect[neurons], off[neurons] = torch.cat(effects).float(), torch.cat(switched).float()
    return GatingNeurons(provenance=Provenance.of(model, prompts=task.texts or task.clean, task=task.name, layer=layer,
                                                  candidates=candidates),
                         task=task.name, layer=layer, clean_metric=float(clean.mean()), effect=effect, switched=off)
