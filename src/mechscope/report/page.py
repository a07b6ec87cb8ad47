"""HTML pages for specimens: the static report and the web app render with these same functions.

Every finding is drawn by its own result's ``html()``; pages are self-contained (inline CSS,
scripts and figures) and every piece of user text is escaped.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..archive.store import Finding, Specimen

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
header.top{display:flex;gap:1em;align-items:baseline;border-bottom:1px solid #ddd;margin-bottom:1em}
header.top a{color:#235;text-decoration:none;font-weight:600}
pre{background:#f5f5f5;padding:.6em;white-space:pre-wrap;border-radius:4px}
img{max-width:100%} table{border-collapse:collapse} td,th{border-bottom:1px solid #eee;padding:.25em .6em;text-align:left}
.tag{display:inline-block;background:#e8eef8;border-radius:3px;padding:0 .4em;margin-right:.3em;font-size:.9em}
article.finding{border:1px solid #ddd;border-radius:6px;padding:.2em 1em 1em;margin:1.2em 0}
.notes{border-left:3px solid #9ab;padding-left:.6em;color:#333}
.meta{color:#666;font-size:.9em} .graph-info,.attn-info{min-height:1.5em;font-family:monospace;color:#333}
form.search input{margin-right:.4em} .cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}
"""


def esc(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def page(title: str, body: str, nav: str = "") -> str:
    """A whole HTML document around ``body``."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{nav}{body}<footer class='meta'>mechscope {esc(_version())}</footer></body></html>")


def _version() -> str:
    from .. import __version__

    return __version__


def specimen_body(spec: "Specimen", version: int | None = None, link: str | None = None) -> str:
    """The specimen: model, behaviour, tags, each finding with its renderer, and the history."""
    cfg = spec.model_config
    model_line = (f"{esc(spec.model_name)} <span class='meta'>fingerprint {esc(spec.model_fingerprint)}</span>"
                  if spec.model_name else "<span class='meta'>no model recorded</span>")
    shape = ", ".join(f"{k} {esc(v)}" for k, v in cfg.items() if k != "family") if cfg else ""
    behaviour = " · ".join(x for x in (
        esc(spec.task), esc(spec.dataset),
        f"seed {spec.dataset_seed}" if spec.dataset_seed is not None else "",
        f"hash {esc(spec.dataset_hash)}" if spec.dataset_hash else "") if x) or "<span class='meta'>not recorded</span>"
    shown = spec.findings(version)
    title = f"<a href='{esc(link)}'>{esc(spec.name)}</a>" if link else esc(spec.name)
    parts = [
        f"<h1 class='specimen-name'>{title}</h1>",
        f"<p>{esc(spec.description)}</p>" if spec.description else "",
        "<table class='facts'>",
        f"<tr><th>model</th><td>{model_line}<br><span class='meta'>{esc(cfg.get('family', ''))} {shape}</span></td></tr>",
        f"<tr><th>behaviour</th><td>{behaviour}</td></tr>",
        f"<tr><th>tags</th><td>{''.join(f'<span class=tag>{esc(t)}</span>' for t in spec.tags) or '—'}</td></tr>",
        f"<tr><th>version</th><td>{version or spec.version} of {spec.version} · uid {esc(spec.uid)} · "
        f"updated {esc(spec.updated[:19])}</td></tr></table>",
        f"<h2>Findings ({len(shown)})</h2>",
        *(finding_html(f) for f in shown),
        history_html(spec),
    ]
    return "".join(parts)


def finding_html(f: "Finding") -> str:
    """One finding: its result's own renderer, notes, evidence and provenance."""
    result = f.result()
    png = f.file("figure.png")
    body = result.html(png=png) if png is not None else result.html()
    notes = f"<div class='notes'>{esc(f.notes)}</div>" if f.notes else ""
    evidence = "".join(f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v, default=str))}</td></tr>" for k, v in f.evidence.items())
    prov = result.provenance
    params = esc(json.dumps(prov.params, default=str))
    return (f"<article class='finding' id='f-{esc(f.uid)}' data-kind='{esc(f.kind)}'>{body}{notes}"
            + (f"<table class='evidence'><caption class='meta'>evidence</caption>{evidence}</table>" if evidence else "")
            + f"<details class='meta'><summary>provenance</summary>model {esc(prov.model)} ({esc(prov.fingerprint)}), "
              f"dataset {esc(prov.dataset)} hash {esc(prov.dataset_hash)} seed {esc(prov.seed)}, params {params}, "
              f"mechscope {esc(prov.version)}, {esc(prov.created)}; finding {esc(f.uid)}, added in v{f.added_in}</details>"
              "</article>")


def history_html(spec: "Specimen") -> str:
    rows = "".join(f"<tr><td>v{e.version}</td><td>{esc(e.time[:19])}</td><td>{esc(e.action)}</td><td>{esc(e.detail)}</td></tr>"
                   for e in spec.history())
    return f"<h2>History</h2><table class='history'>{rows}</table>"


def specimen_report(spec: "Specimen") -> str:
    """The static, self-contained report of a specimen."""
    return page(f"{spec.name} — mechscope specimen", specimen_body(spec))


def write_report(spec: "Specimen", path: str | os.PathLike) -> tuple[Path, float]:
    """Write the report; returns (path, seconds it took)."""
    t = time.perf_counter()
    text = specimen_report(spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path, time.perf_counter() - t


def specimen_rows(specs: Iterable["Specimen"], base: str = "/specimens/") -> str:
    rows = "".join(
        f"<tr class='specimen-row'><td><a href='{esc(base + s.uid)}'>{esc(s.name)}</a></td><td>{esc(s.model_name)}</td>"
        f"<td>{esc(s.task)}</td><td>{''.join(f'<span class=tag>{esc(t)}</span>' for t in s.tags)}</td>"
        f"<td>v{s.version}</td><td class='meta'>{esc(s.updated[:19])}</td></tr>" for s in specs)
    return ("<table class='specimens'><tr><th>specimen</th><th>model</th><th>task</th><th>tags</th><th>version</th>"
            f"<th>updated</th></tr>{rows}</table>")
