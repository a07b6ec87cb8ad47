"""The Python blocks of the README and the documentation pages (docs/), run as a user runs them and checked
against the output they print.

A block is every ```python fence of a page, in order (README.md first, then docs/ page by page). A statement followed directly (no blank line) by comment lines claims that output:
an expression shows its repr, as at a prompt, unless it prints; an assignment ``x = ...`` shows x's repr;
anything else shows what it prints.
Expected output is compared token by token:

- text must match exactly (runs of whitespace are one space); ``...`` stands for any text;
- a number must agree to within two units of its last printed digit or 2 % (what another CPU's float
  summation order can move), and is not compared at all in timings (``0.024 s``, ``(26 s)``,
  ``tokens/s``) or where the README says the run trains (see below);
- a remark after two spaces in parentheses at the end of a line (``    (unpatched: ...)``) is a comment
  for the reader, not output.

HTML comments just above a fence steer the runner (GitHub does not render them):

- ``<!-- tour: skip REASON -->`` does not run the block (it needs files the suite does not have, or
  torchrun); the reason is shown by the test;
- ``<!-- tour: trained -->``: the block trains from a seed, so its numbers ride on the CPU's float
  trajectory: only the text is compared;
- ``<!-- tour: setup COMMAND -->`` runs the shell command first, in the tour's folder (a CLI call that
  writes files the block reads).
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

NUMBER = re.compile(r"[-+−]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?%?")
STANDALONE = r"(?<![\w.])"  # a number, not the digits of a name (L23H4, blocks.12, a23.h3)
TIMING = re.compile(r"^\s*(?:s\b|ms\b|seconds\b|min\b|tokens/s\b)")
REMARK = re.compile(r"\s{2,}\((?:[^()]|\([^()]*\))*\)\s*$")
DIRECTIVE = re.compile(r"<!--\s*tour:\s*(skip|trained|setup)\s*(.*?)\s*-->")


@dataclass
class Block:
    """One ```python fence: where it starts (1-based line of its first code line), its heading, its code
    and what the comments above it ask."""

    line: int
    heading: str
    code: str
    skip: str | None = None
    trained: bool = False
    setup: list[str] = field(default_factory=list)
    page: str = "README.md"

    @property
    def name(self) -> str:
        return f"{self.page}:L{self.line} {self.heading}"


ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[Path]:
    """README.md, then every Markdown page of docs/ (sorted)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(readme: Path) -> list[Block]:
    page = readme.resolve().relative_to(ROOT).as_posix() if readme.resolve().is_relative_to(ROOT) else readme.name
    lines = readme.read_text().splitlines()
    found, heading, directives, i = [], "", [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        match = DIRECTIVE.search(line)
        if match:
            directives.append(match.groups())
        if line.strip() == "```python":
            start, i = i + 1, i + 1
            while lines[i].strip() != "```":
                i += 1
            block = Block(start + 1, heading, _doctest_as_comments(textwrap.dedent("\n".join(lines[start:i]) + "\n")),
                          page=page)
            for kind, value in directives:
                if kind == "skip":
                    block.skip = value or "no reason given"
                elif kind == "trained":
                    block.trained = True
                else:
                    block.setup.append(value)
            found.append(block)
            directives = []
        elif line.strip().startswith("```"):
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                i += 1
            directives = []
        i += 1
    return found


def _doctest_as_comments(code: str) -> str:
    """A doctest-style block (``>>> x`` then its output) as the tour's style (``x`` then ``# output``), line
    for line, so README line numbers still hold."""
    if not code.lstrip().startswith(">>> "):
        return code
    out = []
    for line in code.splitlines():
        if line.startswith((">>> ", "... ")) or line in (">>>", "..."):
            out.append(line[4:])
        else:
            out.append("# " + line if line.strip() else "")
    return "\n".join(out) + "\n"


@dataclass
class Claim:
    """A statement's printed output as the README shows it, and what the code printed."""

    line: int  # README line of the statement's first line
    source: str
    expected: str
    actual: str
    output_lines: tuple[int, int] = (0, 0)  # README lines (1-based, end exclusive) of the expected output


def _expected_after(code_lines: list[str], end: int) -> tuple[str, int]:
    """The comment lines right after a statement that ends on line `end` (0-based, exclusive): its output."""
    out, i = [], end
    while i < len(code_lines) and code_lines[i].lstrip().startswith("#"):
        out.append(code_lines[i].lstrip()[1:].removeprefix(" "))
        i += 1
    return "\n".join(out), i


