"""The export file: one specimen in one file, written and read back (``Archive.export`` / ``import_file``).

The file is a zip with ``manifest.json`` (the specimen, tags, history, findings, and the size and
sha256 of every file) and ``blobs/<sha256>`` entries. This module is the file's codec and writes no
row: ``read_export`` validates everything before the archive sees it, and refuses a bad file with a
clear error, leaving the archive as it was:

- the manifest against a strict schema derived from the archive's own types (``Specimen``,
  ``Finding``, ``Event``) and each finding's result data against its result type's schema
  (``results.dataclass_schema``): every field present, of its type, nothing extra;
- entry names (only ``manifest.json`` and ``blobs/<sha256>``), declared sizes against the import
  limit, each file's bytes against its size and sha256 while it streams to a staging file (never
  the whole export in memory), figures against their format (PNG signature; SVG served so that a
  script in it cannot run);
- that every finding rebuilds into its result and renders (summary and page fragment), so that
  nothing accepted can break a page later.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator, Literal

import pydantic
from ..results import Result, ResultFormatError, dataclass_schema, result_types, validation_message
from .blobs import HASH_RE, BlobError, BlobStore
from .database import ArchiveError, schema_revision
from .figures import HEAD, png_problem, svg_problem
from .specimens import Event, Finding, Specimen

FORMAT = "mechscope-specimen"
FORMAT_VERSION = 1
MAX_MANIFEST = 64 << 20  # bytes
MAX_BLOB = 4 << 30
MAX_TOTAL = 512 << 20  # default bound on an import's files together; $MECHSCOPE_IMPORT_LIMIT (bytes) changes it
CHUNK = 1 << 20  # bytes read at a time while a file streams in
ROLES = ("tensors", "figure.png", "figure.svg")
UID_RE = re.compile(HASH_RE.pattern.replace("64", "32"))


class ArchiveImportError(ArchiveError):
    """An export file that cannot be imported; nothing was changed."""


# -- the manifest's schema: derived from the archive's types -----------------------------------

class FileJSON(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True, extra="forbid")
    hash: str = pydantic.Field(pattern=HASH_RE.pattern)
    size: int = pydantic.Field(ge=0, le=MAX_BLOB)


SpecimenJSON = dataclass_schema(Specimen, exclude=("archive", "id", "tags"))
FindingJSON = pydantic.create_model("FindingJSON", __base__=dataclass_schema(
    Finding, exclude=("archive", "id"), override=(("files", dict[Literal[ROLES], FileJSON]),)), data=(dict[str, Any], ...))
Manifest = pydantic.create_model(
    "Manifest", __config__=pydantic.ConfigDict(strict=True, extra="forbid"),
    format=(Literal[FORMAT], ...), format_version=(int, ...), schema_revision=(str, pydantic.Field(alias="schema")), specimen=(SpecimenJSON, ...),
    tags=(list[pydantic.constr(min_length=1, max_length=100)], ...), events=(list[dataclass_schema(Event)], ...),
    findings=(list[FindingJSON], ...), blobs=(dict[pydantic.constr(pattern=HASH_RE.pattern), pydantic.conint(ge=0, le=MAX_BLOB)], ...))


# -- export ------------------------------------------------------------------------------------

def manifest_of(spec: Specimen) -> dict[str, Any]:
    """The manifest of ``spec`` with its whole history (removed findings included)."""
    items = [f.to_json(data=True) for f in spec.findings(removed=True)]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "schema": schema_revision(),
        "specimen": {k: v for k, v in spec.to_json().items() if k != "tags"},
        "tags": spec.tags,
        "events": [e.to_json() for e in spec.history()],
        "findings": items,
        "blobs": {meta["hash"]: meta["size"] for f in items for meta in f["files"].values()},
    }


def write_export(path: Path, manifest: dict[str, Any], blobs: BlobStore) -> Path:
    """Write ``manifest`` and the files it lists (read from ``blobs``) to ``path``, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for digest in sorted(manifest["blobs"]):
            with zf.open(zipfile.ZipInfo(f"blobs/{digest}"), "w") as out, open(blobs.path(digest), "rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
    os.replace(tmp, path)
    return path


# -- import ------------------------------------------------------------------------------------

def import_limit() -> int:
    """Bytes an import's files may hold together: $MECHSCOPE_IMPORT_LIMIT, else ``MAX_TOTAL``."""
    raw = os.environ.get("MECHSCOPE_IMPORT_LIMIT")
    if raw is None:
        return MAX_TOTAL
    if not raw.isdigit() or int(raw) < 1:
        raise ArchiveImportError(f"MECHSCOPE_IMPORT_LIMIT={raw!r}: give a number of bytes ≥ 1")
    return int(raw)


def read_export(blobs: BlobStore, path: Path, cleanup: ExitStack) -> tuple[dict[str, Any], dict[str, Path]]:
    """(manifest, {sha256: staged file}) of a valid export, its files staged in ``blobs``;
    ``ArchiveImportError`` for anything else. Staged files are removed when ``cleanup`` closes
    unless they were adopted."""
    def fail(msg: str) -> ArchiveImportError:
        return ArchiveImportError(f"{path}: {msg}; nothing was imported")

    try:
        zf = cleanup.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise fail(f"not a mechscope export file ({err})") from None
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise fail("duplicate entry names")
    for name in names:
        if name != "manifest.json" and not (name.startswith("blobs/") and HASH_RE.match(name[6:])):
            raise fail(f"unexpected entry {name!r} (only manifest.json and blobs/<sha256> are allowed)")
    if "manifest.json" not in names:
        raise fail("no manifest.json")
    info = zf.getinfo("manifest.json")
    if info.file_size > MAX_MANIFEST:
        raise fail(f"entry 'manifest.json' declares {info.file_size} bytes, over the limit of {MAX_MANIFEST}")
    manifest = _load_manifest(b"".join(_chunks(zf, info, MAX_MANIFEST, fail)), fail)
    declared = manifest["blobs"]
    entries = {n[6:] for n in names if n.startswith("blobs/")}
    if entries != set(declared):
        missing, extra = set(declared) - entries, entries - set(declared)
        raise fail(f"files {'missing' if missing else 'not declared'}: {sorted(missing or extra)[0][:12]}...")
    limit = import_limit()
    if sum(declared.values()) > limit:
        raise fail(f"its files declare {sum(declared.values())} bytes together, over the import limit of {limit} "
                   "(set MECHSCOPE_IMPORT_LIMIT to allow more)")
    staged: dict[str, Path] = {}
    cleanup.callback(lambda: [p.unlink(missing_ok=True) for p in staged.values()])
    for digest, size in declared.items():
        info = zf.getinfo(f"blobs/{digest}")
        if info.file_size != size:
            raise fail(f"file {digest[:12]} is {info.file_size} bytes but the manifest says {size}")
        try:
            tmp, actual, n = blobs.stage(_chunks(zf, info, size, fail), size)
        except BlobError:
            raise fail(f"entry 'blobs/{digest}' is not the size it declares") from None
        staged[digest] = tmp
        if n != size:
            raise fail(f"entry 'blobs/{digest}' is not the size it declares")
        if actual != digest:
            raise fail(f"file {digest[:12]} does not match its sha256 (corrupted or tampered)")
    for f in manifest["findings"]:
        _check_finding(f, staged, fail)
    return manifest, staged


def _chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, fail) -> Iterator[bytes]:
    """The entry's bytes in chunks; a damaged stream or one longer than it declares is refused."""
    try:
        with zf.open(info) as f:
            read = 0
            while chunk := f.read(CHUNK):
                read += len(chunk)
                if read > min(limit, info.file_size):
                    raise fail(f"entry {info.filename!r} is not the size it declares")
                yield chunk
    except ArchiveImportError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise fail(f"entry {info.filename!r} cannot be read ({err})") from None
    except Exception as err:  # zlib.error and friends from a damaged stream
        raise fail(f"entry {info.filename!r} cannot be read ({type(err).__name__}: {err})") from None


