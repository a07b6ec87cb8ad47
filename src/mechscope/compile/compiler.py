"""Compile a RASP program (``rasp.py``) into the weights of a ``mechscope_compiled`` HF model.

The residual stream is split into named subspaces: ``one`` (1 at every position but padding),
``bos`` (1 at the BOS position, which every compiled input starts with), and per SOp one dimension
per value (categorical: one-hot) or one dimension (numerical). Tokens, indices and constants are
embedded; every other SOp is placed at the first sublayer after its inputs are ready (attention,
then MLP, in each layer) — as in tracr:

- ``Aggregate``: one head. QK: the query's one-hot × the predicate table × the key's one-hot, times
  ``coldness`` (softmax ≈ uniform over the selected keys), plus ``coldness``/2 on the BOS key, so
  a query that selects nothing attends to BOS (whose value is 0). OV copies the one-hot (or the
  number) into the Aggregate's subspace. Numerical Aggregates take 0/1 values only.
- ``SelectorWidth``: a head that scores BOS like a selected key and reads BOS's ``bos`` dimension,
  giving 1/(w+1); the same layer's MLP decodes that number into the one-hot of w.
- ``Map`` / ``SequenceMap`` on categorical inputs: one ReLU unit per input value (per pair) — none
  for a value whose output is None (or 0, for a numerical Map) — exact on the finite input set; ``Map`` on a numerical input: a step function with two units per gap
  between its sorted input values. Every unit is kept off at BOS.

The model's vocabulary is ``<bos> <pad> <unk>``, the input tokens, then output values that are not
input tokens (``<num>`` for a numerical output); its logits at a position are the output SOp's
subspace read out. ``CompiledProgram`` runs and decodes it and ``verify`` checks it against the
interpreter on every input up to ``max_len`` (or a sample).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .. import names
from .rasp import (Aggregate, Full, Indices, Map, RASPError, SelectorWidth, SequenceMap, SOp, Tokens, evaluate,
                   evaluate_all, selection, walk)
from ..models.sites import block_site

if TYPE_CHECKING:
    from ..models.model import Model

SPECIAL = ("<bos>", "<pad>", "<unk>")
NUM = "<num>"


@dataclass
class Layout:
    """The residual stream's named dimensions: (label, value) per dimension (value None: numerical)."""

    dims: list[tuple[str, Any]] = field(default_factory=lambda: [("one", None), ("bos", None)])

    def __post_init__(self) -> None:
        self.index = {d: i for i, d in enumerate(self.dims)}

    def add(self, label: str, values: Sequence[Any] | None) -> None:
        for v in ([None] if values is None else values):
            self.index[(label, v)] = len(self.dims)
            self.dims.append((label, v))

    def __call__(self, label: str, value: Any = None) -> int:
        return self.index[(label, value)]

    def span(self, label: str) -> list[int]:
        """Every dimension of one subspace."""
        return [i for i, (name, _) in enumerate(self.dims) if name == label]


def _ordered(values) -> list:
    return sorted(values, key=lambda v: (str(type(v)), v))


def value_sets(program: SOp, vocab: Sequence[Any], max_len: int) -> dict[int, list]:
    """Every SOp's possible values (by id), from the vocabulary and the longest input."""
    out: dict[int, list] = {}
    for op in walk(program):
        try:
            if isinstance(op, Tokens):
                vals = set(vocab)
            elif isinstance(op, Indices):
                vals = set(range(max_len))
            elif isinstance(op, Full):
                vals = {op.value}
            elif isinstance(op, Map):
                vals = {op.f(v) for v in out[id(op.x)]}
            elif isinstance(op, SequenceMap):
                vals = {op.f(a, b) for a in out[id(op.x)] for b in out[id(op.y)]}
            elif isinstance(op, SelectorWidth):
                vals = set(range(max_len + 1))
            elif isinstance(op, Aggregate):
                x = op.x
                if op.numerical != x.numerical:
                    raise RASPError(f"Aggregate {op.label!r}: a {'numerical' if op.numerical else 'categorical'} "
                                    f"Aggregate of the {'numerical' if x.numerical else 'categorical'} {x.label!r}: "
                                    "both must be numerical or both categorical")
                if op.numerical:
                    if not set(out[id(x)]) <= {0, 1}:
                        raise RASPError(f"Aggregate {op.label!r}: a numerical Aggregate averages 0/1 values only; "
                                        f"{x.label!r} takes {_ordered(out[id(x)])[:6]}")
                    vals = {k / n for n in range(1, max_len + 1) for k in range(n + 1)}
                else:
                    vals = set(out[id(x)])
            else:
                raise RASPError(f"{op!r} is not a RASP operation")
        except RASPError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's function failed on a value
            raise RASPError(f"{type(op).__name__} {op.label!r} fails on one of its input values: {err!r}") from None
        vals.discard(None)
        if op.numerical and not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            raise RASPError(f"{op.label!r} is numerical but takes non-numbers {_ordered(map(str, vals))[:6]}")
        out[id(op)] = _ordered(vals)
    return out


