"""Representation geometry: what the embedding matrices say on their own.

Weight tying (``WeightTying``): with W_U = W_Eᵀ (SmolLM2, GPT-2) the *direct path* — embedding →
final norm → unembedding, every block skipped — scores next token j after token i by
norm(E_i) · E_j: a symmetric bilinear form up to each row's positive norm scale. It cannot hold a
bigram asymmetry, and since E_i · Γ E_i is large it favours predicting the input token itself;
the blocks must undo that. Measured here: how often the direct path's top prediction is the
input token, how symmetric its bilinear form is, and each token's nearest neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .lens import token_id
from .models.model import Model
from .models.weights import embedding_weights
from .results import Provenance, Result


def _direct_path_logits(model: Model, ids: torch.Tensor) -> torch.Tensor:
    """[len(ids), vocab] logits of the direct path (embedding → final norm → unembedding) for
    single tokens: the model's own final-norm and unembedding modules, blocks skipped. For
    absolute-position models (GPT-2) the position embedding is left out."""
    hf = model.hf
    with torch.no_grad():
        x = hf.get_input_embeddings()(ids.to(model.device))
        x = hf.get_submodule(model.adapter.final_norm)(x)
        return hf.get_output_embeddings()(x).float().cpu()


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
    neighbours: dict
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
    norm = model.hf.get_submodule(model.adapter.final_norm)
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
        t = token_id(model, tok)
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
