"""Read properties written in VNNLIB (the VNN-COMP format, an SMT-LIB subset).

A file declares inputs ``X_i`` and outputs ``Y_j`` (``(declare-const X_0 Real)``) and asserts
linear comparisons between them, combined with ``and`` / ``or``; the assertions describe a
**violation**: the property fails when some input satisfies all of them. The assertions are
brought to disjunctive normal form; each term's input comparisons must be bounds on single inputs
(a box), its output comparisons become rows A y ≤ b; terms are grouped by box into a ``Property``.
Strict comparisons are read as non-strict (a proof of the closed condition's absence also proves
the open one's). ``=`` is two rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .properties import Box, Property

_TOKEN = re.compile(r";[^\n]*|\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")
MAX_TERMS = 100_000
MAX_VARIABLES = 1_000_000  # inputs or outputs: an index past this is a typo or a hostile file, not a network
MAX_DEPTH = 200  # nesting of ( ... ): the reader recurses on it


class VNNLibError(ValueError):
    """A VNNLIB file that cannot be read (with the line and what was expected)."""


def _parse(text: str) -> list:
    """S-expressions of the file: nested lists of atoms (str)."""
    stack: list[list] = [[]]
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok.startswith(";"):
            continue
        if tok == "(":
            if len(stack) > MAX_DEPTH:
                raise VNNLibError(f"expressions nested deeper than {MAX_DEPTH} levels at line "
                                  f"{text.count(chr(10), 0, m.start()) + 1}")
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise VNNLibError(f"unbalanced ')' at line {text.count(chr(10), 0, m.start()) + 1}")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise VNNLibError("unbalanced '(': the file ends inside an expression")
    return stack[0]


def _linear(expr, declared: set[str]) -> dict[str, float]:
    """A linear arithmetic expression as {variable: coefficient, "": constant}."""
    if isinstance(expr, str):
        if expr in declared:
            return {expr: 1.0}
        try:
            return {"": float(expr)}
        except ValueError:
            raise VNNLibError(f"unknown symbol {expr!r}: declare it with (declare-const {expr} Real)") from None
    if not expr:
        raise VNNLibError("empty expression ()")
    op, args = expr[0], [_linear(a, declared) for a in expr[1:]]

    def combine(terms, signs):
        out: dict[str, float] = {}
        for t, s in zip(terms, signs):
            for k, v in t.items():
                out[k] = out.get(k, 0.0) + s * v
        return out

    if op == "+":
        return combine(args, [1.0] * len(args))
    if op == "-":
        return combine(args, [-1.0]) if len(args) == 1 else combine(args, [1.0] + [-1.0] * (len(args) - 1))
    if op == "*":
        const = [a for a in args if set(a) <= {""}]
        var = [a for a in args if not set(a) <= {""}]
        if len(var) > 1:
            raise VNNLibError(f"non-linear product {_show(expr)}: only constants may multiply variables")
        scale = 1.0
        for c in const:
            scale *= c.get("", 0.0)
        return {k: scale * v for k, v in (var[0] if var else {"": 1.0}).items()}
    raise VNNLibError(f"unsupported arithmetic {op!r} in {_show(expr)}; valid: + - * and numbers")


def _show(expr) -> str:
    return expr if isinstance(expr, str) else "(" + " ".join(_show(e) for e in expr) + ")"


def _dnf(expr, declared: set[str]) -> list[list[dict[str, float]]]:
    """A boolean expression as a list of terms, each a list of atoms Σ c·v + const ≤ 0."""
    if isinstance(expr, str) or not expr:
        raise VNNLibError(f"expected a comparison, 'and' or 'or'; got {_show(expr)}")
    op = expr[0]
    if op in ("and", "or"):
        parts = [_dnf(e, declared) for e in expr[1:]]
        if op == "or":
            return [t for p in parts for t in p]
        terms: list[list] = [[]]
        for p in parts:
            terms = [a + b for a in terms for b in p]
            if len(terms) > MAX_TERMS:
                raise VNNLibError(f"the assertions expand to more than {MAX_TERMS} cases")
        return terms
    if op in ("<=", "<", ">=", ">", "="):
        if len(expr) != 3:
            raise VNNLibError(f"comparison {_show(expr)} needs two sides")
        lhs, rhs = _linear(expr[1], declared), _linear(expr[2], declared)
        diff = {k: lhs.get(k, 0.0) - rhs.get(k, 0.0) for k in set(lhs) | set(rhs)}  # lhs − rhs
        neg = {k: -v for k, v in diff.items()}
        if op in ("<=", "<"):
            return [[diff]]
        if op in (">=", ">"):
            return [[neg]]
        return [[diff, neg]]
    raise VNNLibError(f"unsupported {op!r} in {_show(expr)}; valid: and, or, <=, <, >=, >, =")


def read_vnnlib(source: str | Path, name: str | None = None) -> Property:
    """The property in a VNNLIB file (a path) or string (text containing '(')."""
    if isinstance(source, str) and "(" in source:
        text = source
    else:
        try:
            text = Path(source).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise VNNLibError(f"{source} is not UTF-8 text (byte {e.start}): not a VNNLIB file") from None
    name = name or (Path(source).stem if not (isinstance(source, str) and "(" in source) else "vnnlib property")
    declared: dict[str, tuple[str, int]] = {}
    terms: list[list] = [[]]
    for cmd in _parse(text):
        if not isinstance(cmd, list) or not cmd:
            raise VNNLibError(f"expected (declare-const ...) or (assert ...); got {_show(cmd)}")
        if cmd[0] == "declare-const":
            if len(cmd) != 3 or not isinstance(cmd[1], str) or not _VAR.match(cmd[1]):
                raise VNNLibError(f"{_show(cmd)}: variables are X_<i> (inputs) or Y_<j> (outputs)")
            kind, i = _VAR.match(cmd[1]).groups()
            if int(i) >= MAX_VARIABLES:
                raise VNNLibError(f"{cmd[1]}: variable indices go up to {MAX_VARIABLES - 1}")
            declared[cmd[1]] = (kind, int(i))
        elif cmd[0] == "assert":
            if len(cmd) != 2:
                raise VNNLibError(f"{_show(cmd)[:80]}: assert takes one expression")
            new = _dnf(cmd[1], set(declared))
            terms = [a + b for a in terms for b in new]
            if len(terms) > MAX_TERMS:
                raise VNNLibError(f"the assertions expand to more than {MAX_TERMS} cases")
        else:
            raise VNNLibError(f"unsupported command {cmd[0]!r}; valid: declare-const, assert")
    n_in = 1 + max([i for k, i in declared.values() if k == "X"], default=-1)
    n_out = 1 + max([i for k, i in declared.values() if k == "Y"], default=-1)
    if not n_in or not n_out:
        raise VNNLibError(f"the file declares {n_in} inputs (X_i) and {n_out} outputs (Y_j); both are needed")
    cases: dict[tuple, list] = {}
    for term in terms:
        lo, hi = torch.full((n_in,), -torch.inf, dtype=torch.float64), torch.full((n_in,), torch.inf, dtype=torch.float64)
        rows, feasible = [], True
        for atom in term:
            const = atom.get("", 0.0)
            vars_ = {k: v for k, v in atom.items() if k and v != 0.0}
            kinds = {declared[k][0] for k in vars_}
            if not vars_:
                feasible &= const <= 0
            elif kinds == {"X"}:
                if len(vars_) != 1:
                    raise VNNLibError(f"input condition on {sorted(vars_)}: only bounds on single inputs are supported")
                (var, c), = vars_.items()
                i, bound = declared[var][1], -const / c
                if c > 0:
                    hi[i] = min(float(hi[i]), bound)
                else:
                    lo[i] = max(float(lo[i]), bound)
            elif kinds == {"Y"}:
                row = torch.zeros(n_out, dtype=torch.float64)
                for k, v in vars_.items():
                    row[declared[k][1]] += v
                rows.append((row, -const))
            else:
                raise VNNLibError(f"a condition mixes inputs and outputs ({sorted(vars_)}): not supported")
        if not feasible or (lo > hi).any():
            continue  # this term can never hold
        unbounded = [f"X_{i}" for i in range(n_in) if not (torch.isfinite(lo[i]) and torch.isfinite(hi[i]))]
        if unbounded:
            raise VNNLibError(f"{', '.join(unbounded[:5])} {'has' if len(unbounded) == 1 else 'have'} no lower or "
                              "upper bound: every input needs both")
        if not rows:  # no output condition: any input of the box violates the property
            rows = [(torch.zeros(n_out, dtype=torch.float64), 0.0)]
        A = torch.stack([r for r, _ in rows])
        b = torch.tensor([v for _, v in rows], dtype=torch.float64)
        cases.setdefault((tuple(lo.tolist()), tuple(hi.tolist())), []).append((A, b))
    if not cases:
        raise VNNLibError("the assertions can never hold together: the property is vacuously true")
    return Property([(Box(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)), d)
                     for (lo, hi), d in cases.items()], name)


def write_vnnlib(prop: Property, path: str | Path | None = None) -> str:
    """The property as VNNLIB text (written to ``path`` when given)."""
    n_in = prop.cases[0][0].lower.numel()
    n_out = prop.cases[0][1][0][0].shape[1]
    lines = [f"; {prop.name}"] + [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]

    def row_text(row, b):
        terms = [f"(* {float(c)!r} Y_{j})" for j, c in enumerate(row.tolist()) if c != 0.0]
        lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})" if terms else "0.0"
        return f"(<= {lhs} {float(b)!r})"

    cases = []
    for box, disjuncts in prop.cases:
        bounds = [f"(>= X_{i} {float(v)!r})" for i, v in enumerate(box.lower.flatten().tolist())]
        bounds += [f"(<= X_{i} {float(v)!r})" for i, v in enumerate(box.upper.flatten().tolist())]
        for A, b in disjuncts:
            cases.append("(and " + " ".join(bounds + [row_text(r, v) for r, v in zip(A, b)]) + ")")
    lines.append("(assert (or\n  " + "\n  ".join(cases) + "))")
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
