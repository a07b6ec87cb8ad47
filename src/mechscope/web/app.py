"""`mechscope serve`: browse, search and compare specimens (FastAPI on uvicorn).

Pages use the report's renderers; ``/api/...`` is a JSON API described by ``/openapi.json``.
Read-only unless created with ``writable=True``. Files are served only by their sha256 from the
archive's content-addressed store, so no path outside the archive can be reached.

Requests must name this server in their ``Host`` header (loopback names, the bound host and any
``hosts`` given), which defeats DNS rebinding; on a writable server a request that changes
something and carries an ``Origin`` must come from one of those hosts too (no cross-site writes).
Every response carries a strict Content-Security-Policy (scripts and styles only from this
server's ``/static``, which holds the package's own viewer files; no inline script or style),
``nosniff`` and frame denial; stored files are served under a sandboxing policy, so an SVG that
holds a script cannot run it. Pages show the figures stored with each finding; none is drawn per
request.
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from markupsafe import Markup
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..archive.blobs import HASH_RE, BlobError
from ..archive.database import ArchiveError
from ..archive.specimens import Finding, Specimen
from ..archive.store import Archive
from ..report.page import library_cards, page, specimen_body
from ..report.render import render, static_text

MEDIA = {"tensors": "application/octet-stream", "figure.png": "image/png", "figure.svg": "image/svg+xml"}
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC = {"mechscope.js": "text/javascript", "mechscope.css": "text/css", "cytoscape.min.js": "text/javascript"}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
FILE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"  # stored files: never a script
CARD_KINDS = ("FeatureCards", "NeuronCards")  # findings the feature browser opens
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def create_app(archive: Archive, writable: bool = False, hosts: Iterable[str] = ()) -> FastAPI:
    """The app. ``hosts``: names besides the loopback ones that requests may give in ``Host``
    (the address a server bound to a non-loopback interface is reached by)."""
    app = FastAPI(title="mechscope", version="1", docs_url=None, redoc_url=None,
                  description="Browse the mechscope specimen archive.")
    allowed = sorted({*LOOPBACK, *(h for h in hosts if h not in ("0.0.0.0", "::", ""))})

    @app.middleware("http")
    async def guard(request: Request, call_next):
        origin = request.headers.get("origin")
        if writable and request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None \
                and urlsplit(origin).hostname not in {h.strip("[]") for h in allowed}:
            return PlainTextResponse(f"refused: a change requested from {origin!r}, not from this server", 403)
        response = await call_next(request)
        response.headers.update(HEADERS)
        files = request.url.path.startswith("/files/")
        response.headers["Content-Security-Policy"] = FILE_POLICY if files else PAGE_POLICY
        return response

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed)  # outermost: checked first

    def get(uid: str) -> Specimen:
        try:
            return archive.get(uid)
        except ArchiveError as err:
            raise HTTPException(404, str(err)) from None

    def finding_of(uid: str, fid: str) -> tuple[Specimen, Finding]:
        spec = get(uid)
        try:
            return spec, spec.finding(fid)
        except ArchiveError as err:
            raise HTTPException(404, str(err)) from None

    def need_write() -> None:
        if not writable:
            raise HTTPException(403, "this server is read-only; start it with --writable to allow changes")

    # -- pages ------------------------------------------------------------------------------------
    def show(title: str, body) -> str:
        return page(title, body, served=True, writable=writable)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(q: str = "", model: str = "", task: str = "", tag: str = "", kind: str = ""):
        specs = archive.search(q or None, model=model or None, task=task or None, tag=tag or None, kind=kind or None)
        body = render("index.html", cards=library_cards(specs), facets=archive.facets(), q=q, model=model, task=task,
                      tag=tag, kind=kind)
        return show("mechscope specimens", body)

    @app.get("/specimens/{uid}", response_class=HTMLResponse, include_in_schema=False)
    def specimen_page(uid: str, version: int | None = None):
        spec = get(uid)
        if version is not None and not 1 <= version <= spec.version:
            raise HTTPException(404, f"version {version} does not exist (1..{spec.version})")
        return show(spec.name, specimen_body(spec, version, served=True))

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare(a: str = "", b: str = "", pick: list[str] = Query(default=[])):
        uids = [u for u in (a, b) if u] or pick
        if len(uids) != 2:
            raise HTTPException(400, f"compare needs two specimens: tick two (ticked {len(uids)}) or give a= and b=")
        left, right = get(uids[0]), get(uids[1])
        body = render("compare.html", left=specimen_body(left, link="/specimens/" + left.uid),
                      right=specimen_body(right, link="/specimens/" + right.uid))
        return show(f"{left.name} vs {right.name}", body)

    def cards_of(uid: str, fid: str):
        spec, f = finding_of(uid, fid)
        if f.kind not in CARD_KINDS:
            raise HTTPException(404, f"finding {fid[:8]} is a {f.kind}, not feature or neuron cards")
        return spec, f, f.result()

    @app.get("/specimens/{uid}/findings/{fid}/features", response_class=HTMLResponse, include_in_schema=False)
    def feature_browser(uid: str, fid: str, q: str = "", sort: str = "index"):
        spec, f, cards = cards_of(uid, fid)
        keys = {"index": lambda i: cards.neurons[i], "density": lambda i: -cards.density[i],
                "max": lambda i: -cards.max_act[i]}
        if sort not in keys:
            raise HTTPException(400, f"sort={sort!r}; valid: {', '.join(keys)}")
        shown = sorted((i for i in range(len(cards.neurons)) if not q or cards.matches(i, q)), key=keys[sort])
        rows = [{"unit": cards.neurons[i], "name": cards.name(i), "density": cards.density[i], "max": cards.max_act[i],
                 "label": cards.label(i), "promotes": ", ".join(repr(t) for t, _ in cards.promoted[i][:3])}
                for i in shown]
        body = render("features.html", cards=cards, rows=rows, uid=spec.uid, fid=f.uid, name=spec.name, q=q, sort=sort)
        return show(f"{cards.units} — {spec.name}", body)

    @app.get("/specimens/{uid}/findings/{fid}/features/{unit}", response_class=HTMLResponse, include_in_schema=False)
    def feature_card(uid: str, fid: str, unit: int):
        spec, f, cards = cards_of(uid, fid)
        if unit not in cards.neurons:
            raise HTTPException(404, f"unit {unit} has no card in this finding; it holds {len(cards.neurons)} cards")
        one = cards.subset([cards.neurons.index(unit)])
        back = f'<p><a href="/specimens/{spec.uid}/findings/{f.uid}/features">all {len(cards.neurons)} cards</a></p>'
        return show(f"{one.name(0)} — {spec.name}", Markup(back) + Markup(one.html(draw=False)))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return Response(static_text(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})

    @app.get("/files/{digest}", include_in_schema=False)
    def file(digest: str):
        if not HASH_RE.match(digest):
            raise HTTPException(404, "not a file of this archive")
        role = archive.file_role(digest)
        if role is None:
            raise HTTPException(404, "not a file of this archive")
        try:
            return Response(archive.blobs.get(digest), media_type=MEDIA.get(role, "application/octet-stream"))
        except BlobError as err:
            raise HTTPException(500, str(err)) from None

    # -- JSON API ---------------------------------------------------------------------------------
    @app.get("/api/specimens", summary="List or search specimens")
    def api_list(q: str | None = None, model: str | None = None, task: str | None = None, tag: str | None = None):
        return [s.to_json() for s in archive.search(q, model=model, task=task, tag=tag)]

    @app.get("/api/specimens/{uid}", summary="A specimen with its findings and history")
    def api_specimen(uid: str, version: int | None = None):
        spec = get(uid)
        return {**spec.to_json(), "findings": [finding_json(f) for f in spec.findings(version)],
                "history": [e.to_json() for e in spec.history()]}

    @app.get("/api/specimens/{uid}/findings/{fid}", summary="One finding's full result data")
    def api_finding(uid: str, fid: str):
        return finding_json(finding_of(uid, fid)[1], data=True)

    @app.post("/api/specimens/{uid}/tags", summary="Add a tag (writable servers only)")
    def api_tag(uid: str, tag: str = Body(..., embed=True)):
        need_write()
        spec = get(uid)
        try:
            spec.tag(tag)
        except ArchiveError as err:
            raise HTTPException(422, str(err)) from None
        return spec.to_json()

    @app.post("/api/specimens/{uid}/findings/{fid}/notes", summary="Replace a finding's notes (writable only)")
    def api_notes(uid: str, fid: str, notes: str = Body(..., embed=True)):
        need_write()
        spec = get(uid)
        try:
            spec.set_notes(fid, notes)
            return finding_json(spec.finding(fid))
        except ArchiveError as err:
            raise HTTPException(404, str(err)) from None

    @app.delete("/api/specimens/{uid}", summary="Delete a specimen (writable servers only)")
    def api_delete(uid: str):
        need_write()
        spec = get(uid)
        archive.remove(spec.uid)
        return {"deleted": spec.uid}

    @app.get("/api/health", summary="Liveness")
    def health():
        return {"ok": True, "writable": writable}

    return app


def finding_json(f, data: bool = False) -> dict:
    """``Finding.to_json`` with each file's URL on this server."""
    out = f.to_json(data)
    for meta in out["files"].values():
        meta["url"] = f"/files/{meta['hash']}"
    return out


def serve(archive: Archive, host: str = "127.0.0.1", port: int = 8765, writable: bool = False,
          hosts: Iterable[str] = ()) -> None:
    """Serve until Ctrl-C. ``hosts``: further names clients may use to reach it (see ``create_app``)."""
    import uvicorn

    print(f"Serving {archive!r} on http://{host}:{port}/ ({'read-write' if writable else 'read-only'}); Ctrl-C stops.")
    uvicorn.run(create_app(archive, writable, hosts=[host, *hosts]), host=host, port=port, log_level="warning")


