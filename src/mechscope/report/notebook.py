"""Results in a notebook (Jupyter, VS Code): ``Result._repr_mimebundle_`` gives the same content as the
result's page fragment — summary, figure, tables — and its interactive viewers working in the output cell.

The viewers run in an ``<iframe srcdoc>`` holding the result's standalone page (the vendored scripts and
styles inlined, its content security policy kept, ``sandbox="allow-scripts"``), so an exported notebook
works offline. Front ends that sanitise untrusted outputs (a freshly cloned notebook's saved outputs in
JupyterLab) drop the frame and every script: the fragment itself — escaped as the pages are, no script —
is carried beside the frame as the fallback, and a small script shows the frame in its place where scripts
run. The page inside tells the cell its height (``mechscope.js``)."""

from __future__ import annotations

import secrets
from typing import Any

from markupsafe import Markup, escape

FRAME_HEIGHT = 480  # px until the page inside reports its own


def framed(title: str, fragment: Markup, doc: str) -> str:
    """``fragment`` (script-free) as the fallback beside a frame holding ``doc``, its standalone page."""
    key = "mechscope-" + secrets.token_hex(6)
    return (f'<div class="mechscope-output" id="{key}">'
            f'<div class="mechscope-fallback">{fragment}</div>'
            f'<iframe class="mechscope-frame" hidden sandbox="allow-scripts" title="{escape(title)}" '
            f'style="width:100%;height:{FRAME_HEIGHT}px;border:0" srcdoc="{escape(str(doc))}"></iframe>'
            "<script>(function () {"
            f'var root = document.getElementById("{key}");'
            'var frame = root.querySelector("iframe.mechscope-frame");'
            'root.querySelector(".mechscope-fallback").style.display = "none"; frame.hidden = false;'
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
