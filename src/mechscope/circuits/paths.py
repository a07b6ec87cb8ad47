"""Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) on the circuit engine: only the
direct paths sender → receiver are patched (``circuits/edges.py`` gives every receiver its own input)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from .. import names
from ..models.model import Model
from ..results import Provenance, Result
from .edges import edge_run, sender_outputs
from .graph import Graph

DIRECTIONS = ("denoising", "noising")  # which run is patched into which (activation and path patching)


@dataclass
class PathPatching(Result):
    """Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) into ``receivers``.

    Only the direct paths sender → receiver are patched: the receivers read the sender's source
    output while every other component still reads the target run's. ``senders``: the sender
    names, one patched per entry (a sweep), or one entry joining several with ``+``. effect:
    [len(senders)] normalised metric (1 = clean, 0 = corrupted), as in activation patching.
    """

    task: str
    receivers: list[str]
    direction: str
    metric: str
    clean_metric: float
    corrupted_metric: float
    senders: list[str]
    effect: torch.Tensor
    n_heads: int
    title: ClassVar[str] = "Path patching"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        base = 0.0 if self.direction == "denoising" else 1.0
        order = (self.effect - base).abs().argsort(descending=True)[:k]
        return [(self.senders[i], float(self.effect[i])) for i in order.tolist()]

    def summary(self) -> str:
        return (f"{self.direction} path patching into {', '.join(self.receivers)} on {self.task} ({self.metric}: clean "
                f"{self.clean_metric:.3f}, corrupted {self.corrupted_metric:.3f}); normalised effect (1 = clean) of "
                f"{len(self.senders)} sender{'s' if len(self.senders) > 1 else ''}: "
                + ", ".join(f"{n} {v:+.2f}" for n, v in self.top(6)))

    def evidence(self) -> dict:
        return {"top": self.top(10)}

    def figure(self):
        import matplotlib.pyplot as plt

        parsed = [(names.parse(n), float(v)) for n, v in zip(self.senders, self.effect) if "+" not in n]
        heads = [(c, v) for c, v in parsed if c.kind == "head"]
        if not heads:  # a single joint patch: one bar
            fig, ax = plt.subplots(figsize=(4, 2.5))
            ax.barh([0], self.effect.numpy())
            ax.set_yticks([0], self.senders)
            ax.set_xlabel("normalised metric (1 = clean)")
            return fig
        layers = 1 + max(c.layer for c, _ in heads)
        grid = torch.full((layers, self.n_heads), float("nan"))
        for c, v in heads:
            grid[c.layer, c.index] = v
        base = 0.0 if self.direction == "denoising" else 1.0
        lim = max(float((grid - base).abs().nan_to_num().max()), 1e-6)
        fig, ax = plt.subplots(figsize=(0.4 * self.n_heads + 2.8, 0.22 * layers + 1.6))
        im = ax.imshow((grid - base).numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set(xlabel="sender head", ylabel="layer", title=f"{self.direction} path patching → {', '.join(self.receivers)}"[:80])
        fig.colorbar(im, ax=ax, label=f"normalised metric − {base:g}")
        fig.tight_layout()
        return fig


def path_patching(model: Model, task, receivers: str | list[str], senders: list[str] | None = None, *,
                  direction: str = "noising", batch_size: int = 64, progress: bool = True) -> PathPatching:
    """Patch the paths from senders into ``receivers`` only.

    receivers: heads (``a9.h6``: its query, key and value), head inputs (``a9.h6.q``), MLPs
    (``m4``) or ``logits``. senders: None sweeps every sender upstream of the receivers, one per
    patched copy (all copies batched); a list patches those senders together. ``noising`` runs
    the clean prompts and gives the receivers the senders' corrupted outputs; ``denoising`` runs
    the corrupted prompts and gives them the clean outputs."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}; valid: 'denoising' (clean into corrupted), 'noising' (corrupted into clean)")
    g = Graph.of(model)
    receivers = [receivers] if isinstance(receivers, str) else list(receivers)
    recv = sorted({j for name in receivers for j in g.receivers_of(name)})
    up = max(g.upstream(j) for j in recv)
    if senders is None:
        groups = [[i] for i in range(up)]
        sender_names = g.senders[:up]
    else:
        groups = [[g.sender_index(s) for s in senders]]
        sender_names = ["+".join(senders)]
        late = [s for s in senders if g.sender_index(s) >= up]
        if late:
            raise ValueError(f"sender {late[0]} writes after every receiver in {receivers} reads: no path to patch")
    target, source = (task.clean, task.corrupted) if direction == "noising" else (task.corrupted, task.clean)
    patched_in = sender_outputs(model, g, source)
    with torch.no_grad():
        clean_m = float(task.run_metric(model, "clean").mean())
        corrupted_m = float(task.run_metric(model, "corrupted").mean())
    n = len(task)
    per = max(1, batch_size // n)
    values = []
    for start in tqdm(range(0, len(groups), per), desc="path patching", disable=not progress):
        chunk = groups[start:start + per]
        keep = g.allowed.float().repeat(len(chunk), 1, 1)
        for c, group in enumerate(chunk):
            for i in group:
                for j in recv:
                    if i < g.upstream(j):
                        keep[c, i, j] = 0.0
        with torch.no_grad():
            logits = edge_run(model, g, target, keep=keep, ablated=patched_in, all_positions=task.POSITIONS == "all").logits
        values.append(task.score(logits).view(len(chunk), n).mean(1).cpu())
    effect = (torch.cat(values) - corrupted_m) / (clean_m - corrupted_m)
    return PathPatching(
        provenance=Provenance.of(model, prompts=task.texts or task.clean, dataset=f"{task.name} v{task.version}",
                                 seed=task.seed, receivers=receivers, direction=direction, pairs=n),
        task=task.name, receivers=receivers, direction=direction, metric=task.metric, clean_metric=clean_m,
        corrupted_metric=corrupted_m, senders=sender_names, effect=effect, n_heads=model.cfg.n_heads)