def _is_print(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "print"


def run_block(block: Block, namespace: dict) -> list[Claim]:
    """Run a block statement by statement in `namespace`; return each claimed output beside the printed one."""
    code_lines = block.code.splitlines()
    tree = ast.parse(block.code)
    claims = []
    for node in tree.body:
        expected, end = _expected_after(code_lines, node.end_lineno)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            if isinstance(node, ast.Expr) and not _is_print(node):
                value = eval(compile(ast.Expression(node.value), block.name, "eval"), namespace)
                if value is not None:
                    print(repr(value))
            else:
                exec(compile(ast.Module([node], []), block.name, "exec"), namespace)
                if expected and isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    print(repr(namespace[node.targets[0].id]))  # `x = f()` above its output shows x
        if expected:
            source = "\n".join(code_lines[node.lineno - 1 : node.end_lineno])
            claims.append(Claim(block.line + node.lineno - 1, source, expected, buffer.getvalue(),
                                (block.line + node.end_lineno, block.line + end)))
    return claims


def _value(token: str) -> float:
    return float(token.replace("−", "-").replace(",", "").rstrip("%"))


def _unit(token: str) -> float:
    """One unit of the last printed digit."""
    mantissa = token.replace("−", "-").rstrip("%").lower().split("e")
    digits = mantissa[0].split(".")
    unit = 10.0 ** -(len(digits[1]) if len(digits) > 1 else 0)
    return unit * (10.0 ** int(mantissa[1]) if len(mantissa) > 1 else 1.0)


def _numbers(text: str, standalone: bool) -> re.Pattern:
    """Where the numbers of `text` are: standalone ones only, or every run of digits."""
    body = NUMBER.pattern
    return re.compile((STANDALONE + "(" + body + r")(?![\w])") if standalone else "(" + body + ")")


def _close(expected: str, actual: str) -> bool:
    """Integers exactly; decimals to two units of the last printed digit or 2 %."""
    try:
        e, a = _value(expected), _value(actual)
    except ValueError:
        return expected == actual
    if not (math.isfinite(e) and math.isfinite(a)):
        return e == a
    if not re.search(r"[.e]", expected.lower()):
        return e == a
    return abs(a - e) <= max(2 * _unit(expected), 0.02 * abs(e))


def compare(expected: str, actual: str, numbers: bool = True) -> str | None:
    """None when `actual` is what `expected` shows; else a sentence saying where they part."""
    expected = "\n".join(REMARK.sub("", line) for line in expected.splitlines())
    pattern, checks = "", []  # a regex over the printed text, and for each number group its expected token
    numbers_in = _numbers(expected, standalone=numbers)
    for piece in re.split(r"(\.\.\.|…)", expected):
        if piece in ("...", "…"):
            pattern += r"[\s\S]*?"
            continue
        parts = numbers_in.split(piece)  # text, number, text, number, ...
        for i, part in enumerate(parts):
            if i % 2 == 0:
                for word in re.split(r"(\s+)", part):
                    pattern += r"\s*" if word.isspace() else re.escape(word)
            elif not any(c.isdigit() for c in part):
                pattern += re.escape(part)
            else:
                timing = bool(TIMING.match(parts[i + 1])) if i + 1 < len(parts) else False
                if numbers and not timing:
                    pattern += "(" + NUMBER.pattern + ")"
                    checks.append(part)
                else:
                    pattern += "(?:" + NUMBER.pattern + ")"
    match = re.fullmatch(r"\s*" + pattern + r"\s*", actual)
    if match is None:
        return f"the printed text differs:\n--- README\n{expected}\n--- printed\n{actual.rstrip()}"
    for token, got in zip(checks, match.groups()):
        if not _close(token, got):
            return f"the README shows {token} where the code prints {got}:\n--- printed\n{actual.rstrip()}"
    return None


def update(readme: Path, only: list[str]) -> None:
    """Rewrite a page's claimed outputs that differ from what the code prints now, block by block (those
    whose name contains one of ``only``; all when empty), in one namespace per block as the suite runs them.
    The page is written after each block; a block that raises is reported and left as it is. The README's
    first block defines ``model``; on another page every block starts from ``ms`` and the embedded model."""
    import traceback

    import mechscope as ms

    model = None
    for index in range(len(blocks(readme))):
        block = blocks(readme)[index]  # read again: line numbers move as outputs are rewritten
        if block.skip or (only and index and not any(o in block.name for o in only)):
            continue
        print(f"== {block.name}", flush=True)
        first = index == 0 and readme.name == "README.md"
        if not first and model is None:
            model = ms.load("smollm2-135m")
        namespace = {} if first else {"ms": ms, "model": model}
        try:
            for command in block.setup:
                subprocess.run([sys.executable, "-m", "mechscope", *command.split()[1:]], check=True)
            claims = run_block(block, namespace)
        except Exception:
            traceback.print_exc()
            continue
        if first:
            model = namespace["model"]
        lines = readme.read_text().splitlines()
        for claim in sorted(claims, key=lambda c: -c.output_lines[0]):
            if compare(claim.expected, claim.actual, numbers=not block.trained) is not None:
                start, end = claim.output_lines
                lines[start - 1:end - 1] = ["# " + line if line else "#" for line in claim.actual.rstrip("\n").splitlines()]
                print(f"README line {claim.line}: {claim.source.splitlines()[0][:80]}", flush=True)
        readme.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":  # python tests/readme_tour.py [PAGE.md] [BLOCK ...]: bring a page's outputs up to date
    import os

    args = sys.argv[1:]
    readme = Path(args.pop(0)).resolve() if args and args[0].endswith(".md") else ROOT / "README.md"
    os.chdir(tempfile.mkdtemp())
    update(readme, args)
