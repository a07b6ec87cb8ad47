"""Sweeps over components, batched: many edited copies of a prompt go through one forward pass.

``ablation_scan`` ablates each attention head (or each layer's attention and MLP output) of a
model, one per batch row, and reports the change in the target token's log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from tqdm.auto import tqdm

from .interventions import Ablate, Intervention
from .models.model import Model
from .results import Provenance, Result


@dataclass
class AblationScan(Result):
    """Effect of ablating each component on log P(target | prompt) at the last position.

    effect: [layers, heads] (``components="heads"``) or [2, layers] (rows: attn.out, mlp.out);
    each entry is ablated minus clean log-probability (negative: the component helped).
    """

    prompt: str
    target: str
    components: str
    how: str
    clean_logprob: float
    effect: torch.Tensor
    title: ClassVar[str] = "Ablation scan"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k components whose ablation lowers the target's log-probability most."""
        flat = self.effect.flatten()
        order = flat.argsort()[:k].tolist()
        return [(self.component_name(i), float(flat[i])) for i in order]

    def component_name(self, flat_index: int) -> str:
        rows, cols = self.effect.shape
        r, c = divmod(flat_index, cols)
        if self.components == "heads":
            return f"L{r}H{c}"
        return f"{'attn' if r == 0 else 'mlp'}{c}"

    def evidence(self) -> dict:
        return {"clean_logprob": self.clean_logprob, "largest_drops": self.top(5)}

    def summary(self) -> str:
        tops = ", ".join(f"{name} {eff:+.2f}" for name, eff in self.top(5))
        return (
            f"{self.how}-ablating each {'head' if self.components == 'heads' else 'attention/MLP layer'} "
            f"on {self.prompt!r} -> {self.target!r} (clean log p = {self.clean_logprob:.2f}).\n"
            f"Largest drops in log p: {tops}"
        )

    def figure(self):
        import matplotlib.pyplot as plt

        eff = self.effect.float()
        lim = float(eff.abs().max()) or 1.0
        if self.components == "heads":
            fig, ax = plt.subplots(figsize=(0.35 * eff.shape[1] + 2.5, 0.22 * eff.shape[0] + 1.5))
            im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
        else:
            fig, ax = plt.subplots(figsize=(0.22 * eff.shape[1] + 2.5, 1.8))
            im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_yticks([0, 1], ["attn", "mlp"])
            ax.set_xlabel("layer")
        fig.colorbar(im, ax=ax, label="Δ log p(target)")
        ax.set_title(f"{self.how}-ablation: {self.prompt!r} → {self.target!r}", fontsize=9)
        fig.tight_layout()
        return fig


def ablation_scan(
    model: Model,
    prompt: str,
    target: str,
    *,
    components: Literal["heads", "layers"] = "heads",
    how: Literal["zero", "mean"] = "zero",
    batch_size: int = 64,
    progress: bool = True,
) -> AblationScan:
    """Ablate every head (or every attn/MLP layer output) of ``model`` and measure Δ log p(target).

    One forward pass per ``batch_size`` components: row i of a batch carries ablation i. With
    ``how="mean"`` the mean is taken over the prompt's own tokens.
    """
    target_ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(target_ids) != 1:
        raise ValueError(f"target {target!r} is {len(target_ids)} tokens; give a single-token target")
    tid = target_ids[0]
    c = model.cfg
    if components == "heads":
        jobs = [(f"blocks.{l}.attn.z", [h]) for l in range(c.n_layers) for h in range(c.n_heads)]
        shape = (c.n_layers, c.n_heads)
    elif components == "layers":
        jobs = [(f"blocks.{l}.{k}", None) for k in ("attn.out", "mlp.out") for l in range(c.n_layers)]
        shape = (2, c.n_layers)
    else:
        raise ValueError(f"components={components!r}; valid: 'heads', 'layers'")
    reference = model.run(prompt, cache=sorted({site for site, _ in jobs})) if how == "mean" else None
    clean = model.run(prompt).logits[0, -1].float().log_softmax(-1)[tid]
    effects = []
    for start in tqdm(range(0, len(jobs), batch_size), desc="ablation scan", disable=not progress):
        chunk = jobs[start:start + batch_size]
        ivs: list[Intervention] = [
            Ablate(site, how=how, heads=heads, rows=[i], reference=reference) for i, (site, heads) in enumerate(chunk)
        ]
        run = model.run([prompt] * len(chunk), interventions=ivs)
        effects.append(run.logits[:, -1].float().log_softmax(-1)[:, tid] - clean)
    effect = torch.cat(effects).reshape(shape)
    return AblationScan(
        provenance=Provenance.of(model, prompts=[prompt, target], components=components, how=how),
        prompt=prompt, target=target, components=components, how=how,
        clean_logprob=float(clean), effect=effect,
    )