def _load_manifest(raw: bytes, fail) -> dict[str, Any]:
    try:
        m = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: also a 5,000-digit integer
        raise fail(f"manifest.json is not valid JSON ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise fail("manifest.json is not a mechscope specimen manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise fail(f"export format version {m.get('format_version')!r} is not supported (this mechscope reads {FORMAT_VERSION})")
    if m.get("schema") != schema_revision():
        raise fail(f"written with archive schema {m.get('schema')!r}; this mechscope has {schema_revision()!r}")
    try:
        Manifest.model_validate_json(raw)
    except pydantic.ValidationError as err:
        raise fail(validation_message(err, "manifest")) from None
    if not UID_RE.match(m["specimen"]["uid"]) or not m["specimen"]["name"].strip():
        raise fail("specimen uid or name is malformed")
    versions = [e["version"] for e in m["events"]] + [f[k] for f in m["findings"] for k in ("added_in", "removed_in")
                                                       if f[k] is not None] + [m["specimen"]["version"]]
    if min(versions) < 1:
        raise fail(f"version {min(versions)} in the history: versions start at 1")
    _check_history(m, fail)
    referenced = set()
    for f in m["findings"]:
        if not UID_RE.match(f["uid"]):
            raise fail(f"finding uid {f['uid'][:40]!r} is malformed")
        if f["kind"] not in result_types() or f["data"].get("type") != f["kind"]:
            raise fail(f"finding of unknown type {f['kind'][:60]!r} (known: {', '.join(sorted(result_types()))})")
        for role, meta in f["files"].items():
            if m["blobs"].get(meta["hash"]) != meta["size"]:
                raise fail(f"finding {f['uid'][:8]} lists a bad file {role[:40]!r}")
            referenced.add(meta["hash"])
    if referenced != set(m["blobs"]):
        raise fail("the manifest lists files no finding uses")
    return m


def _check_history(m: dict[str, Any], fail) -> None:
    """The history is the specimen's: one event per version 1..version, the first its creation, and
    every finding added (and removed) at a version the specimen has reached."""
    version = m["specimen"]["version"]
    events = sorted(e["version"] for e in m["events"])
    if events != list(range(1, version + 1)):
        raise fail(f"the history has events {events[:5]}{'...' if len(events) > 5 else ''} for a specimen at version "
                   f"{version}: every version 1..{version} needs exactly one event")
    if min(m["events"], key=lambda e: e["version"])["action"] != "created":
        raise fail("the history does not begin with the specimen's creation")
    for f in m["findings"]:
        added, removed = f["added_in"], f["removed_in"]
        if added > version or (removed is not None and not added < removed <= version):
            raise fail(f"finding {f['uid'][:8]} is added in version {added}"
                       f"{f' and removed in {removed}' if removed is not None else ''}, which the specimen "
                       f"(at version {version}) cannot have")


def _check_finding(f: dict[str, Any], staged: dict[str, Path], fail) -> None:
    """The finding's figures are what they claim, and it rebuilds and renders."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def head(role: str, n: int) -> bytes | None:
        if role not in f["files"]:
            return None
        with open(staged[f["files"][role]["hash"]], "rb") as fh:
            return fh.read(n)

    for role, problem, n in (("figure.png", png_problem, HEAD), ("figure.svg", svg_problem, 4096)):
        start = head(role, n)
        why = problem(start, f["files"][role]["size"]) if start is not None else None
        if why:
            raise fail(f"finding {f['uid'][:8]}'s {role} {why}")
    try:
        tensors = load_file(staged[f["files"]["tensors"]["hash"]]) if "tensors" in f["files"] else {}
        result = Result.from_dict(f["data"], tensors)
    except (SafetensorError, ResultFormatError, ValueError, TypeError, KeyError) as err:
        raise fail(f"finding {f['uid'][:8]} ({f['kind']}) does not rebuild: {err}") from None
    try:  # what a page shows of it: anything that cannot be drawn is refused now, not on a page later
        result.summary()
        result.html(draw=False)
    except Exception as err:  # a result whose fields agree in type but not with each other
        raise fail(f"finding {f['uid'][:8]} ({f['kind']}) cannot be shown: {type(err).__name__}: {err}") from None
