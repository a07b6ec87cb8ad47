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

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import jsontext
from ..archive.store import Archive
from . import api, pages

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
FILE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"  # stored files: never a script
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


class StandardJSON(JSONResponse):
    """API responses as standard JSON: a non-finite number (a faithfulness that could not be computed)
    is written explicitly (``jsontext``), not as a ``NaN`` token or a 500."""

    def render(self, content) -> bytes:
        return jsontext.dumps(content, separators=(",", ":")).encode("utf-8")


def create_app(archive: Archive, writable: bool = False, hosts: Iterable[str] = ()) -> FastAPI:
    """The app. ``hosts``: names besides the loopback ones that requests may give in ``Host``
    (the address a server bound to a non-loopback interface is reached by)."""
    app = FastAPI(title="mechscope", version="1", docs_url=None, redoc_url=None, default_response_class=StandardJSON,
                  description="Browse the mechscope specimen archive.")
    app.state.archive, app.state.writable = archive, writable
    app.include_router(pages.router)
    app.include_router(api.router)
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
    return app


def serve(archive: Archive, host: str = "127.0.0.1", port: int = 8765, writable: bool = False,
          hosts: Iterable[str] = ()) -> None:
    """Serve until Ctrl-C. ``hosts``: further names clients may use to reach it (see ``create_app``)."""
    import uvicorn

    print(f"Serving {archive!r} on http://{host}:{port}/ ({'read-write' if writable else 'read-only'}); Ctrl-C stops.")
    uvicorn.run(create_app(archive, writable, hosts=[host, *hosts]), host=host, port=port, log_level="warning")