def _kind(op: SOp) -> str:
    if isinstance(op, (Tokens, Indices, Full)):
        return "embed"
    if isinstance(op, (Map, SequenceMap)):
        return "mlp"
    return "attn"  # Aggregate; SelectorWidth (its MLP follows in the same layer)


def schedule(program: SOp) -> dict[int, int]:
    """Each SOp's sublayer (by id): attention of layer l is 2l, its MLP 2l + 1; embedded SOps -1."""
    finish: dict[int, int] = {}
    place: dict[int, int] = {}
    for op in walk(program):
        kind = _kind(op)
        if kind == "embed":
            place[id(op)], finish[id(op)] = -1, 0
            continue
        ready = max(finish[id(c)] for c in op.children)
        s = ready + (ready % 2 == (0 if kind == "mlp" else 1))  # first sublayer of the right kind
        place[id(op)] = s
        finish[id(op)] = s + (2 if isinstance(op, SelectorWidth) else 1)
    return place


@dataclass
class CompiledProgram:
    """A compiled program: its mechscope ``model``, the residual ``layout``, and where each step runs
    (``steps``: label → ("attn", layer, head) or ("mlp", layer, hidden units)). Call it on a list of
    tokens (or a batch of lists) for the decoded outputs. (``layout`` and ``transcoders`` describe
    the compiled weights, not a trained stand-in's.)"""

    program: SOp
    model: Any
    layout: Layout
    steps: dict[str, tuple]
    vocab: list
    max_len: int
    causal: bool
    output_ids: list[int]
    output_values: list
    exact: bool = True  # compiled weights; False for a trained stand-in (``siit``): outputs are argmaxes

    def writer(self, op: SOp) -> str:
        """The component-graph sender that writes ``op``'s subspace: ``embed``, a head or an MLP."""
        if _kind(op) == "embed":
            return "embed"
        kind, layer, where = self.steps[op.label if not isinstance(op, SelectorWidth) else f"{op.label}:mlp"]
        return (names.head(layer, where) if kind == "attn" else names.mlp(layer)).node

    def circuit(self):
        """The true circuit, by construction: every head and MLP that implements a step, and every
        edge that carries one of its inputs (a ``Circuit`` in the component graph's names, score 1).
        Heads and step-function MLPs also read ``one`` / ``bos`` from the embedding (the BOS
        mechanism), so ``embed`` → their query, key (and a SelectorWidth's value) are true edges."""
        from ..circuits.circuit import Circuit
        from ..circuits.graph import Graph
        from ..results import Provenance

        edges: set[tuple[str, str]] = set()
        for op in walk(self.program):
            if _kind(op) == "embed":
                continue
            if isinstance(op, (Aggregate, SelectorWidth)):
                _, layer, h = self.steps[op.label]
                head = names.head(layer, h).node
                edges |= {(self.writer(op.selector.keys), f"{head}.k"), (self.writer(op.selector.queries), f"{head}.q"),
                          ("embed", f"{head}.k"), ("embed", f"{head}.q")}
                if isinstance(op, SelectorWidth):
                    edges |= {("embed", f"{head}.v"), (head, self.writer(op)), ("embed", self.writer(op))}
                else:
                    edges.add((self.writer(op.x), f"{head}.v"))
            else:
                mlp = self.writer(op)
                edges |= {(self.writer(c), mlp) for c in op.children}
                if isinstance(op, Map) and op.x.numerical:
                    edges.add(("embed", mlp))  # its step units read one and bos
        edges.add((self.writer(self.program), "logits"))
        graph = Graph.of(self.model)
        ordered = sorted(edges, key=lambda e: graph.edge_index(*e))  # also checks each is an edge of the graph
        nodes = sorted({a for a, _ in ordered} | {graph.node_of(b) for _, b in ordered},
                       key=lambda n: (n != "embed", n == "logits", n))
        steps = {label: list(place) for label, place in self.steps.items()}
        return Circuit(provenance=Provenance.of(self.model, program=self.program.label, max_len=self.max_len,
                                                causal=self.causal),
                       nodes=nodes, edges=[[a, b, 1.0] for a, b in ordered], method="compiled (ground truth)",
                       extra={"steps": steps, "task": f"compiled:{self.program.label}"})

    def transcoders(self) -> list:
        """Each layer's MLP as a transcoder whose latents are its ReLU units (``blocks.L.mlp.in`` →
        ``blocks.L.mlp.out``): exact, so attribution graphs of a compiled model have no error."""
        return mlp_transcoders(self.model)

    def ids(self, xs: Sequence[Any]) -> list[int]:
        """[BOS, token ids]; a clear error for a token outside the vocabulary or too long an input."""
        if len(xs) > self.max_len:
            raise ValueError(f"input of {len(xs)} tokens; this program was compiled for at most {self.max_len}")
        vocab = self.model.tokenizer.get_vocab()
        bad = [x for x in xs if str(x) not in vocab or x not in self.vocab]
        if bad:
            raise ValueError(f"tokens {bad[:5]} are not in the program's vocabulary {self.vocab}")
        return [vocab["<bos>"]] + [vocab[str(x)] for x in xs]

    def decode(self, logits: torch.Tensor) -> list:
        """[pos, vocab] logits (without BOS) → output values (categorical: None where no value is on)."""
        out = logits[:, self.output_ids]
        if self.program.numerical:
            return [float(v) for v in out[:, 0]]
        best = out.argmax(-1)
        return [self.output_values[int(b)] if float(out[i, b]) > 0.5 or not self.exact else None
                for i, b in enumerate(best)]

    def __call__(self, xs: Sequence[Any] | Sequence[Sequence[Any]]) -> list:
        batch = bool(xs) and isinstance(xs[0], (list, tuple))
        rows = list(xs) if batch else [xs]
        with torch.no_grad():
            logits = self.model.run([self.ids(r) for r in rows]).logits
        outs = [self.decode(logits[i, logits.shape[1] - len(r):]) for i, r in enumerate(rows)]
        return outs if batch else outs[0]

    def verify(self, limit: int = 20_000, seed: int = 0, batch_size: int = 512) -> dict:
        """Compare with the interpreter on every input of length 1..max_len (or ``limit`` random ones
        when there are more): {"checked", "undefined" (the interpreter refuses), "mismatches" [first 5]}."""
        total = sum(len(self.vocab) ** n for n in range(1, self.max_len + 1))
        if total <= limit:
            inputs = [list(t) for n in range(1, self.max_len + 1) for t in itertools.product(self.vocab, repeat=n)]
        else:
            rng = random.Random(seed)
            inputs = [[rng.choice(self.vocab) for _ in range(rng.randint(1, self.max_len))] for _ in range(limit)]
        checked, undefined, n_wrong, wrong = 0, 0, 0, []
        for i in range(0, len(inputs), batch_size):
            chunk, want = [], []
            for xs in inputs[i:i + batch_size]:
                try:
                    want.append(evaluate(self.program, xs))
                    chunk.append(xs)
                except RASPError:
                    undefined += 1
            for xs, got, expected in zip(chunk, self(chunk) if chunk else [], want):
                checked += 1
                same = (all(abs(g - (e or 0)) < 1e-4 for g, e in zip(got, expected)) if self.program.numerical
                        else got == expected)
                if not same:
                    n_wrong += 1
                    if len(wrong) < 5:
                        wrong.append({"input": xs, "model": got, "program": expected})
        return {"checked": checked, "undefined": undefined, "exhaustive": total <= limit, "mismatches": wrong,
                "n_mismatches": n_wrong}


