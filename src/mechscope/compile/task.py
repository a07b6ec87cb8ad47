"""A compiled program as a behaviour task, so every circuit method runs on it unchanged.

Clean and corrupted inputs are random inputs of one length (no padding: positions line up); each
corrupted input is another input whose program output differs. The metric reads every output
position (one-hot outputs make KL ill-defined, as the ACDC paper notes): minus the L2 distance
between the output subspace's logits and the clean run's, over all positions — 0 for the full
model, negative when something is missing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..tasks.base import Task
from .compiler import CompiledProgram
from .rasp import RASPError, evaluate


@dataclass
class CompiledTask(Task):
    """``reference`` [pairs, positions, outputs]: the clean run's output logits (BOS left out)."""

    reference: torch.Tensor = None
    output_ids: list[int] = field(default_factory=list)
    metric: str = "l2"
    METRICS: ClassVar[tuple[str, ...]] = ("l2",)
    POSITIONS: ClassVar[str] = "all"

    def score(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """−‖output logits − clean output logits‖₂ per row, from logits [batch, pos, vocab]."""
        if rows is None:
            rows = torch.arange(logits.shape[0]) % len(self)
        out = logits[:, 1:, self.output_ids].float()
        ref = self.reference.to(out.device)[rows.to(out.device)]
        return -(((out - ref) ** 2).sum((1, 2)) + 1e-12).sqrt()


def compiled_task(compiled: CompiledProgram, n: int = 32, *, length: int | None = None, seed: int = 0) -> CompiledTask:
    """``n`` clean/corrupted pairs of ``length`` tokens (default the program's max_len) on which the
    program is defined and the corrupted output differs from the clean one."""
    length = length or compiled.max_len
    if not 1 <= length <= compiled.max_len:
        raise ValueError(f"length={length}: the program was compiled for inputs of 1..{compiled.max_len} tokens")
    rng = random.Random(seed)
    draws, clean, corrupted = 0, [], []
    while len(clean) < n and draws < 200 * n:
        draws += 2
        a = [rng.choice(compiled.vocab) for _ in range(length)]
        b = [rng.choice(compiled.vocab) for _ in range(length)]
        try:
            if evaluate(compiled.program, a) == evaluate(compiled.program, b):
                continue
        except RASPError:
            continue
        clean.append(a)
        corrupted.append(b)
    if len(clean) < n:
        raise ValueError(f"only {len(clean)} of {n} input pairs of length {length} have differing outputs")
    ids = [compiled.ids(x) for x in clean]
    with torch.no_grad():
        reference = compiled.model.run(ids).logits[:, 1:, compiled.output_ids].float().cpu()
    return CompiledTask(name=f"compiled:{compiled.program.label}", version=1, seed=seed, clean=ids,
                        corrupted=[compiled.ids(x) for x in corrupted], good=[[] for _ in ids], bad=[[] for _ in ids],
                        texts=[" ".join(map(str, x)) for x in clean], reference=reference,
                        output_ids=list(compiled.output_ids))


def inert_edges(compiled: CompiledProgram, task: CompiledTask, ablation: str = "corrupted",
                tol: float = 1e-5) -> list[list]:
    """The true edges whose ablation alone (``ablation``, every other edge kept) leaves the metric
    where it was on ``task``'s inputs — true by construction but invisible to any method on these
    inputs (e.g. reverse's length path when clean and corrupted inputs have one length)."""
    from ..circuits.discovery import faithfulness
    from ..circuits.graph import Graph

    graph = Graph.of(compiled.model)
    edges = compiled.circuit().edges
    masks = graph.allowed.float().repeat(len(edges), 1, 1)
    for k, (a, b, _) in enumerate(edges):
        masks[k][graph.edge_index(a, b)] = 0.0
    kept = faithfulness(compiled.model, task, masks, ablation=ablation)
    return [e for e, f in zip(edges, kept.tolist()) if abs(1.0 - f) < tol]
