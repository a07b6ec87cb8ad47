"""The server's pages: the library (search and facets), a specimen at any version, two specimens side
by side, the feature browser and a feature's card, the package's static viewer files and the
archive's stored files (by sha256 only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from ..archive.blobs import HASH_RE, BlobError
from ..archive.specimens import Finding, Specimen
from ..report.page import library_cards, page, specimen_body
from ..report.render import render, static_text
from .state import archive_of, finding, specimen, writable

MEDIA = {"tensors": "application/octet-stream", "figure.png": "image/png", "figure.svg": "image/svg+xml"}
STATIC = {"mechscope.js": "text/javascript", "mechscope.css": "text/css", "cytoscape.min.js": "text/javascript"}
CARD_KINDS = ("FeatureCards", "NeuronCards")  # findings the feature browser opens

router = APIRouter()


def show(request: Request, title: str, body) -> str:
    return page(title, body, served=True, writable=writable(request))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request, q: str = "", model: str = "", task: str = "", tag: str = "", kind: str = ""):
    archive = archive_of(request)
    specs = archive.search(q or None, model=model or None, task=task or None, tag=tag or None, kind=kind or None)
    body = render("index.html", cards=library_cards(specs), facets=archive.facets(), q=q, model=model, task=task,
                  tag=tag, kind=kind)
    return show(request, "mechscope specimens", body)


@router.get("/specimens/{uid}", response_class=HTMLResponse, include_in_schema=False)
def specimen_page(request: Request, spec: Specimen = Depends(specimen), version: int | None = None):
    if version is not None and not 1 <= version <= spec.version:
        raise HTTPException(404, f"version {version} does not exist (1..{spec.version})")
    return show(request, spec.name, specimen_body(spec, version, served=True))


@router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def compare(request: Request, a: str = "", b: str = "", pick: list[str] = Query(default=[])):
    uids = [u for u in (a, b) if u] or pick
    if len(uids) != 2:
        raise HTTPException(400, f"compare needs two specimens: tick two (ticked {len(uids)}) or give a= and b=")
    left, right = specimen(uids[0], request), specimen(uids[1], request)
    body = render("compare.html", left=specimen_body(left, link="/specimens/" + left.uid),
                  right=specimen_body(right, link="/specimens/" + right.uid))
    return show(request, f"{left.name} vs {right.name}", body)


def cards_of(found: tuple[Specimen, Finding] = Depends(finding)):
    """The feature or neuron cards a finding holds (the feature browser opens these), with the explanations
    of their units that the specimen's ``Explanations`` findings hold (of the same site, or layer's
    neurons) added to those the cards carry."""
    from ..explain.sidecar import card_explanations

    spec, f = found
    if f.kind not in CARD_KINDS:
        raise HTTPException(404, f"finding {f.uid[:8]} is a {f.kind}, not feature or neuron cards")
    cards = f.result()
    for other in spec.findings():
        if other.kind != "Explanations":
            continue
        r = other.result()
        if (r.kind == "feature" and getattr(cards, "site", None) == r.site) or \
                (r.kind == "neuron" and not hasattr(cards, "site") and r.layer == cards.layer):
            cards = cards.with_explanations(card_explanations(r))
    return spec, f, cards


@router.get("/specimens/{uid}/findings/{fid}/features", response_class=HTMLResponse, include_in_schema=False)
def feature_browser(request: Request, opened=Depends(cards_of), q: str = "", sort: str = "index"):
    spec, f, cards = opened
    keys = {"index": lambda i: (cards.neurons[i],), "density": lambda i: (-cards.density[i],),
            "max": lambda i: (-cards.max_act[i],),
            "score": lambda i: (cards.score(i) is None, -(cards.score(i) or 0.0), cards.neurons[i])}
    if sort not in keys:
        raise HTTPException(400, f"sort={sort!r}; valid: {', '.join(keys)}")
    shown = sorted((i for i in range(len(cards.neurons)) if not q or cards.matches(i, q)), key=keys[sort])
    rows = [{"unit": cards.neurons[i], "name": cards.name(i), "density": cards.density[i], "max": cards.max_act[i],
             "label": cards.label(i), "promotes": ", ".join(repr(t) for t, _ in cards.promoted[i][:3]),
             "explanation": (cards.explained(i) or {}).get("explanation", ""), "score": cards.score(i)}
            for i in shown]
    body = render("features.html", cards=cards, rows=rows, uid=spec.uid, fid=f.uid, name=spec.name, q=q, sort=sort)
    return show(request, f"{cards.units} — {spec.name}", body)


@router.get("/specimens/{uid}/findings/{fid}/features/{unit}", response_class=HTMLResponse, include_in_schema=False)
def feature_card(request: Request, unit: int, opened=Depends(cards_of)):
    spec, f, cards = opened
    if unit not in cards.neurons:
        raise HTTPException(404, f"unit {unit} has no card in this finding; it holds {len(cards.neurons)} cards")
    one = cards.subset([cards.neurons.index(unit)])
    back = f'<p><a href="/specimens/{spec.uid}/findings/{f.uid}/features">all {len(cards.neurons)} cards</a></p>'
    return show(request, f"{one.name(0)} — {spec.name}", Markup(back) + Markup(one.html(draw=False)))


@router.get("/static/{name}", include_in_schema=False)
def static(name: str):
    if name not in STATIC:
        raise HTTPException(404, "no such file")
    return Response(static_text(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})


@router.get("/files/{digest}", include_in_schema=False)
def file(digest: str, request: Request):
    archive = archive_of(request)
    if not HASH_RE.match(digest):
        raise HTTPException(404, "not a file of this archive")
    role = archive.file_role(digest)
    if role is None:
        raise HTTPException(404, "not a file of this archive")
    try:
        return Response(archive.blobs.get(digest), media_type=MEDIA.get(role, "application/octet-stream"))
    except BlobError as err:
        raise HTTPException(500, str(err)) from None
