"""Attention-only transformers trained from scratch: the induction-head phase change.

Elhage et al. (2021) and Olsson et al. (2022): a 2-layer attention-only transformer forms
induction heads — a previous-token head in layer 0 whose output a layer-1 head reads through
K-composition — abruptly, at the same steps as its in-context-learning score jumps and its loss
leaves a plateau; a 1-layer model cannot (no head can see what preceded an earlier token).

The model is a Hugging Face GPT-2 whose MLPs are replaced by ``NoMLP`` (adds exactly zero, costs
nothing; the norm before it becomes an identity) and whose config says ``n_inner=0``, wrapped as a mechscope ``Model`` so every site, detector and intervention
works on it. It trains on sequences that repeat a random segment of random period, so that only
content (not position) says where the repeat began.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import names
from ..checks import positive_int
from ..components.heads import repeat_loss, icl_score, pattern_scores, repeated_random_tokens
from ..models.model import Model
from ..results import Provenance, Result
from ..models.sites import block_site


def toy_tokenizer(words: int | list[str], pad: str | None = None):
    """A word-level tokenizer over ``words`` (an int n means ``t0`` … ``t{n-1}``, ``t0`` padding),
    so toy models take strings like ``"t5 t17 t5"`` as well as token ids, and decode readably."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"t{i}" for i in range(words)] if isinstance(words, int) else list(words)
    pad = pad or words[0]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=pad))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=pad)