def compile_program(program: SOp, vocab: Sequence[Any], max_len: int, *, causal: bool = False,
                    coldness: float = 100.0, name: str | None = None) -> CompiledProgram:
    """Compile ``program`` for inputs over ``vocab`` of up to ``max_len`` tokens (see the module
    docstring). ``causal``: the model's attention sees only earlier positions; a program whose
    selectors read later positions is refused (the check runs the interpreter on sample inputs)."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from ..models.model import Model
    from ..models.compiled import CompiledConfig, CompiledForCausalLM

    vocab = list(dict.fromkeys(vocab))
    if not vocab or max_len < 1:
        raise RASPError(f"vocab {vocab!r}, max_len {max_len}: need a non-empty vocabulary and max_len ≥ 1")
    names = [str(v) for v in vocab]
    if len(set(names)) != len(names) or any(n in SPECIAL or n == NUM or not n or any(c.isspace() for c in n) for n in names):
        raise RASPError(f"vocab {vocab!r}: tokens must be distinct as strings, non-empty, without spaces and not "
                        f"{SPECIAL + (NUM,)}")
    ops = walk(program)
    values = value_sets(program, vocab, max_len)
    place = schedule(program)
    if causal:
        _check_causal(program, vocab, max_len)
    labels = [op.label for op in ops]
    if len(set(labels)) != len(labels):
        raise RASPError(f"labels {sorted({x for x in labels if labels.count(x) > 1})} name several steps: rename one")
    layout = Layout()
    for op in ops:
        layout.add(op.label, None if op.numerical else values[id(op)])
        if isinstance(op, SelectorWidth):
            layout.add(f"{op.label}:scratch", None)
    n_layers = max(1, max((place[id(op)] + (2 if isinstance(op, SelectorWidth) else 1) + 1) // 2 for op in ops))
    heads = {l: [op for op in ops if _kind(op) == "attn" and place[id(op)] == 2 * l] for l in range(n_layers)}
    for op in ops:
        for sel in [op.selector] if isinstance(op, (Aggregate, SelectorWidth)) else []:
            for side in (sel.keys, sel.queries):
                if side.numerical:
                    raise RASPError(f"Select {sel.label!r}: {side.label!r} is numerical; selector keys and queries "
                                    "must be categorical")
    d_head = max([1] + [max(len(values[id(op.selector.keys)]) + 1, 1 if op.numerical or isinstance(op, SelectorWidth)
                            else len(values[id(op.x)])) for l in heads for op in heads[l]])
    units = {id(op): _units(op, values) for op in ops if _kind(op) == "mlp" or isinstance(op, SelectorWidth)}
    mlp_at = lambda op: place[id(op)] + (1 if isinstance(op, SelectorWidth) else 0)  # noqa: E731
    d_mlp = max([1] + [sum(units[id(op)] for op in ops if id(op) in units and mlp_at(op) == 2 * l + 1)
                       for l in range(n_layers)])
    out_values = values[id(program)]
    tokens = list(SPECIAL) + names + ([NUM] if program.numerical else [str(v) for v in out_values if str(v) not in names])
    tok_id = {t: i for i, t in enumerate(tokens)}
    D, H = len(layout.dims), max(1, max(len(h) for h in heads.values()))
    cfg = CompiledConfig(vocab_size=len(tokens), hidden_size=D, num_hidden_layers=n_layers, num_attention_heads=H,
                         head_dim=d_head, intermediate_size=d_mlp, max_position_embeddings=max_len + 1, causal=causal,
                         bos_token_id=0, pad_token_id=1, eos_token_id=None)
    hf = CompiledForCausalLM(cfg)
    for p in hf.parameters():
        torch.nn.init.zeros_(p)
    W = {"tok": torch.zeros(len(tokens), D), "pos": torch.zeros(max_len + 1, D)}
    W["tok"][0, [layout("one"), layout("bos")]] = 1
    consts = [op for op in ops if isinstance(op, Full)]
    for v, n in zip(vocab, names):
        row = W["tok"][tok_id[n]]
        row[layout("one")] = 1
        if any(isinstance(op, Tokens) for op in ops):
            row[layout(program_label(ops, Tokens), v)] = 1
        for c in consts:
            row[layout(c.label, None if c.numerical else c.value)] = float(c.value) if c.numerical else 1
    if any(isinstance(op, Indices) for op in ops):
        for p in range(max_len):
            W["pos"][p + 1, layout(program_label(ops, Indices), p)] = 1
    steps: dict[str, tuple] = {}
    used = {l: 0 for l in range(n_layers)}
    for l in range(n_layers):
        block = hf.model.layers[l]
        attn, mlp = block.self_attn, block.mlp
        for h, op in enumerate(heads[l]):
            _head(op, h, d_head, attn, layout, values, coldness)
            steps[op.label] = ("attn", l, h)
        for op in [o for o in ops if id(o) in units and mlp_at(o) == 2 * l + 1]:
            n = units[id(op)]
            _mlp(op, range(used[l], used[l] + n), mlp, layout, values)
            steps[op.label if not isinstance(op, SelectorWidth) else f"{op.label}:mlp"] = ("mlp", l, (used[l], used[l] + n))
            used[l] += n
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(W["tok"])
        hf.model.embed_positions.weight.copy_(W["pos"])
        if program.numerical:
            hf.lm_head.weight[tok_id[NUM], layout(program.label)] = 1
        else:
            for v in out_values:
                hf.lm_head.weight[tok_id[str(v)], layout(program.label, v)] = 1
    tk = Tokenizer(models.WordLevel(tok_id, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>")
    model = Model(hf, tokenizer, name=name or f"compiled:{program.label}")
    output_ids = [tok_id[NUM]] if program.numerical else [tok_id[str(v)] for v in out_values]
    return CompiledProgram(program, model, layout, steps, vocab, max_len, causal, output_ids, out_values)


def program_label(ops: list[SOp], kind: type) -> str:
    return next(op.label for op in ops if isinstance(op, kind))


def _check_causal(program: SOp, vocab: list, max_len: int, samples: int = 2000) -> None:
    """Refuse (naming the selector) a program whose selectors pick a later key on sample inputs."""
    rng = random.Random(0)
    selectors = {id(op.selector): op.selector for op in walk(program) if isinstance(op, (Aggregate, SelectorWidth))}
    for _ in range(samples):
        xs = [rng.choice(vocab) for _ in range(rng.randint(1, max_len))]
        try:
            vals = evaluate_all(program, xs)
        except RASPError:
            continue
        for sel in selectors.values():
            rows = selection(sel, vals)
            if any(rows[q][k] for q in range(len(xs)) for k in range(q + 1, len(xs))):
                raise RASPError(f"Select {sel.label!r} picks later positions (on {xs!r}): compile with causal=False")


def _units(op: SOp, values: dict[int, list]) -> int:
    if isinstance(op, SequenceMap):
        return len(values[id(op.x)]) * len(values[id(op.y)])
    if isinstance(op, SelectorWidth):
        return 1 + 2 * (len(values[id(op)]) - 1)
    if op.x.numerical:
        return 1 + 2 * (len(values[id(op.x)]) - 1)
    return len(map_inputs(op, values))


def map_inputs(op: Map, values: dict[int, list]) -> list:
    """The input values a categorical Map needs a unit for: all with an output (numerical: non-zero)."""
    return [v for v in values[id(op.x)] if op.f(v) is not None and not (op.numerical and op.f(v) == 0)]


def _head(op: SOp, h: int, d_head: int, attn, layout: Layout, values: dict[int, list], coldness: float) -> None:
    """One head implementing an Aggregate or the attention half of a SelectorWidth."""
    sel = op.selector
    keys, queries = values[id(sel.keys)], values[id(sel.queries)]
    base = h * d_head
    Wq, Wk, Wv, Wo = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight
    with torch.no_grad():
        for j, kv in enumerate(keys):
            Wk[base + j, layout(sel.keys.label, kv)] = 1
            for qv in queries:
                if sel.predicate(kv, qv):
                    Wq[base + j, layout(sel.queries.label, qv)] = coldness
        j = len(keys)  # the BOS column: always a candidate (half a match for Aggregate, a full one for SelectorWidth)
        Wk[base + j, layout("bos")] = 1
        Wq[base + j, layout("one")] = coldness if isinstance(op, SelectorWidth) else coldness / 2
        if isinstance(op, SelectorWidth):
            Wv[base, layout("bos")] = 1
            Wo[layout(f"{op.label}:scratch"), base] = 1
        elif op.numerical:
            Wv[base, layout(op.x.label)] = 1
            Wo[layout(op.label), base] = 1
        else:
            for j, v in enumerate(values[id(op.x)]):
                Wv[base + j, layout(op.x.label, v)] = 1
                Wo[layout(op.label, v), base + j] = 1


def _mlp(op: SOp, units: range, mlp, layout: Layout, values: dict[int, list]) -> None:
    """Hidden ``units`` of one MLP implementing a Map, a SequenceMap or a SelectorWidth's decoder."""
    up, bias, down = mlp.up_proj.weight, mlp.up_proj.bias, mlp.down_proj.weight
    u = list(units)

    def write(unit: int, value: Any, weight: float) -> None:
        if value is None:
            return
        if op.numerical:
            down[layout(op.label), unit] += weight * float(value)
        else:
            down[layout(op.label, value), unit] += weight

    with torch.no_grad():
        if isinstance(op, SequenceMap):
            for k, (a, b) in enumerate(itertools.product(values[id(op.x)], values[id(op.y)])):
                up[u[k], layout(op.x.label, a)] += 1
                up[u[k], layout(op.y.label, b)] += 1
                bias[u[k]] = -1
                write(u[k], op.f(a, b), 1)
        elif isinstance(op, Map) and not op.x.numerical:
            for k, v in enumerate(map_inputs(op, values)):
                up[u[k], layout(op.x.label, v)] = 1
                write(u[k], op.f(v), 1)
        else:  # a step function of one number: Map of a numerical SOp, or SelectorWidth's 1/(w+1)
            if isinstance(op, SelectorWidth):
                xs = sorted((1 / (w + 1), w) for w in values[id(op)])
                source = layout(f"{op.label}:scratch")
            else:
                xs = [(x, op.f(x)) for x in values[id(op.x)]]
                source = layout(op.x.label)
            xs.sort()
            big = 1e3 * (1 + max(abs(x) for x, _ in xs))
            up[u[0], layout("one")], up[u[0], layout("bos")] = 1, -1
            write(u[0], xs[0][1], 1)
            for i in range(len(xs) - 1):
                (x0, g0), (x1, g1) = xs[i], xs[i + 1]
                slope, t = 2 / (x1 - x0), (x0 + x1) / 2
                a, b = u[1 + 2 * i], u[2 + 2 * i]
                for unit, shift in ((a, 0.5), (b, -0.5)):
                    up[unit, source] = slope
                    up[unit, layout("bos")] = -big * slope
                    bias[unit] = shift - slope * t
                write(a, g1, 1), write(b, g1, -1), write(a, g0, -1), write(b, g0, 1)


