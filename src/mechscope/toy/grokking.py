"""Grokking modular addition (Power et al. 2022; Nanda et al. 2023), and reading the algorithm.

A one-layer transformer (Nanda et al.'s: d_model 128, 4 heads, ReLU MLP of 512, no LayerNorm,
untied unembedding) sees ``a b =`` and predicts (a + b) mod p. Trained full-batch on a fraction
of all p² pairs with strong weight decay, it first memorises the training pairs, then — long
after — generalises. What it learns is a Fourier algorithm: the embedding uses a few *key
frequencies* w_k = 2πk/p, and the logits are sums of cos(w_k(a + b − c)). The progress measures
show the circuit forming before test accuracy moves:

- restricted loss: the loss with the logits restricted to the key frequencies' cos/sin(w_k(a+b))
  components (plus their mean over inputs), on all pairs — falls as the circuit forms;
- excluded loss: the loss with those components removed, on the training pairs — rises as the
  memorisation is cleaned away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..models.model import Model
from ..results import Provenance, Result
from .attn_only import toy_tokenizer


def modular_model(p: int = 53, *, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512, seed: int = 0) -> Model:
    """A randomly initialised one-layer transformer over tokens ``0 … p−1`` and ``=`` (id p),
    as a mechscope ``Model`` (GPT-2 blocks with ReLU MLP, LayerNorms replaced by identities)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=p + 1, n_positions=3, n_embd=d_model, n_layer=1, n_head=n_heads, n_inner=d_mlp,
                     activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(cfg)
    hf.config._attn_implementation = "sdpa"
    hf.transformer.ln_f = torch.nn.Identity()
    for block in hf.transformer.h:
        block.ln_1, block.ln_2 = torch.nn.Identity(), torch.nn.Identity()
    return Model(hf, toy_tokenizer([str(i) for i in range(p)] + ["="], pad="="), name=f"modular-addition-p{p}")


def all_pairs(p: int) -> torch.Tensor:
    """[p², 3] token ids ``a b =`` for every pair, a-major."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)


def fourier_basis(p: int) -> tuple[torch.Tensor, list[str]]:
    """The orthonormal Fourier basis of functions on Z_p: [p, p] rows 1, cos(w_k x), sin(w_k x)
    for k = 1 … (p−1)/2 with w_k = 2πk/p, and their names."""
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows[:p])
    return (basis / basis.norm(dim=1, keepdim=True)).float(), names[:p]


def embedding_spectrum(w_e: torch.Tensor, p: int) -> torch.Tensor:
    """Norm of the number embeddings ``W_E[:p]`` [p, d] in each frequency k = 1 … (p−1)/2 (the cos
    and sin rows together): [(p−1)/2]."""
    basis, _ = fourier_basis(p)
    coef = basis @ w_e[:p].float()  # [p, d]
    return (coef[1::2] ** 2 + coef[2::2] ** 2).sum(-1).sqrt()


def key_frequencies(spectrum: torch.Tensor, of_max: float = 0.4, of_median: float = 2.0) -> list[int]:
    """Frequencies k (1-based) whose embedding norm is at least ``of_max`` of the largest and
    ``of_median`` × the median: the sparse peaks of a generalising model's embedding."""
    keep = (spectrum >= of_max * spectrum.max()) & (spectrum >= of_median * spectrum.median())
    return [k + 1 for k in torch.nonzero(keep).flatten().tolist()]


