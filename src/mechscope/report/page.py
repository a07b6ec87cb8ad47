"""HTML pages for specimens: the static report and the web app render with these same functions.

Every finding is drawn by its own result's ``html()``; everything comes from the autoescaped
templates of ``report/templates`` (see ``render``). A standalone page (a report, a CLI page)
inlines the package's static script and style sheet and allows exactly those by hash; a served
page links them from ``/static``. Figures are the PNGs stored with each finding — a page never
draws one.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from markupsafe import Markup

from ..files import write_atomic
from .render import render, standalone_policy, static_text

if TYPE_CHECKING:
    from ..archive.specimens import Finding, Specimen

LIBRARY = "cytoscape.min.js"  # cytoscape.js 3.35.0 (MIT, vendored from npm): the attribution-graph viewer
MAX_CACHED = 256  # rendered finding fragments kept per process (oldest dropped first)
_BODIES: dict[tuple, tuple[object, Markup]] = {}
_LOCK = threading.Lock()


def page(title: str, body: str, *, served: bool = False, writable: bool = False) -> str:
    """A whole HTML document around ``body`` (a rendered fragment; a plain ``str`` is escaped).
    ``served``: for the web app (navigation bar, scripts from ``/static``); else standalone."""
    from .. import __version__

    libraries = [LIBRARY] if 'data-viewer="agraph"' in str(body) else []  # only pages with a graph viewer carry it
    return render("page.html", title=title, body=body, standalone=not served, writable=writable if served else None,
                  version=__version__, policy=standalone_policy(libraries), css=Markup(static_text("mechscope.css")),
                  js=Markup(static_text("mechscope.js")), libraries=libraries,
                  library_js=[Markup(static_text(name)) for name in libraries])


def specimen_body(spec: "Specimen", version: int | None = None, link: str | None = None,
                  served: bool = False) -> Markup:
    """The specimen: model, behaviour, tags, each finding with its renderer, and the history.
    ``served``: the page is the server's (links to its feature browser)."""
    shown = [finding_view(f, served) for f in spec.findings(version)]
    return render("specimen.html", spec=spec, version=version, link=link, findings=shown, history=spec.history(),
                  served=served)


def finding_view(f: "Finding", served: bool = False) -> dict:
    """What the specimen template shows of one finding: its result's fragment (with the stored
    figure, never a fresh drawing), notes, evidence and provenance. ``served``: the figure is loaded from
    the server's ``/files/HASH`` (a standalone report inlines it)."""
    key = (f.archive.url, f.uid, tuple(sorted(f.files.items())), f.data_digest, served)  # what it shows
    cached = _BODIES.get(key)
    if cached is None:  # a finding's result and files never change once stored: render it once
        result = f.result()
        figure = f"/files/{f.files['figure.png'][0]}" if served and "figure.png" in f.files else f.file("figure.png")
        cached = (result.provenance, result.html(png=figure, draw=False))
        with _LOCK:
            _BODIES[key] = cached
            while len(_BODIES) > MAX_CACHED:
                _BODIES.pop(next(iter(_BODIES)))
    provenance, body = cached
    return {"uid": f.uid, "kind": f.kind, "notes": f.notes, "evidence": f.evidence, "added_in": f.added_in,
            "provenance": provenance, "body": body}


def specimen_report(spec: "Specimen") -> str:
    """The static, self-contained report of a specimen."""
    return page(f"{spec.name} — mechscope specimen", specimen_body(spec))


def write_report(spec: "Specimen", path: str | os.PathLike) -> tuple[Path, float]:
    """Write the report; returns (path, seconds it took)."""
    t = time.perf_counter()
    text = specimen_report(spec)
    path = write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path, time.perf_counter() - t


def library_cards(specs: Iterable["Specimen"]) -> list[dict]:
    """What the index shows of each specimen: its headline figure (the first current finding that
    stored one), a one-line summary (that finding's, else the first finding's), its result types."""
    cards = []
    for spec in specs:
        found = spec.findings()
        head = next((f for f in found if "figure.png" in f.files), found[0] if found else None)
        cards.append({"uid": spec.uid, "name": spec.name, "model": spec.model_name, "task": spec.task,
                      "tags": spec.tags, "version": spec.version, "updated": spec.updated,
                      "kinds": sorted({f.kind for f in found}),
                      "figure": head.files["figure.png"][0] if head is not None and "figure.png" in head.files else None,
                      "headline": head.title if head is not None else "",
                      "summary": (head.summary.strip().splitlines() or [""])[0] if head is not None else ""})
    return cards
