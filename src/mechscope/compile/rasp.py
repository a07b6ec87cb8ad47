"""A small RASP (Weiss et al. 2021, as tracr writes it): programs over sequences, in plain Python.

Sequence operations (SOps) — ``tokens``, ``indices``, ``Full(c)``, ``Map(f, x)``, ``SequenceMap(f, x,
y)``, ``Aggregate(selector, x)``, ``SelectorWidth(selector)`` — and selectors, ``Select(keys, queries,
predicate)``. Each SOp is *categorical* (one value out of a finite set: compiled as a one-hot
subspace) or *numerical* (a number: one residual dimension); ``numerical=True`` on ``Map``, ``Full``
and ``Aggregate`` asks for the latter. ``evaluate(program, xs)`` is the reference interpreter
(the compiled model must agree with it). Semantics follow tracr: a selector's entry ``[q][k]`` is
``predicate(key[k], query[q])``; a numerical Aggregate is the mean of the selected values (0 when
none is selected); a categorical Aggregate is the one value its selected positions share (None
when none is selected; an error when they differ).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

_ids = itertools.count()


class RASPError(ValueError):
    """A program that cannot be evaluated or compiled, naming the step."""


class Comparison(enum.Enum):
    """Selector predicates, called as ``predicate(key, query)``."""

    EQ = "=="
    NEQ = "!="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    TRUE = "true"
    FALSE = "false"

    def __call__(self, key: Any, query: Any) -> bool:
        if self is Comparison.TRUE:
            return True
        if self is Comparison.FALSE:
            return False
        if key is None or query is None:
            return False
        return {"==": key == query, "!=": key != query, "<": key < query, "<=": key <= query,
                ">": key > query, ">=": key >= query}[self.value]


@dataclass(eq=False)
class SOp:
    """A sequence operation; ``label`` names it in the compiled model's residual layout and circuit."""

    label: str = field(default="", kw_only=True)
    numerical: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"{type(self).__name__.lower()}_{next(_ids)}"

    def named(self, label: str) -> "SOp":
        """Rename (returns self, for chaining): labels show in layouts, circuits and errors."""
        self.label = label
        return self

    @property
    def children(self) -> list["SOp"]:
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"


@dataclass(eq=False, repr=False)
class Tokens(SOp):
    """The input tokens."""


@dataclass(eq=False, repr=False)
class Indices(SOp):
    """Each position's index, 0 for the first input token."""


@dataclass(eq=False, repr=False)
class Full(SOp):
    """The same value at every position."""

    value: Any = 0


@dataclass(eq=False, repr=False)
class Map(SOp):
    """``f`` applied to every position's value of ``x``."""

    f: Callable[[Any], Any] = None
    x: SOp = None

    @property
    def children(self) -> list[SOp]:
        return [self.x]


@dataclass(eq=False, repr=False)
class SequenceMap(SOp):
    """``f(x, y)`` position by position (both categorical)."""

    f: Callable[[Any, Any], Any] = None
    x: SOp = None
    y: SOp = None

    @property
    def children(self) -> list[SOp]:
        return [self.x, self.y]


@dataclass(eq=False)
class Select:
    """A selector: query position q selects key position k when ``predicate(keys[k], queries[q])``."""

    keys: SOp
    queries: SOp
    predicate: Comparison
    label: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"select_{next(_ids)}"
        if not isinstance(self.predicate, Comparison):
            raise RASPError(f"Select {self.label!r}: predicate {self.predicate!r} is not a Comparison "
                            f"({', '.join(c.name for c in Comparison)})")


@dataclass(eq=False, repr=False)
class Aggregate(SOp):
    """Each query position's mean (numerical) or shared value (categorical) of ``x`` over the key
    positions ``selector`` selects."""

    selector: Select = None
    x: SOp = None

    @property
    def children(self) -> list[SOp]:
        return [self.selector.keys, self.selector.queries, self.x]


@dataclass(eq=False, repr=False)
class SelectorWidth(SOp):
    """How many key positions ``selector`` selects for each query position (categorical)."""

    selector: Select = None

    @property
    def children(self) -> list[SOp]:
        return [self.selector.keys, self.selector.queries]


tokens = Tokens(label="tokens")
indices = Indices(label="indices")


def walk(program: SOp) -> list[SOp]:
    """Every SOp the program depends on, each once, dependencies before dependants."""
    order: list[SOp] = []
    seen: set[int] = set()

    def visit(op: SOp) -> None:
        if id(op) in seen:
            return
        seen.add(id(op))
        for child in op.children:
            visit(child)
        order.append(op)

    visit(program)
    return order


def selection(selector: Select, values: dict[int, list]) -> list[list[bool]]:
    """``[query][key]`` of ``selector`` given evaluated ``values`` by SOp id."""
    keys, queries = values[id(selector.keys)], values[id(selector.queries)]
    return [[selector.predicate(k, q) for k in keys] for q in queries]


def evaluate(program: SOp, xs: Sequence[Any]) -> list:
    """The program's output on the input sequence ``xs`` (the reference semantics)."""
    return evaluate_all(program, xs)[id(program)]


def evaluate_all(program: SOp, xs: Sequence[Any]) -> dict[int, list]:
    """Every step's values on ``xs``, by SOp id."""
    values: dict[int, list] = {}
    n = len(xs)
    for op in walk(program):
        if isinstance(op, Tokens):
            out = list(xs)
        elif isinstance(op, Indices):
            out = list(range(n))
        elif isinstance(op, Full):
            out = [op.value] * n
        elif isinstance(op, Map):
            out = [None if v is None else op.f(v) for v in values[id(op.x)]]
        elif isinstance(op, SequenceMap):
            out = [None if a is None or b is None else op.f(a, b) for a, b in zip(values[id(op.x)], values[id(op.y)])]
        elif isinstance(op, SelectorWidth):
            out = [sum(row) for row in selection(op.selector, values)]
        elif isinstance(op, Aggregate):
            out = []
            x = values[id(op.x)]
            for q, row in enumerate(selection(op.selector, values)):
                chosen = [x[k] for k, on in enumerate(row) if on]
                if op.numerical:
                    out.append(sum(chosen) / len(chosen) if chosen else 0)
                elif not chosen:
                    out.append(None)
                elif any(c != chosen[0] for c in chosen):
                    raise RASPError(f"categorical Aggregate {op.label!r} selects differing values {sorted(set(map(str, chosen)))} "
                                    f"at position {q} of {list(xs)!r}: make it numerical or select one position")
                else:
                    out.append(chosen[0])
        else:
            raise RASPError(f"{op!r} is not a RASP operation")
        values[id(op)] = out
    return values
