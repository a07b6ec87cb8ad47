"""Proofs about compiled MLPs: every input near a valid code decodes to the step's value.

A compiled MLP step (a Map, a SequenceMap, a SelectorWidth's decoder) with a categorical output is a
ReLU network from its input subspace(s) to its output subspace. For every valid code — the one-hot of
each input value (of each pair), or each possible number — the property is that *every* input in the
L∞ box of radius ε around the code (the whole box, not the codes alone) gives an output whose
largest entry is the step's value and exceeds 0.5 (what the next layers and the decoder read).
``verify.check`` decides it (branch and bound with CROWN, or exact MILP). The ``one`` and ``bos``
dimensions are held at their values away from BOS (1 and 0): nothing but the embedding writes them.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from ..verify.properties import Box, Property, Verdict, check
from .compiler import CompiledProgram, map_inputs
from .rasp import Map, SelectorWidth, SequenceMap, walk


def _codes(compiled: CompiledProgram, op, values: dict) -> tuple[list[int], list[tuple[torch.Tensor, Any]], float]:
    """(input dimensions, [(code over them, the step's value)], the smallest gap between numbers)."""
    layout = compiled.layout
    if isinstance(op, SequenceMap):
        dims = list(dict.fromkeys(layout.span(op.x.label) + layout.span(op.y.label)))
        codes = []
        for a, b in itertools.product(values[id(op.x)], values[id(op.y)]):
            if op.x is op.y and a != b:
                continue  # one SOp read twice holds one value
            code = torch.zeros(len(dims), dtype=torch.float64)
            code[dims.index(layout(op.x.label, a))] = 1
            code[dims.index(layout(op.y.label, b))] = 1
            codes.append((code, op.f(a, b)))
        return dims, codes, 1.0
    if isinstance(op, SelectorWidth):
        dims = [layout(f"{op.label}:scratch")]
        pairs = [(1 / (w + 1), w) for w in values[id(op)]]
    elif op.x.numerical:
        dims = [layout(op.x.label)]
        pairs = [(x, op.f(x)) for x in values[id(op.x)]]
    else:
        dims = layout.span(op.x.label)
        out = []
        for v in values[id(op.x)]:
            code = torch.zeros(len(dims), dtype=torch.float64)
            code[dims.index(layout(op.x.label, v))] = 1
            out.append((code, op.f(v)))
        return dims, out, 1.0
    xs = sorted(x for x, _ in pairs)
    gap = min((b - a for a, b in zip(xs, xs[1:])), default=1.0)
    return dims, [(torch.tensor([float(x)], dtype=torch.float64), g) for x, g in pairs], gap


def step_network(compiled: CompiledProgram, label: str, dims: list[int]) -> nn.Sequential:
    """The MLP units of step ``label`` as a network from residual dimensions ``dims`` to the step's
    output subspace (``one`` = 1 and ``bos`` = 0 folded into the first bias)."""
    _, layer, (lo, hi) = compiled.steps[label]
    mlp = compiled.model.hf.model.layers[layer].mlp
    out_label = label.removesuffix(":mlp")
    rows = compiled.layout.span(out_label)
    up = nn.Linear(len(dims), hi - lo).double()
    down = nn.Linear(hi - lo, len(rows), bias=False).double()
    with torch.no_grad():
        W, b = mlp.up_proj.weight.double(), mlp.up_proj.bias.double()
        up.weight.copy_(W[lo:hi][:, dims])
        up.bias.copy_(b[lo:hi] + W[lo:hi, compiled.layout("one")])
        down.weight.copy_(mlp.down_proj.weight.double()[rows][:, lo:hi])
    return nn.Sequential(up, nn.ReLU(), down)


def prove_mlps(compiled: CompiledProgram, eps: float = 0.1, *, method: str = "bab",
               timeout: float | None = 60.0) -> dict[str, Verdict]:
    """One verdict per MLP step with a categorical output: within L∞ ``eps`` of every code (for a
    numerical input: within a quarter of the smallest gap between its values, if smaller), the
    step's value is the largest output and above 0.5."""
    from .compiler import value_sets

    values = value_sets(compiled.program, compiled.vocab, compiled.max_len)
    out: dict[str, Verdict] = {}
    for op in walk(compiled.program):
        if not isinstance(op, (Map, SequenceMap, SelectorWidth)) or op.numerical:
            continue
        label = f"{op.label}:mlp" if isinstance(op, SelectorWidth) else op.label
        dims, codes, gap = _codes(compiled, op, values)
        radius = eps if gap >= 1.0 else min(eps, gap / 4)
        classes = values[id(op)]
        cases = []
        for code, value in codes:
            if value is None:
                continue
            k, n = classes.index(value), len(classes)
            disjuncts = []
            for j in range(n):
                if j != k:  # fails if y_value − y_j ≤ 0
                    A = torch.zeros(1, n, dtype=torch.float64)
                    A[0, k], A[0, j] = 1.0, -1.0
                    disjuncts.append((A, torch.zeros(1, dtype=torch.float64)))
            A = torch.zeros(1, n, dtype=torch.float64)
            A[0, k] = 1.0  # ... or if y_value ≤ 0.5
            disjuncts.append((A, torch.full((1,), 0.5, dtype=torch.float64)))
            cases.append((Box.linf(code, radius), disjuncts))
        if not cases or isinstance(op, Map) and not op.x.numerical and not map_inputs(op, values):
            continue
        prop = Property(cases, f"{label}: every input within L∞ {radius:.3g} of its {len(cases)} codes decodes to its value")
        out[label] = check(step_network(compiled, label, dims), prop, method, timeout=timeout)
    return out
