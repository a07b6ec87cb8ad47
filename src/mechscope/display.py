"""How plain objects (a model, a dictionary) show in a notebook: a titled table of their fields, escaped,
with nothing to run. (Results, specimens and their viewers: ``report.notebook``.)"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence


def fields_html(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    """``rows`` of (name, value) as a table under ``title``."""
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f'<section class="result"><h3>{escape(title)}</h3><table class="fields">{body}</table></section>'


def table_html(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], *, more: int = 0) -> str:
    """``rows`` under column names ``header``, titled; ``more``: rows left out, said below the table."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    tail = f"<p>and {more:,} more</p>" if more else ""
    return (f'<section class="result"><h3>{escape(title)}</h3><table class="fields"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{tail}</section>")
