"""Export a specimen to one file and import it elsewhere.

The file is a zip with ``manifest.json`` (the specimen, tags, history, findings, and the size and
sha256 of every file) and ``blobs/<sha256>`` entries. Import validates everything — entry names,
declared sizes, hashes, schema and format versions, that every result rebuilds — before it writes
anything, and refuses a bad file with a clear error, leaving the archive as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from ..results import Result, result_types
from .blobs import HASH_RE
from .faults import crash_point
from .schema import events, finding_files, findings, specimens, tags
from .store import Archive, ArchiveError, Specimen, schema_revision

FORMAT = "mechscope-specimen"
FORMAT_VERSION = 1
MAX_MANIFEST = 64 << 20  # bytes
MAX_BLOB = 4 << 30
MAX_TOTAL = 512 << 20  # default bound on an import's files together; $MECHSCOPE_IMPORT_LIMIT (bytes) changes it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROLES = {"tensors", "figure.png", "figure.svg"}
UID_RE = HASH_RE.pattern.replace("64", "32")


class ArchiveImportError(ArchiveError):
    """An export file that cannot be imported; nothing was changed."""


def export_specimen(archive: Archive, spec: Specimen, path: Path) -> Path:
    """Write ``spec`` with its whole history (removed findings included) to ``path``, atomically."""
    with archive.engine.connect() as conn:
        rows = conn.execute(select(findings).where(findings.c.specimen_id == spec.id).order_by(findings.c.id)).mappings().all()
        history = conn.execute(select(events).where(events.c.specimen_id == spec.id).order_by(events.c.version)).mappings().all()
        items, blobs = [], {}
        for r in rows:
            files = {f.role: {"hash": f.hash, "size": f.size}
                     for f in conn.execute(select(finding_files).where(finding_files.c.finding_id == r["id"]))}
            blobs.update({f["hash"]: f["size"] for f in files.values()})
            items.append({k: r[k] for k in ("uid", "kind", "title", "summary", "notes", "created", "added_in", "removed_in")}
                         | {"data": json.loads(r["data"]), "evidence": json.loads(r["evidence"]), "files": files})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "schema": schema_revision(),
        "specimen": {k: getattr(spec, k) for k in ("uid", "name", "description", "model_name", "model_fingerprint",
                                                   "model_config", "task", "dataset", "dataset_seed", "dataset_hash",
                                                   "version", "created", "updated")},
        "tags": spec.tags,
        "events": [{k: e[k] for k in ("version", "time", "action", "detail")} for e in history],
        "findings": items,
        "blobs": blobs,
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for digest in sorted(blobs):
            zf.writestr(f"blobs/{digest}", archive.blobs.get(digest), compress_type=zipfile.ZIP_STORED)
    os.replace(tmp, path)
    return path


def import_specimen(archive: Archive, path: Path, *, replace: bool = False) -> Specimen:
    """Validate ``path`` completely, then add its specimen to ``archive`` in one transaction."""
    manifest, blob_data = read_export(path)
    spec = manifest["specimen"]
    with archive.engine.connect() as conn:
        existing = conn.execute(select(specimens.c.id).where(specimens.c.uid == spec["uid"])).scalar()
        if existing is not None and not replace:
            raise ArchiveImportError(
                f"{path}: specimen {spec['name']!r} ({spec['uid'][:8]}) is already in the archive; "
                "import with replace=True (--replace) to overwrite it")
        uids = [f["uid"] for f in manifest["findings"]]
        clash = conn.execute(select(findings.c.uid, findings.c.specimen_id).where(findings.c.uid.in_(uids))).all()
        clash = [u for u, sid in clash if sid != existing]
        if clash:
            raise ArchiveImportError(f"{path}: finding {clash[0][:8]} already belongs to another specimen")
    new_files = [d for d in blob_data if not archive.blobs.exists(d)]
    try:
        for digest, data in blob_data.items():
            archive.blobs.put(data)
            crash_point("import")
        with archive.engine.begin() as conn:
            if existing is not None:
                conn.execute(delete(specimens).where(specimens.c.id == existing))
            sid = conn.execute(insert(specimens).values(**{**spec, "model_config": json.dumps(spec["model_config"])})).inserted_primary_key[0]
            for tag in manifest["tags"]:
                conn.execute(insert(tags).values(specimen_id=sid, tag=tag))
            for e in manifest["events"]:
                conn.execute(insert(events).values(specimen_id=sid, **e))
            crash_point("import")
            for f in manifest["findings"]:
                row = {k: f[k] for k in ("uid", "kind", "title", "summary", "notes", "created", "added_in", "removed_in")}
                fid = conn.execute(insert(findings).values(
                    specimen_id=sid, data=json.dumps(f["data"]), evidence=json.dumps(f["evidence"]), **row)).inserted_primary_key[0]
                for role, meta in f["files"].items():
                    conn.execute(insert(finding_files).values(finding_id=fid, role=role, hash=meta["hash"], size=meta["size"]))
                crash_point("import")
    except BaseException as err:  # a refused import leaves the archive as it was
        archive.drop_unreferenced(new_files)
        if isinstance(err, SQLAlchemyError):  # e.g. duplicate versions or tags the checks above did not catch
            cause = err.orig or err
            raise ArchiveImportError(f"{path}: the archive refused its contents ({type(cause).__name__}: "
                                     f"{str(cause).splitlines()[0]}); nothing was imported") from None
        raise
    crash_point("import")
    return archive.get(spec["uid"])


def import_limit() -> int:
    """Bytes an import's files may hold together: $MECHSCOPE_IMPORT_LIMIT, else ``MAX_TOTAL``."""
    raw = os.environ.get("MECHSCOPE_IMPORT_LIMIT")
    if raw is None:
        return MAX_TOTAL
    if not raw.isdigit() or int(raw) < 1:
        raise ArchiveImportError(f"MECHSCOPE_IMPORT_LIMIT={raw!r}: give a number of bytes ≥ 1")
    return int(raw)


