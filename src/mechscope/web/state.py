"""What every route of the server reads: the archive, whether it may change, and the specimen or
finding a path names (404 when there is none). Routes get them as FastAPI dependencies."""

from __future__ import annotations

from fastapi import HTTPException, Request

from ..archive.database import ArchiveError
from ..archive.specimens import Finding, Specimen
from ..archive.store import Archive


def archive_of(request: Request) -> Archive:
    return request.app.state.archive


def writable(request: Request) -> bool:
    return request.app.state.writable


def need_write(request: Request) -> None:
    """A dependency of every route that changes something: refused on a read-only server."""
    if not writable(request):
        raise HTTPException(403, "this server is read-only; start it with --writable to allow changes")


def specimen(uid: str, request: Request) -> Specimen:
    try:
        return archive_of(request).get(uid)
    except ArchiveError as err:
        raise HTTPException(404, str(err)) from None


def finding(uid: str, fid: str, request: Request) -> tuple[Specimen, Finding]:
    spec = specimen(uid, request)
    try:
        return spec, spec.finding(fid)
    except ArchiveError as err:
        raise HTTPException(404, str(err)) from None


def finding_json(f: Finding, data: bool = False) -> dict:
    """``Finding.to_json`` with each file's URL on this server."""
    out = f.to_json(data)
    for meta in out["files"].values():
        meta["url"] = f"/files/{meta['hash']}"
    return out