def mlp_transcoders(model: Model) -> list:
    """A compiled model's MLPs as transcoders whose latents are their ReLU units (``blocks.L.mlp.in`` →
    ``blocks.L.mlp.out``), exact: a model compiled here or loaded from a folder ``mechscope compile --dir``
    wrote. Any other model is refused (its MLPs are not one ReLU layer; train transcoders for it)."""
    from ..models.compiled import MODEL_TYPE as COMPILED_TYPE
    from ..sae.config import SAEConfig
    from ..sae.dictionary import SparseCoder

    if getattr(model.hf.config, "model_type", None) != COMPILED_TYPE:
        raise ValueError(f"{model.name} is a {getattr(model.hf.config, 'model_type', type(model.hf).__name__)} model, "
                         f"not a compiled program ({COMPILED_TYPE}): only a compiled model's MLPs are exact "
                         "transcoders; give trained ones (--transcoders DIR)")
    out = []
    for layer, block in enumerate(model.hf.model.layers):
        up, down = block.mlp.up_proj, block.mlp.down_proj
        cfg = SAEConfig("relu", up.in_features, up.out_features, d_out=down.out_features,
                        site=block_site(layer, "mlp.in"), target_site=block_site(layer, "mlp.out"), model=model.name)
        weights = {"W_enc": up.weight.detach(), "b_enc": up.bias.detach(), "W_dec": down.weight.detach().T,
                   "b_dec": torch.zeros(down.out_features)}
        out.append(SparseCoder(cfg, weights=weights).eval())
    return out


def compile_example(name: str, max_len: int | None = None, causal: bool | None = None) -> "CompiledProgram":
    """One of ``PROGRAMS`` compiled, named ``compiled:NAME`` (its vocabulary and length, non-causal where it
    reads later positions, unless ``max_len`` / ``causal`` say otherwise)."""
    from .programs import PROGRAMS

    if name not in PROGRAMS:
        raise ValueError(f"unknown program {name!r}; the examples are {', '.join(PROGRAMS)}")
    make, vocab, default_len, non_causal = PROGRAMS[name]
    return compile_program(make(), vocab, default_len if max_len is None else max_len,
                           causal=not non_causal if causal is None else causal, name=f"compiled:{name}")
