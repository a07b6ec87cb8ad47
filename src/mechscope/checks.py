"""Argument checks shared by every analysis: one clear error naming the value and what is valid."""

from __future__ import annotations

from typing import Any


def positive_int(value: Any, name: str, what: str = "") -> int:
    """``value`` if it is an integer ≥ 1 (not a bool), else ``ValueError`` naming ``name``
    (``what`` says what it counts, e.g. "prompts per forward")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: {what + ' ' if what else ''}must be an integer ≥ 1")
    return value
