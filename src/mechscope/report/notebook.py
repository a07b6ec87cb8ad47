"""Results in a notebook (Jupyter, VS Code): ``Result._repr_mimebundle_`` gives the same content as the
result's page fragment — summary, figure, tables — and its interactive viewers working in the output cell.

The viewers run in an ``<iframe sandbox="allow-scripts">`` holding the result's standalone page (the vendored
scripts and styles inlined, its content security policy kept), so an exported notebook works offline. The
fragment is stored once: it is the cell's script-free fallback — escaped as the pages are — and a small script
builds the frame's page from it (the page's head and tail, which it carries as strings, around the fallback's
markup), then shows the frame in its place. Front ends that sanitise untrusted outputs (a freshly cloned
notebook's saved outputs in JupyterLab) drop the script and show the fallback: summary, static figure,
tables. The page inside tells the cell its height (``mechscope.js``)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from markupsafe import Markup, escape

FRAME_HEIGHT = 480  # px until the page inside reports its own


def _js_string(text: str) -> str:
    """``text`` as a JavaScript string literal safe inside an HTML ``<script>`` (no ``<``, ``>`` or ``&``)."""
    return json.dumps(text).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def framed(title: str, fragment: Markup, doc: str) -> str:
    """``fragment`` (script-free) as the fallback, and a frame that a script fills with ``doc``, its standalone
    page, rebuilt around the fallback's markup (``doc`` must hold ``fragment`` exactly once)."""
    head, found, tail = str(doc).partition(str(fragment))
    if not found or str(fragment) in tail:
        raise ValueError(f"the page of {title!r} must hold its fragment exactly once")
    key = "mechscope-" + secrets.token_hex(6)
    return (f'<div class="mechscope-output" id="{key}">'
            f'<div class="mechscope-fallback">{fragment}</div>'
            f'<iframe class="mechscope-frame" hidden sandbox="allow-scripts" title="{escape(title)}" '
            f'style="width:100%;height:{FRAME_HEIGHT}px;border:0"></iframe>'
            "<script>(function () {"
            f'var root = document.getElementById("{key}");'
            'var fallback = root.querySelector(".mechscope-fallback");'
            'var frame = root.querySelector("iframe.mechscope-frame");'
            f"frame.srcdoc = {_js_string(head)} + fallback.innerHTML + {_js_string(tail)};"
            'fallback.style.display = "none"; frame.hidden = false;'
            'window.addEventListener("message", function (e) {'
            'if (e.source === frame.contentWindow && e.data && e.data["mechscope-height"]) {'
            'frame.style.height = (e.data["mechscope-height"] + 16) + "px"; } });'
            "})();</script></div>")


def notebook_html(result: Any) -> str:
    """The ``text/html`` of a result in a notebook (see the module docstring)."""
    from .page import page

    fragment = Markup(result.html())
    return framed(result.title, fragment, page(result.title, fragment))


def specimen_html(spec: Any) -> str:
    """The ``text/html`` of a specimen in a notebook: its report, framed like a result."""
    from .page import specimen_body, specimen_report

    return framed(spec.name, specimen_body(spec), specimen_report(spec))
