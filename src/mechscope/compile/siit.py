"""Realistic models with a known circuit: strict interchange intervention training (SIIT; Gupta et
al. 2024, InterpBench) against a compiled program.

The low-level model has the compiled model's shape (layers, heads, MLPs) but a wider residual stream
and trained, not hand-set, weights. Every head and MLP of the true circuit stands for the same
component of the compiled model (the high-level model). Each step draws base and source inputs and
adds three losses: **behaviour** (the low model's outputs match the compiled model's), **interchange**
(patch one circuit node's output from the source run into the base run, in both models: the low
model must follow the compiled one), and **strict** (patch a node outside the circuit: the output
must not move). Accepted when interchange accuracy ≥ 0.9 and patching every non-circuit node at once
changes at most ``eps`` of the output positions.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from ..models.interventions import Patch
from .. import names
from ..models.model import Model
from ..results import Provenance, Result
from .compiler import CompiledProgram


def node_site(node: str) -> tuple[str, list[int] | None]:
    """A component-graph sender's output site: ``a3.h1`` → (blocks.3.attn.z, head 1); ``m3`` → blocks.3.mlp.out."""
    site, selection = names.parse(node).site
    return site, selection.get("heads")


@dataclass
class SIITTraining(Result):
    """Curves [logged steps, 4] (step, behaviour, interchange, strict loss) and the acceptance checks."""

    program: str
    values: torch.Tensor
    accuracy: float
    interchange_accuracy: float
    strict_change: float
    eps: float
    circuit_nodes: list[str]
    other_nodes: list[str]
    seconds: float
    title: ClassVar[str] = "SIIT: a trained model with a known circuit"

    @property
    def stand_in(self):
        """The trained stand-in (a ``CompiledProgram`` whose model was trained, ``exact=False``) (kept in this process, not saved: ``Result.held``)."""
        return self.held("stand_in")

    @property
    def accepted(self) -> bool:
        return self.interchange_accuracy >= 0.9 and self.strict_change <= self.eps

    def evidence(self) -> dict:
        return {"accuracy": self.accuracy, "interchange_accuracy": self.interchange_accuracy,
                "strict_change": self.strict_change, "accepted": self.accepted}

    def summary(self) -> str:
        return (f"SIIT on {self.program}: accuracy {self.accuracy:.3f}, interchange accuracy "
                f"{self.interchange_accuracy:.3f} over {len(self.circuit_nodes)} circuit nodes, patching the "
                f"{len(self.other_nodes)} others moves {self.strict_change:.1%} of outputs (ε {self.eps:.0%}): "
                f"{'ACCEPTED' if self.accepted else 'not accepted'} ({self.seconds:.0f} s)")

    def figure(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        for i, name in enumerate(("behaviour", "interchange", "strict"), start=1):
            ax.plot(self.values[:, 0].numpy(), self.values[:, i].numpy(), label=name)
        ax.set(xlabel="step", ylabel="loss", yscale="log", title=self.program)
        ax.legend()
        return fig


def _outputs(compiled: CompiledProgram, logits: torch.Tensor, rows: list[list[int]]) -> torch.Tensor:
    """[input tokens of all rows, outputs]: the output logits at every input token (BOS and the left
    padding of shorter rows left out)."""
    ids, _ = compiled.model.tokenize(rows)
    bos, pad = compiled.model.tokenizer.bos_token_id, compiled.model.tokenizer.pad_token_id
    keep = (ids != bos) & (ids != pad)
    return logits[keep.to(logits.device)][:, compiled.output_ids].float()


UNDEFINED = -100  # cross_entropy's ignore_index: where the compiled model outputs no value


def _labels(compiled: CompiledProgram, out: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """Output classes (categorical; ``UNDEFINED`` where an exact model has no value on — the program
    is undefined there, e.g. sort with repeated tokens) or values (numerical) of ``_outputs``."""
    if compiled.program.numerical:
        return out[:, 0]
    best = out.argmax(-1)
    return torch.where(out.max(-1).values > 0.5, best, UNDEFINED) if exact else best


def _loss(compiled: CompiledProgram, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if compiled.program.numerical:
        return torch.nn.functional.mse_loss(out[:, 0], target)
    if not bool((target != UNDEFINED).any()):
        return out.sum() * 0.0
    return torch.nn.functional.cross_entropy(out, target, ignore_index=UNDEFINED)


def _agree(compiled: CompiledProgram, got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """[positions where ``want`` is defined] whether ``got`` matches it."""
    if compiled.program.numerical:
        return (got - want).abs() < 0.02
    keep = want != UNDEFINED
    return got[keep] == want[keep]


def _mean(agree: torch.Tensor) -> float:
    return float(agree.float().mean()) if agree.numel() else 1.0


def train_siit(compiled: CompiledProgram, *, d_model: int = 64, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3,
               strict_weight: float = 1.0, eps: float = 0.05, seed: int = 0, log_every: int = 20,
               progress: bool = True) -> SIITTraining:
    """A trained stand-in for ``compiled`` whose true circuit is ``compiled.circuit()`` (same
    component names), and its training record; see the module docstring. Inputs have the
    program's lengths (a base and its source share one, so patched positions line up)."""
    from ..models.compiled import CompiledForCausalLM

    torch.manual_seed(seed)
    rng = random.Random(seed)
    high = compiled.model
    cfg = high.hf.config
    low_cfg = type(cfg)(**{**cfg.to_dict(), "hidden_size": d_model, "head_dim": max(cfg.head_dim, 8),
                           "intermediate_size": max(2 * cfg.intermediate_size, 16)})
    low = Model(CompiledForCausalLM(low_cfg), high.tokenizer, name=f"siit:{compiled.program.label}")
    low.hf.train()
    truth = compiled.circuit()
    senders = [n for n in _senders(high) if n != "embed"]
    inside = [n for n in senders if n in truth.nodes]
    outside = [n for n in senders if n not in truth.nodes]

    def draw(n: int) -> tuple[list[list[int]], list[list[int]]]:
        lengths = [rng.randint(1, compiled.max_len) for _ in range(n)]
        return tuple([compiled.ids([rng.choice(compiled.vocab) for _ in range(k)]) for k in lengths] for _ in range(2))

    def patched(model: Model, base, source, node: str, grad: bool = False) -> torch.Tensor:
        site, heads = node_site(node)
        with torch.no_grad():
            src = model.run(source, cache=[site]).cache[site]
        return model.run(base, interventions=[Patch(site, source=src, heads=heads)], differentiable=grad).logits

    opt = torch.optim.Adam(low.hf.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.1, 1 - s / steps))
    rows, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc=f"SIIT {compiled.program.label}", disable=not progress):
        base, source = draw(batch_size)
        node = rng.choice(inside)
        out = lambda logits: _outputs(compiled, logits, base)  # noqa: E731
        with torch.no_grad():
            target = _labels(compiled, out(high.run(base).logits))
            target_iit = _labels(compiled, out(patched(high, base, source, node)))
        behaviour = _loss(compiled, out(low.run(base, differentiable=True).logits), target)
        iit = _loss(compiled, out(patched(low, base, source, node, grad=True)), target_iit)
        strict = (_loss(compiled, out(patched(low, base, source, rng.choice(outside), grad=True)), target)
                  if outside else torch.zeros(()))
        loss = behaviour + iit + strict_weight * strict
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            rows.append([step, behaviour.item(), iit.item(), strict.item()])
    low.hf.eval()
    stand_in = replace(compiled, model=low, exact=False)
    acc, iit_acc, strict_change = _checks(compiled, stand_in, inside, outside, *draw(256))
    return SIITTraining(
        provenance=Provenance.of(low, program=compiled.program.label, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                 d_model=d_model, strict_weight=strict_weight),
        program=compiled.program.label, values=torch.tensor(rows, dtype=torch.float64), accuracy=acc,
        interchange_accuracy=iit_acc, strict_change=strict_change, eps=eps, circuit_nodes=inside, other_nodes=outside,
        seconds=time.perf_counter() - t0).hold("stand_in", stand_in)


def _senders(model: Model) -> list[str]:
    from ..circuits.graph import Graph

    return Graph.of(model).senders


def _checks(compiled: CompiledProgram, stand_in: CompiledProgram, inside: list[str], outside: list[str],
            base: list[list[int]], source: list[list[int]]) -> tuple[float, float, float]:
    """(accuracy against the compiled model, interchange accuracy averaged over circuit nodes, share of
    output positions that move when every non-circuit node is patched from the source at once)."""
    high, low = compiled.model, stand_in.model
    out = lambda logits, exact=False: _labels(compiled, _outputs(compiled, logits, base), exact)  # noqa: E731
    with torch.no_grad():
        want, got = out(high.run(base).logits, True), out(low.run(base).logits)
        acc = _mean(_agree(compiled, got, want))
        per_node = []
        for node in inside:
            site, heads = node_site(node)
            h_src = high.run(source, cache=[site]).cache[site]
            l_src = low.run(source, cache=[site]).cache[site]
            h = out(high.run(base, interventions=[Patch(site, source=h_src, heads=heads)]).logits, True)
            lo = out(low.run(base, interventions=[Patch(site, source=l_src, heads=heads)]).logits)
            per_node.append(_mean(_agree(compiled, lo, h)))
        strict = 0.0
        if outside:
            patches = []
            for node in outside:
                site, heads = node_site(node)
                patches.append(Patch(site, source=low.run(source, cache=[site]).cache[site], heads=heads))
            moved = out(low.run(base, interventions=patches).logits)
            strict = 1.0 - _mean(_agree(compiled, moved, got))
    return acc, sum(per_node) / len(per_node), strict
