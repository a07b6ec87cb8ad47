"""Steering: control vectors from contrastive pairs (mean difference, uncentred PCA), steered
generation and its behaviour-vs-cost sweep, directional ablation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from typing import Sequence

import torch

from ..models.interventions import Add, ProjectOut, Replace
from ..models.model import Model
from ..results import Provenance, Result
from .datasets import NEGATIVE, POSITIVE


@dataclass
class SteeredGeneration(Result):
    """Plain and steered continuations of the same prompt (``Add(site, vector, coef)``), the vector
    from one contrast pair (ActAdd). Single-word prompts make poor vectors: a sequence's first token
    has a huge residual norm (attention sink), so use short phrases ("I love you" vs "I hate you")."""

    prompt: str
    site: str
    coef: float
    contrast: list[str]  # [positive, negative] that made the vector
    plain: str
    steered: str
    vector: torch.Tensor
    title: ClassVar[str] = "Steered generation"

    @classmethod
    def compare(cls, model: Model, prompt: str, site: str, positive: str, negative: str, coef: float = 2.0,
                max_new_tokens: int = 20) -> "SteeredGeneration":
        vector = control_vector(model, [(positive, negative)], site).vectors[0]
        plain = model.generate(prompt, max_new_tokens=max_new_tokens)
        steered = model.generate(prompt, max_new_tokens=max_new_tokens, interventions=[Add(site, vector, coef=coef)])
        return cls(provenance=Provenance.of(model, prompts=[prompt, positive, negative], site=site, coef=coef,
                                            max_new_tokens=max_new_tokens),
                   prompt=prompt, site=site, coef=coef, contrast=[positive, negative], plain=plain, steered=steered,
                   vector=vector.detach().float().cpu())

    def summary(self) -> str:
        return (f"Add {self.contrast[0]!r} − {self.contrast[1]!r} at {self.site} × {self.coef} "
                f"(|v| = {float(self.vector.norm()):.1f}):\n  plain:   {self.prompt}{self.plain}\n"
                f"  steered: {self.prompt}{self.steered}")

    def evidence(self) -> dict:
        return {"changed": self.plain != self.steered, "vector_norm": float(self.vector.norm())}

    def html(self, png: bytes | None = None, *, draw: bool = True) -> str:
        return self._render("results/steering.html")


# ----------------------------------------------------------------------------------------------
# Control vectors from contrastive pairs

VECTOR_METHODS = ("mean-diff", "pca")


def direction_from_differences(diffs: torch.Tensor, method: str = "mean-diff") -> torch.Tensor:
    """One vector [d] from paired differences diffs [n, d] (positive − negative).

    ``mean-diff`` (ActAdd / CAA): the mean difference. ``pca`` (RepE / repeng style): the first
    principal direction of the differences **without centring** (centring, sklearn PCA's default,
    subtracts the mean difference — the concept itself — and leaves only its variation), signed so
    the differences project positively and scaled to their mean projection."""
    if method not in VECTOR_METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(VECTOR_METHODS)}")
    if diffs.dim() != 2 or diffs.shape[0] < 1:
        raise ValueError(f"differences must be [n ≥ 1, d]; got shape {tuple(diffs.shape)}")
    if not torch.isfinite(diffs).all():
        raise ValueError("the differences contain NaN or infinite values")
    diffs = diffs.double()
    if method == "mean-diff":
        return diffs.mean(0).float()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    u = vh[0]
    proj = diffs @ u
    if proj.mean() < 0:
        u, proj = -u, -proj
    return (u * proj.mean()).float()


@dataclass
class ControlVector(Result):
    """Steering directions from contrastive prompt pairs: ``vectors`` [sites, d], one per site.
    Save and load it like any result (``save(dir)``, ``mechscope.results.load_result(dir)``)."""

    method: str
    sites: list[str]
    vectors: torch.Tensor
    pairs: list[tuple[str, str]]  # [[positive, negative], ...]
    title: ClassVar[str] = "Control vector"

    @property
    def by_site(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.sites, self.vectors))

    def interventions(self, coef: float = 1.0, *, after_prompt: bool = False) -> list:
        """Add coef·v at every site. ``after_prompt``: only at generated tokens (their forward
        passes under the KV cache), leaving the prompt's own positions untouched."""
        if not after_prompt:
            return [Add(site, v, coef=coef) for site, v in self.by_site.items()]

        def adder(v):
            return lambda x: x + coef * v.to(x.device, x.dtype) if x.shape[1] == 1 else x

        return [Replace(site, adder(v)) for site, v in self.by_site.items()]

    def summary(self) -> str:
        norms = ", ".join(f"{s} |v| {float(v.norm()):.2f}" for s, v in list(self.by_site.items())[:4])
        return f"{self.method} control vector from {len(self.pairs)} pairs: {norms}"

    def evidence(self) -> dict:
        return {"method": self.method, "sites": self.sites, "pairs": len(self.pairs)}


def control_vector(model: Model, pairs: Sequence[tuple[str, str]], sites: str | Sequence[str], *,
                   method: str = "mean-diff", position: int = -1, batch_size: int = 16) -> ControlVector:
    """A control vector per site from (positive, negative) prompt pairs: the activation at
    ``position`` (-1: last token) of each positive prompt minus its negative's, reduced by
    ``direction_from_differences``."""
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError("pairs must be a non-empty list of (positive, negative) prompts")
    if method not in VECTOR_METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(VECTOR_METHODS)}")
    acts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        run = model.run([p for p, _ in chunk] + [n for _, n in chunk], cache=sites, cache_positions=[position])
        for name, t in run.cache.items():
            a = t[:, 0].float()
            acts.setdefault(name, []).append(a[:len(chunk)] - a[len(chunk):])
    vectors = torch.stack([direction_from_differences(torch.cat(d), method).cpu() for d in acts.values()])
    return ControlVector(provenance=Provenance.of(model, prompts=[list(p) for p in pairs], method=method,
                                                  position=position),
                         method=method, sites=list(acts), vectors=vectors, pairs=[list(p) for p in pairs])