class NoMLP(nn.Module):
    """An MLP with no neurons: its contribution to the residual is zero (site ``mlp.out``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def attn_only(n_layers: int = 2, *, n_heads: int = 4, d_model: int = 64, vocab: int = 512, context: int = 64,
              seed: int = 0) -> Model:
    """A randomly initialised attention-only transformer (GPT-2 blocks without MLPs; learned
    positions, LayerNorm, untied unembedding) as a mechscope ``Model``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if n_layers < 1 or d_model % n_heads:
        raise ValueError(f"need n_layers ≥ 1 and d_model divisible by n_heads, got {n_layers}, {d_model}/{n_heads}")
    cfg = GPT2Config(vocab_size=vocab, n_positions=context, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                     n_inner=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                     pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(cfg)
    hf.config._attn_implementation = "sdpa"
    for block in hf.transformer.h:
        block.mlp, block.ln_2 = NoMLP(), nn.Identity()
    hf.config.n_inner = 0  # mechscope reads d_mlp = 0: no neuron sites
    return Model(hf, toy_tokenizer(vocab), name=f"attn-only-{n_layers}L")


def repeated_segments(batch_size: int, context: int, vocab: int, generator: torch.Generator,
                      min_period: int = 8) -> torch.Tensor:
    """[batch_size, context] ids in [1, vocab): a random segment of period n ∈ [min_period, context/2]
    (drawn per row), repeated to fill the context: token i equals token i − n."""
    base = torch.randint(1, vocab, (batch_size, context), generator=generator)
    period = torch.randint(min_period, context // 2 + 1, (batch_size, 1), generator=generator)
    return base.gather(1, torch.arange(context) % period)


@dataclass
class InductionFormation(Result):
    """Training history of an attention-only model: loss, in-context-learning score, and every
    head's induction (prefix-matching) and previous-token score at each checkpoint.

    induction, previous: [checkpoints, layers, heads]. ``phase_step``: the middle of an abrupt fall of
    the ICL score (see ``_phase_step``; None when it only fell gradually). ``repeat_loss``: final loss on the
    second copy of repeated random tokens.
    """

    n_layers: int
    steps: list[int]
    loss: list[float]
    icl: list[float]
    induction: torch.Tensor
    previous: torch.Tensor
    phase_step: int | None
    repeat_loss: float
    tokens_per_s: float
    title: ClassVar[str] = "Induction-head formation"

    @property
    def model(self):
        """The trained attention-only model (kept in this process, not saved: ``Result.held``)."""
        return self.held("model")

    def best(self, kind: str = "induction") -> tuple[str, float]:
        """The head with the highest final score of ``kind`` ('induction' or 'previous')."""
        final = getattr(self, kind)[-1]
        i = int(final.argmax())
        return names.head(*divmod(i, final.shape[1])).label, float(final.flatten()[i])

    def summary(self) -> str:
        head, score = self.best("induction")
        prev, pscore = self.best("previous")
        change = f"phase change at step {self.phase_step}" if self.phase_step is not None else "no phase change"
        return (f"{self.n_layers}-layer attention-only model, {self.steps[-1]} steps ({self.tokens_per_s:,.0f} tokens/s): "
                f"loss {self.loss[0]:.2f} -> {self.loss[-1]:.2f}, ICL score {self.icl[-1]:+.2f} nats, {change}; "
                f"best induction head {head} {score:.2f}, best previous-token head {prev} {pscore:.2f}; "
                f"loss on a repeated random sequence's second copy {self.repeat_loss:.2f}")

    def evidence(self) -> dict:
        return {"best_induction": self.best("induction"), "best_previous": self.best("previous"),
                "phase_step": self.phase_step, "final_icl": self.icl[-1], "final_loss": self.loss[-1],
                "repeat_loss": self.repeat_loss}

    def figure(self):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        axes[0].plot(self.steps, self.loss, color="k")
        axes[0].set(title="training loss", xlabel="step", ylabel="nats")
        axes[1].plot(self.steps, self.icl, color="tab:purple")
        axes[1].set(title="in-context learning score (late − early loss)", xlabel="step", ylabel="nats")
        layers, heads = self.induction.shape[1:]
        for l in range(layers):
            for h in range(heads):
                style = dict(color=plt.cm.tab10((l * heads + h) % 10), lw=1.2)
                axes[2].plot(self.steps, self.induction[:, l, h], label=f"{names.head(l, h).label} induction", **style)
                axes[2].plot(self.steps, self.previous[:, l, h], ls=":", **style)
        axes[2].set(title="per-head induction (solid), previous-token (dotted)", xlabel="step", ylim=(0, 1))
        axes[2].legend(fontsize=6, ncol=2)
        if self.phase_step is not None:
            for ax in axes:
                ax.axvline(self.phase_step, color="grey", ls="--", lw=0.8)
        fig.suptitle(f"{self.n_layers}-layer attention-only transformer", fontsize=10)
        fig.tight_layout()
        return fig


def _phase_step(steps: list[int], icl: list[float], span: float = 0.15, share: float = 0.4,
                least: float = 0.5) -> int | None:
    """The middle of the steepest fall of the ICL score over any ``span`` of the training steps,
    when that fall is at least ``share`` of the whole fall (and ``least`` nats): an abrupt change.
    A gradual improvement (the 1-layer model's) has none."""
    total = icl[0] - min(icl)
    width = span * steps[-1]
    best, at = 0.0, None
    for i in range(len(steps)):
        for j in range(i + 1, len(steps)):
            if steps[j] - steps[i] > width:
                break
            if icl[i] - icl[j] > best:
                best, at = icl[i] - icl[j], (steps[i] + steps[j]) // 2
    return at if total >= least and best >= share * total else None


def train_induction(n_layers: int = 2, *, steps: int = 1600, batch_size: int = 32, context: int = 64, vocab: int = 512,
                    d_model: int = 64, n_heads: int = 4, lr: float = 1e-3, weight_decay: float = 0.01,
                    eval_every: int = 50, seed: int = 0, progress: bool = True) -> InductionFormation:
    """Train an attention-only model on ``repeated_segments`` (AdamW, linear warm-up over 5% of
    the steps, then constant) and record its history every ``eval_every`` steps: training loss,
    ICL score on a fixed held-out batch (loss around position 7/8·context minus around 1/8·context),
    and per-head scores on repeated random tokens (half-length context/2). Returns the trained
    model (weights in eval mode) and its ``InductionFormation``."""
    for value, name in ((steps, "steps"), (batch_size, "batch_size"), (context, "context"), (eval_every, "eval_every")):
        positive_int(value, name)
    model = attn_only(n_layers, n_heads=n_heads, d_model=d_model, vocab=vocab, context=context, seed=seed)
    hf = model.hf
    gen = torch.Generator().manual_seed(seed)
    held_out = repeated_segments(64, context, vocab, torch.Generator().manual_seed(seed + 10_000))
    probe = repeated_random_tokens(model, batch=16, length=context // 2, seed=seed + 20_000, low=1)
    params = [p for p in hf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    history: dict[str, list] = {"steps": [], "loss": [], "icl": [], "induction": [], "previous": []}
    window = max(2, context // 16)

    def checkpoint(step: int, loss: float) -> None:
        hf.eval()
        with torch.no_grad():
            run = model.run(probe, cache="blocks.*.attn.pattern")
        scores = pattern_scores({l: run.cache[block_site(l, "attn.pattern")] for l in range(n_layers)}, context // 2)
        history["steps"].append(step)
        history["loss"].append(loss)
        history["icl"].append(icl_score(model, held_out, early=context // 8, late=context - 1 - window, window=window))
        history["induction"].append(scores["induction"])
        history["previous"].append(scores["previous"])
        hf.train()

    hf.train()
    checkpoint(0, math.log(vocab - 1))
    trained_s, recent = 0.0, []
    bar = tqdm(range(1, steps + 1), desc=f"train {n_layers}L attn-only", disable=not progress)
    for step in bar:
        t0 = time.perf_counter()
        ids = repeated_segments(batch_size, context, vocab, gen)
        logits = hf(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        trained_s += time.perf_counter() - t0
        recent.append(loss.item())
        if step % eval_every == 0 or step == steps:
            checkpoint(step, sum(recent) / len(recent))
            recent = []
            bar.set_postfix(loss=f"{history['loss'][-1]:.2f}", icl=f"{history['icl'][-1]:+.2f}",
                            induction=f"{float(history['induction'][-1].max()):.2f}")
    hf.eval()
    model = Model(hf, model.tokenizer, name=model.name)  # re-wrapped: the fingerprint is of the trained weights
    result = InductionFormation(
        provenance=Provenance.of(model, dataset="repeated segments (random period)", seed=seed, steps=steps,
                                 batch_size=batch_size, context=context, vocab=vocab, d_model=d_model, n_heads=n_heads, lr=lr,
                                 weight_decay=weight_decay),
        n_layers=n_layers, steps=history["steps"], loss=history["loss"], icl=history["icl"],
        induction=torch.stack(history["induction"]), previous=torch.stack(history["previous"]),
        phase_step=_phase_step(history["steps"], history["icl"]),
        repeat_loss=repeat_loss(model, probe, context // 2), tokens_per_s=steps * batch_size * context / trained_s,
    )
    return result.hold("model", model)
