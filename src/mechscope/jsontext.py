"""JSON text as the project writes it for others: standard JSON (no ``NaN``/``Infinity`` tokens, which
browsers, ``jq`` and strict parsers refuse), with a non-finite float written explicitly as
``{"__float__": "nan" | "inf" | "-inf"}``; ``loads`` reads those back as floats."""

from __future__ import annotations

import json
import math
from typing import Any

NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists, tuples) replaced by its explicit form."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"__float__": "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"}
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Standard JSON of ``value``, non-finite floats explicit (``allow_nan=False`` holds by construction)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def _decode(obj: dict) -> Any:
    if len(obj) == 1 and obj.get("__float__") in NON_FINITE:
        return NON_FINITE[obj["__float__"]]
    return obj


def loads(text: str | bytes) -> Any:
    """Read ``dumps``'s text back: explicit non-finite floats become floats again."""
    return json.loads(text, object_hook=_decode)
