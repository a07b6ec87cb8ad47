"""Argument checks shared by every analysis: one clear error naming the value and what is valid."""

from __future__ import annotations

from typing import Any


def positive_int(value: Any, name: str, what: str = "") -> int:
    """``value`` if it is an integer ≥ 1 (not a bool), else ``ValueError`` naming ``name``
    (``what`` says what it counts, e.g. "prompts per forward")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: {what + ' ' if what else ''}must be an integer ≥ 1")
    return value


def indices(spec: str, what: str = "index", size: int | None = None) -> list[int]:
    """``"3,17,40-42"`` → [3, 17, 40, 41, 42]: the one parser of index lists and ranges (features,
    channels, layers). With ``size``, each must lie in 0..size − 1. ``ValueError`` naming the text."""
    out: list[int] = []
    for part in str(spec).split(","):
        a, dash, b = part.strip().partition("-")
        if not a.isdigit() or (dash and not b.isdigit()):
            raise ValueError(f"{what} list {spec!r}: write numbers and ranges like 17, 3,17 or 40-42")
        lo, hi = int(a), int(b) if dash else int(a)
        if hi < lo:
            raise ValueError(f"{what} range {part.strip()!r} in {spec!r} runs backwards: write {hi}-{lo}")
        out += range(lo, hi + 1)
    if size is not None:
        bad = [i for i in out if not 0 <= i < size]
        if bad:
            raise ValueError(f"{what} {bad[0]} in {spec!r} is out of range: valid are 0..{size - 1}")
    return out