def read_export(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest, {sha256: bytes}) of a valid export; ``ArchiveImportError`` for anything else."""
    def fail(msg: str) -> ArchiveImportError:
        return ArchiveImportError(f"{path}: {msg}; nothing was imported")

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise fail(f"not a mechscope export file ({err})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise fail("duplicate entry names")
        for name in names:
            if name != "manifest.json" and not (name.startswith("blobs/") and HASH_RE.match(name[6:])):
                raise fail(f"unexpected entry {name!r} (only manifest.json and blobs/<sha256> are allowed)")
        if "manifest.json" not in names:
            raise fail("no manifest.json")
        manifest = _load_manifest(_read_entry(zf, zf.getinfo("manifest.json"), MAX_MANIFEST, fail), fail)
        declared = manifest["blobs"]
        entries = {n[6:] for n in names if n.startswith("blobs/")}
        if entries != set(declared):
            missing, extra = set(declared) - entries, entries - set(declared)
            raise fail(f"files {'missing' if missing else 'not declared'}: {sorted(missing or extra)[0][:12]}...")
        limit = import_limit()
        if sum(declared.values()) > limit:
            raise fail(f"its files declare {sum(declared.values())} bytes together, over the import limit of {limit} "
                       "(set MECHSCOPE_IMPORT_LIMIT to allow more)")
        blob_data = {}
        for digest, size in declared.items():
            info = zf.getinfo(f"blobs/{digest}")
            if info.file_size != size:
                raise fail(f"file {digest[:12]} is {info.file_size} bytes but the manifest says {size}")
            data = _read_entry(zf, info, size, fail)
            if hashlib.sha256(data).hexdigest() != digest:
                raise fail(f"file {digest[:12]} does not match its sha256 (corrupted or tampered)")
            blob_data[digest] = data
    for f in manifest["findings"]:
        png = f["files"].get("figure.png")
        if png is not None and not blob_data[png["hash"]].startswith(PNG_SIGNATURE):
            raise fail(f"finding {f['uid'][:8]}'s figure.png is not a PNG image")
        svg = f["files"].get("figure.svg")
        if svg is not None and b"<svg" not in blob_data[svg["hash"]][:4096]:
            raise fail(f"finding {f['uid'][:8]}'s figure.svg is not an SVG image")
        _check_result_rebuilds(f, blob_data, fail)
    return manifest, blob_data


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, fail) -> bytes:
    if info.file_size > limit:
        raise fail(f"entry {info.filename!r} declares {info.file_size} bytes, over the limit of {limit}")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise fail(f"entry {info.filename!r} cannot be read ({err})") from None
    except Exception as err:  # zlib.error and friends from a damaged stream
        raise fail(f"entry {info.filename!r} cannot be read ({type(err).__name__}: {err})") from None
    if len(data) > limit or len(data) != info.file_size:
        raise fail(f"entry {info.filename!r} is not the size it declares")
    return data


def _load_manifest(raw: bytes, fail) -> dict[str, Any]:
    try:
        m = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"manifest.json is not valid JSON ({err})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise fail("manifest.json is not a mechscope specimen manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise fail(f"export format version {m.get('format_version')!r} is not supported (this mechscope reads {FORMAT_VERSION})")
    if m.get("schema") != schema_revision():
        raise fail(f"written with archive schema {m.get('schema')!r}; this mechscope has {schema_revision()!r}")
    _expect(m, {"specimen": dict, "tags": list, "events": list, "findings": list, "blobs": dict}, "manifest", fail)
    _expect(m["specimen"], {"uid": str, "name": str, "description": str, "model_name": str, "model_fingerprint": str,
                            "model_config": dict, "task": str, "dataset": str, "dataset_seed": (int, type(None)),
                            "dataset_hash": str, "version": int, "created": str, "updated": str}, "specimen", fail)
    import re

    if not re.match(UID_RE, m["specimen"]["uid"]) or not m["specimen"]["name"].strip():
        raise fail("specimen uid or name is malformed")
    if not all(isinstance(t, str) and 0 < len(t) <= 100 for t in m["tags"]):
        raise fail("tags must be strings of 1..100 characters")
    for e in m["events"]:
        _expect(e, {"version": int, "time": str, "action": str, "detail": str}, "event", fail)
    for digest, size in m["blobs"].items():
        if not HASH_RE.match(digest) or not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB:
            raise fail(f"file entry {digest[:12]!r} has a bad hash or size {size!r} (limit {MAX_BLOB})")
    referenced = set()
    for f in m["findings"]:
        _expect(f, {"uid": str, "kind": str, "title": str, "summary": str, "notes": str, "created": str, "added_in": int,
                    "removed_in": (int, type(None)), "data": dict, "evidence": dict, "files": dict}, "finding", fail)
        if not re.match(UID_RE, f["uid"]):
            raise fail(f"finding uid {f['uid'][:40]!r} is malformed")
        if f["kind"] not in result_types() or f["data"].get("type") != f["kind"]:
            raise fail(f"finding of unknown type {f['kind'][:60]!r} (known: {', '.join(sorted(result_types()))})")
        for role, meta in f["files"].items():
            if role not in ROLES or not isinstance(meta, dict) or meta.get("hash") not in m["blobs"] \
                    or m["blobs"][meta["hash"]] != meta.get("size"):
                raise fail(f"finding {f['uid'][:8]} lists a bad file {role[:40]!r}")
            referenced.add(meta["hash"])
    if referenced != set(m["blobs"]):
        raise fail("the manifest lists files no finding uses")
    return m


def _expect(obj: Any, fields: dict[str, Any], what: str, fail) -> None:
    if not isinstance(obj, dict):
        raise fail(f"{what} is not an object")
    for name, typ in fields.items():
        if name not in obj:
            raise fail(f"{what} is missing {name!r}")
        value = obj[name]
        if not isinstance(value, typ) or isinstance(value, bool):  # no manifest field is a boolean
            raise fail(f"{what} field {name!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise fail(f"{what} field {name!r} = {value} does not fit a 64-bit integer")
        if isinstance(value, int) and name in ("version", "added_in", "removed_in") and value < 1:
            raise fail(f"{what} field {name!r} = {value} must be a version ≥ 1")


def _check_result_rebuilds(f: dict[str, Any], blob_data: dict[str, bytes], fail) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    try:
        tensors = load_tensors(blob_data[f["files"]["tensors"]["hash"]]) if "tensors" in f["files"] else {}
        Result.from_dict(f["data"], tensors)
    except (SafetensorError, ValueError, TypeError, KeyError) as err:
        raise fail(f"finding {f['uid'][:8]} ({f['kind']}) does not rebuild: {err}") from None
