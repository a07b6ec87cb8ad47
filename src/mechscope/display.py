"""How plain objects (a model, a dictionary) show in a notebook: a titled table of their fields, escaped,
with nothing to run. (Results, specimens and their viewers: ``report.notebook``.)"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence


def fields_html(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    """``rows`` of (name, value) as a table under ``title``."""
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f'<section class="result"><h3>{escape(title)}</h3><table class="fields">{body}</table></section>'
