"""The JSON API (``/api/...``, described by ``/openapi.json``): list and search specimens, read one with
its findings and history, read a finding's result data; on a writable server tag, annotate, delete."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException, Request

from ..archive.database import ArchiveError
from ..archive.specimens import Finding, Specimen
from .state import archive_of, finding, finding_json, need_write, specimen, writable

router = APIRouter()


@router.get("/api/specimens", summary="List or search specimens")
def api_list(request: Request, q: str | None = None, model: str | None = None, task: str | None = None,
             tag: str | None = None):
    return [s.to_json() for s in archive_of(request).search(q, model=model, task=task, tag=tag)]


@router.get("/api/specimens/{uid}", summary="A specimen with its findings and history")
def api_specimen(spec: Specimen = Depends(specimen), version: int | None = None):
    return {**spec.to_json(), "findings": [finding_json(f) for f in spec.findings(version)],
            "history": [e.to_json() for e in spec.history()]}


@router.get("/api/specimens/{uid}/findings/{fid}", summary="One finding's full result data")
def api_finding(found: tuple[Specimen, Finding] = Depends(finding)):
    return finding_json(found[1], data=True)


@router.post("/api/specimens/{uid}/tags", summary="Add a tag (writable servers only)",
             dependencies=[Depends(need_write)])
def api_tag(spec: Specimen = Depends(specimen), tag: str = Body(..., embed=True)):
    try:
        spec.tag(tag)
    except ArchiveError as err:
        raise HTTPException(422, str(err)) from None
    return spec.to_json()


@router.post("/api/specimens/{uid}/findings/{fid}/notes", summary="Replace a finding's notes (writable only)",
             dependencies=[Depends(need_write)])
def api_notes(fid: str, spec: Specimen = Depends(specimen), notes: str = Body(..., embed=True)):
    try:
        spec.set_notes(fid, notes)
        return finding_json(spec.finding(fid))
    except ArchiveError as err:
        raise HTTPException(404, str(err)) from None


@router.delete("/api/specimens/{uid}", summary="Delete a specimen (writable servers only)",
             dependencies=[Depends(need_write)])
def api_delete(request: Request, spec: Specimen = Depends(specimen)):
    archive_of(request).remove(spec.uid)
    return {"deleted": spec.uid}


@router.get("/api/health", summary="Liveness")
def health(request: Request):
    return {"ok": True, "writable": writable(request)}