NEUTRAL = ["The train leaves the station at nine in the morning and arrives in the city before noon.",
           "Water boils at one hundred degrees Celsius at sea level.",
           "The committee will meet on Tuesday to discuss the budget for next year.",
           "He opened the window, sat down at the desk and began to write a letter."]


def sentiment_pairs() -> list[tuple[str, str]]:
    """20 contrastive pairs: 'I thought the film was <positive>' vs '... <negative>' (the word
    lists of ``probes.sentiment_dataset``)."""

    return [(f"I thought the film was {p}", f"I thought the film was {n}") for p, n in zip(POSITIVE, NEGATIVE)]


def read_pairs(source: str) -> list[tuple[str, str]]:
    """Pairs from a file: one 'positive<TAB>negative' per line, or a JSON list of [positive,
    negative]; ``sentiment`` names the embedded pairs."""
    import json
    from pathlib import Path

    if source == "sentiment":
        return sentiment_pairs()
    text = Path(source).read_text()
    if text.lstrip().startswith("["):
        pairs = [tuple(p) for p in json.loads(text)]
    else:
        pairs = [tuple(line.split("\t")) for line in text.splitlines() if line.strip()]
    bad = [p for p in pairs if len(p) != 2]
    if bad:
        raise ValueError(f"{source}: each pair needs a positive and a negative prompt; got {bad[0]!r}")
    return pairs


def directional_ablation(direction: torch.Tensor) -> list:
    """Remove ``direction`` from every write into the residual stream — the embedding and each
    block's attention and MLP outputs (Arditi et al. 2024) — so no layer can express it."""
    return [ProjectOut(site, direction) for site in ("embed", "blocks.*.attn.out", "blocks.*.mlp.out")]


def perplexity(model: Model, texts: Sequence[str], interventions: Sequence = ()) -> float:
    """exp(mean next-token loss) over the real tokens of ``texts`` under ``interventions``."""
    with torch.no_grad():
        loss = model.run(list(texts), interventions=list(interventions)).token_loss()
    return float(torch.exp(loss[~loss.isnan()].mean()))


def word_score(texts: Sequence[str], positive: Sequence[str], negative: Sequence[str]) -> float:
    """(positive − negative word count) / words, over all texts: a crude, transparent behaviour score."""
    pos, neg = {w.lower() for w in positive}, {w.lower() for w in negative}
    words = [w.strip(".,;:!?\"'()").lower() for t in texts for w in t.split()]
    return (sum(w in pos for w in words) - sum(w in neg for w in words)) / max(len(words), 1)


@dataclass
class SteeringSweep(Result):
    """Behaviour vs cost over steering coefficients: ``behaviour`` (the score of the steered
    continuations), ``perplexity`` (of neutral text under the same steering), a sample each."""

    sites: list[str]
    method: str
    coefs: list[float]
    behaviour: list[float]
    perplexity: list[float]
    samples: list[str]
    prompt: str
    score_name: str
    title: ClassVar[str] = "Steering sweep"

    def summary(self) -> str:
        rows = [f"  coef {c:+g}: {self.score_name} {b:+.3f}, perplexity {p:.2f} | {self.prompt}{s!r}"
                for c, b, p, s in zip(self.coefs, self.behaviour, self.perplexity, self.samples)]
        return f"{self.method} vector at {', '.join(self.sites)}:\n" + "\n".join(rows)

    def evidence(self) -> dict:
        return {"coefs": self.coefs, "behaviour": self.behaviour, "perplexity": self.perplexity}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(self.coefs, self.behaviour, "o-", color="C0")
        ax.set(xlabel="coefficient", ylabel=self.score_name, title="steering: behaviour vs cost")
        ax2 = ax.twinx()
        ax2.plot(self.coefs, self.perplexity, "s--", color="C3")
        ax2.set_ylabel("perplexity on neutral text", color="C3")
        fig.tight_layout()
        return fig


def steering_sweep(model: Model, vector: ControlVector, prompts: Sequence[str], coefs: Sequence[float], *,
                   score, score_name: str = "score", neutral: Sequence[str], max_new_tokens: int = 20,
                   after_prompt: bool = False, progress: bool = True) -> SteeringSweep:
    """Generate from ``prompts`` at each coefficient (greedy) and score the continuations with
    ``score(texts) -> float``; perplexity of ``neutral`` texts under the same steering."""
    from tqdm.auto import tqdm

    behaviour, ppl, samples = [], [], []
    for coef in tqdm(list(coefs), desc="steering sweep", disable=not progress, leave=False):
        ivs = vector.interventions(coef, after_prompt=after_prompt) if coef else []
        texts = model.generate(list(prompts), max_new_tokens=max_new_tokens, interventions=ivs)
        behaviour.append(float(score(texts)))
        ppl.append(perplexity(model, neutral, vector.interventions(coef) if coef else []))
        samples.append(texts[0])
    return SteeringSweep(provenance=Provenance.of(model, prompts=list(prompts) + list(neutral), coefs=list(coefs),
                                                  max_new_tokens=max_new_tokens, after_prompt=after_prompt),
                         sites=list(vector.sites), method=vector.method, coefs=[float(c) for c in coefs],
                         behaviour=behaviour, perplexity=ppl, samples=samples, prompt=prompts[0], score_name=score_name)