def _restrict(logits: torch.Tensor, p: int, keys: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(restricted, excluded) logits [p², p]: the components of each output's logits (as a
    function of a, b) along cos/sin(w_k(a+b)) for the key k, plus the mean; and the rest."""
    a, b = all_pairs(p)[:, :2].double().unbind(1)
    directions = []
    for k in keys:
        w = 2 * math.pi * k / p
        directions += [torch.cos(w * (a + b)), torch.sin(w * (a + b))]
    if not directions:
        mean = logits.mean(0, keepdim=True).expand_as(logits)
        return mean, logits
    d = torch.stack(directions).float()
    d = d / d.norm(dim=1, keepdim=True)  # orthonormal over the p² grid
    key_part = d.T @ (d @ logits)
    mean = logits.mean(0, keepdim=True)
    return mean + key_part, logits - key_part


def _loss(logits: torch.Tensor, answers: torch.Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits.double(), answers))


@dataclass
class Grokking(Result):
    """Training history of a one-layer transformer on (a + b) mod p, with the Fourier reading.

    Per checkpoint (``steps``): train/test loss and accuracy, restricted and excluded loss
    (computed with the final key frequencies). ``spectrum``: the final embedding's norm per
    frequency [(p−1)/2]; ``key_frequencies``: its peaks. ``memorised_step`` / ``grokked_step``:
    first checkpoint with train / test accuracy ≥ 0.99.
    """

    p: int
    train_fraction: float
    steps: list[int]
    train_loss: list[float]
    test_loss: list[float]
    train_acc: list[float]
    test_acc: list[float]
    restricted_loss: list[float]
    excluded_loss: list[float]
    spectrum: torch.Tensor
    key_frequencies: list[int]
    memorised_step: int | None
    grokked_step: int | None
    title: ClassVar[str] = "Grokking modular addition"

    @property
    def model(self):
        """The trained one-layer transformer (kept in this process, not saved: ``Result.held``)."""
        return self.held("model")

    def summary(self) -> str:
        share = float((self.spectrum[[k - 1 for k in self.key_frequencies]] ** 2).sum() / (self.spectrum ** 2).sum())
        return (f"(a + b) mod {self.p}, trained on {self.train_fraction:.0%} of pairs for {self.steps[-1]} steps: "
                f"train accuracy ≥ 0.99 at step {self.memorised_step}, test accuracy ≥ 0.99 at step "
                f"{self.grokked_step}; final test accuracy {self.test_acc[-1]:.3f}, test loss {self.test_loss[-1]:.2g}. "
                f"Key frequencies {self.key_frequencies} hold {share:.0%} of the embedding's Fourier norm²; "
                f"restricted loss {self.restricted_loss[-1]:.2g}, excluded loss {self.excluded_loss[-1]:.2g} (train)")

    def evidence(self) -> dict:
        return {"key_frequencies": self.key_frequencies, "test_acc": self.test_acc[-1],
                "memorised_step": self.memorised_step, "grokked_step": self.grokked_step,
                "restricted_loss": self.restricted_loss[-1], "excluded_loss": self.excluded_loss[-1]}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
        for name, color in (("train_loss", "tab:blue"), ("test_loss", "tab:red"),
                            ("restricted_loss", "tab:green"), ("excluded_loss", "tab:orange")):
            axes[0].plot(self.steps, getattr(self, name), label=name.replace("_", " "), color=color)
        axes[0].set(yscale="log", xlabel="step", ylabel="loss", title="losses and progress measures")
        axes[0].legend(fontsize=7)
        axes[1].plot(self.steps, self.train_acc, label="train", color="tab:blue")
        axes[1].plot(self.steps, self.test_acc, label="test", color="tab:red")
        axes[1].set(xlabel="step", ylabel="accuracy", title="memorise, then generalise", ylim=(0, 1.02))
        axes[1].legend(fontsize=7)
        ks = range(1, len(self.spectrum) + 1)
        colors = ["tab:purple" if k in self.key_frequencies else "tab:gray" for k in ks]
        axes[2].bar(ks, self.spectrum.numpy(), color=colors)
        axes[2].set(xlabel="frequency k", ylabel="‖W_E in cos/sin(2πk x/p)‖", title="embedding in the Fourier basis")
        for ax in axes[:2]:
            for step, style in ((self.memorised_step, ":"), (self.grokked_step, "--")):
                if step is not None:
                    ax.axvline(step, color="grey", ls=style, lw=0.8)
        fig.tight_layout()
        return fig


def train_grokking(p: int = 53, *, train_fraction: float = 0.5, steps: int = 6000, lr: float = 3e-3,
                   weight_decay: float = 1.0, d_model: int = 128, d_mlp: int = 512, batch_size: int | None = None,
                   clip: float | None = 1.0, eval_every: int = 100, seed: int = 0, progress: bool = True,
                   stop_after_grokking: int | None = None) -> Grokking:
    """AdamW (betas 0.9/0.98, 10 warm-up steps) on a seeded ``train_fraction`` of the pairs, full
    batch or ``batch_size`` pairs drawn with replacement per step; every ``eval_every`` steps the logits on all p² pairs are kept (float16) for the
    progress measures. ``stop_after_grokking``: stop that many steps after test accuracy first
    reaches 0.99. ``clip``: gradient-norm clipping, which tames the loss spikes full-batch Adam
    shows without LayerNorm. The defaults (lr 3e-3, 3× the paper's, to grok within minutes) are
    measured in the tests; ``p=113, train_fraction=0.3, lr=1e-3`` is the paper's run (hours here)."""
    if p < 3 or any(p % q == 0 for q in range(2, int(p ** 0.5) + 1)):
        raise ValueError(f"p must be a prime ≥ 3 (the Fourier reading needs a field), got {p}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    model = modular_model(p, d_model=d_model, d_mlp=d_mlp, seed=seed)
    hf = model.hf
    pairs = all_pairs(p)
    answers = (pairs[:, 0] + pairs[:, 1]) % p
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(p * p, generator=gen)
    n_train = int(round(train_fraction * p * p))
    train, test = order[:n_train], order[n_train:]
    opt = torch.optim.AdamW(hf.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    kept: list[tuple[int, torch.Tensor]] = []
    hf.train()
    grokked_at = None
    bar = tqdm(range(steps + 1), desc=f"grokking p={p}", disable=not progress)
    for step in bar:
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                logits = hf(input_ids=pairs, use_cache=False).logits[:, -1, :p]
            kept.append((step, logits.half()))
            test_acc = float((logits[test].argmax(-1) == answers[test]).float().mean())
            bar.set_postfix(train=f"{_loss(logits[train], answers[train]):.2g}",
                            test=f"{_loss(logits[test], answers[test]):.2g}", test_acc=f"{test_acc:.2f}")
            if grokked_at is None and test_acc >= 0.99:
                grokked_at = step
            if step == steps or (stop_after_grokking is not None and grokked_at is not None
                                 and step >= grokked_at + stop_after_grokking):
                break
        rows = train if batch_size is None else train[torch.randint(len(train), (batch_size,), generator=gen)]
        logits = hf(input_ids=pairs[rows], use_cache=False).logits[:, -1, :p]
        loss = torch.nn.functional.cross_entropy(logits, answers[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(hf.parameters(), clip)
        opt.step()
        sched.step()
    hf.eval()
    model = Model(hf, model.tokenizer, name=model.name)
    spectrum = embedding_spectrum(hf.get_input_embeddings().weight.detach(), p)
    keys = key_frequencies(spectrum)
    h: dict[str, list] = {k: [] for k in ("steps", "train_loss", "test_loss", "train_acc", "test_acc",
                                          "restricted_loss", "excluded_loss")}
    for step, logits in kept:
        logits = logits.float()
        restricted, excluded = _restrict(logits, p, keys)
        h["steps"].append(step)
        h["train_loss"].append(_loss(logits[train], answers[train]))
        h["test_loss"].append(_loss(logits[test], answers[test]))
        h["train_acc"].append(float((logits[train].argmax(-1) == answers[train]).float().mean()))
        h["test_acc"].append(float((logits[test].argmax(-1) == answers[test]).float().mean()))
        h["restricted_loss"].append(_loss(restricted, answers))
        h["excluded_loss"].append(_loss(excluded[train], answers[train]))

    def first(accs: list[float]) -> int | None:
        return next((s for s, a in zip(h["steps"], accs) if a >= 0.99), None)

    return Grokking(
        provenance=Provenance.of(model, dataset=f"(a + b) mod {p}, all pairs", seed=seed, p=p,
                                 train_fraction=train_fraction, steps=steps, lr=lr, weight_decay=weight_decay,
                                 d_model=d_model, d_mlp=d_mlp, batch_size=batch_size),
        p=p, train_fraction=train_fraction, spectrum=spectrum, key_frequencies=keys,
        memorised_step=first(h["train_acc"]), grokked_step=first(h["test_acc"]), **h,
    ).hold("model", model)
