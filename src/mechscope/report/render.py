"""Rendering: every page and result fragment comes from an autoescaped Jinja2 template.

Escaping is the default, not a per-call duty: any value a template prints is escaped unless it is
``Markup`` (fragments rendered here, the package's own static files). Pages carry no inline
script and no inline style attribute: the viewer script and style sheet are static files of the
package (``report/static``), served by the web app or, in a standalone report, inlined verbatim
and allowed by their hashes in the page's Content-Security-Policy. Values a script needs travel in
``<script type="application/json">`` blocks or ``data-`` attributes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

ENV = Environment(loader=PackageLoader("mechscope.report", "templates"), autoescape=True,
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
ENV.filters["png_uri"] = lambda png: png if isinstance(png, str) else "data:image/png;base64," + base64.b64encode(png).decode()
# (a str is the URL a served page loads the stored figure from: figures are served by reference, not inlined)
ENV.filters["fmt"] = lambda value, spec: format(value, spec)  # {{ x | fmt("+.3g") }}
ENV.filters["repr"] = repr
ENV.globals["zip"] = zip


def render(template: str, **context: Any) -> Markup:
    """The template rendered with ``context`` (safe to embed in another template)."""
    return Markup(ENV.get_template(template).render(**context))


@functools.cache
def static_text(name: str) -> str:
    """A static file of the package (``mechscope.js``, ``mechscope.css``)."""
    return resources.files("mechscope.report").joinpath("static", name).read_text(encoding="utf-8")


def source_hash(text: str) -> str:
    """The CSP source expression allowing an inline element whose content is exactly ``text``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def standalone_policy(libraries: list[str] | tuple[str, ...] = ()) -> str:
    """The policy of a standalone page: its own script, the vendored ``libraries`` it inlines and
    its styles (each by hash) and inline images, nothing else."""
    scripts = " ".join(source_hash(static_text(name)) for name in [*libraries, "mechscope.js"])
    return (f"default-src 'none'; script-src {scripts}; "
            f"style-src {source_hash(static_text('mechscope.css'))}; img-src data:; base-uri 'none'; form-action 'none'")
