"""The archive's objects: a specimen, its findings and its history — views of their rows that read
and write them through the archive (``store.Archive``) they came from. Every write is one
transaction that first bumps the specimen's version (taking the write lock) and logs an event.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Engine, delete, insert, or_, select, update

from ..results import Result
from .blobs import BlobStore
from .database import ArchiveError, writing
from .schema import events, finding_files, findings, specimens
from .schema import tags as tag_table

ROW = [c for c in findings.c if c.name != "data"]  # a finding's columns but its (large) result data


class Rows(Protocol):
    """What the objects read and write through: an ``Archive`` (``store.py``)."""

    engine: Engine
    blobs: BlobStore

    def get(self, key: str) -> "Specimen": ...


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_uid() -> str:
    return uuid.uuid4().hex


def bump(conn, specimen_id: int, action: str, detail: str) -> int:
    """Increment a specimen's version (the first statement of a write: takes the write lock) and
    log the event; returns the new version."""
    now = timestamp()
    conn.execute(update(specimens).where(specimens.c.id == specimen_id)
                 .values(version=specimens.c.version + 1, updated=now))
    version = conn.execute(select(specimens.c.version).where(specimens.c.id == specimen_id)).scalar_one()
    conn.execute(insert(events).values(specimen_id=specimen_id, version=version, time=now, action=action, detail=detail))
    return version


class PreparedFinding(NamedTuple):
    """A finding ready for a transaction: its row, {role: (hash, size)} and the files' bytes by hash
    (kept until the commit: ``keep_files`` writes back any that a concurrent ``remove`` deleted)."""

    row: dict
    files: dict[str, tuple[str, int]]
    contents: dict[str, bytes]


def prepare_finding(blobs: BlobStore, result: Result, notes: str = "", figure: bool = True) -> PreparedFinding:
    """Write a result's files (tensors, figure) and return its finding: everything a transaction
    needs to add it, nothing in the database yet."""
    from safetensors.torch import save as save_tensors

    if not isinstance(result, Result):
        raise ArchiveError(f"a finding takes a mechscope result, not {type(result).__name__}")
    data, tensors = result.to_dict()
    contents: dict[str, bytes] = {}
    if tensors:
        contents["tensors"] = save_tensors(tensors)
    if figure:
        png = result.png_bytes()
        if png is not None:
            contents["figure.png"] = png
        if callable(getattr(result, "svg", None)):
            contents["figure.svg"] = result.svg().encode()
    from .figures import png_problem, svg_problem

    for role, problem in (("figure.png", png_problem), ("figure.svg", svg_problem)):
        why = problem(contents[role][:4096], len(contents[role])) if role in contents else None
        if why:
            raise ArchiveError(f"{type(result).__name__}'s {role} {why}; nothing was stored")
    files = {role: blobs.put(content) for role, content in contents.items()}
    row = dict(uid=new_uid(), kind=type(result).__name__, title=result.title, summary=result.summary(),
               data=json.dumps(data, default=str), evidence=json.dumps(result.evidence(), default=str),
               notes=notes, created=timestamp())
    return PreparedFinding(row, files, {files[role][0]: content for role, content in contents.items()})


def keep_files(blobs: BlobStore, prepared: PreparedFinding) -> None:
    """Inside a write transaction (``database.writing``, which deleters hold too): make sure every file
    of ``prepared`` is there and fresh — written again if a concurrent ``remove`` or garbage collection
    deleted it after ``prepare_finding``, touched otherwise — so the commit never references a lost file."""
    for content in prepared.contents.values():
        blobs.put(content)


def insert_finding(conn, specimen_id: int, row: dict, files: dict[str, tuple[str, int]]) -> int:
    """Add a prepared finding inside the transaction ``conn`` (one version bump); returns its version."""
    version = bump(conn, specimen_id, "added", f"{row['kind']} {row['uid'][:8]}: {row['title']}")
    fid = conn.execute(insert(findings).values(specimen_id=specimen_id, added_in=version, **row)).inserted_primary_key[0]
    for role, (digest, size) in files.items():
        conn.execute(insert(finding_files).values(finding_id=fid, role=role, hash=digest, size=size))
    return version


def clean_tag(tag: str) -> str:
    tag = str(tag).strip()
    if not tag or len(tag) > 100:
        raise ArchiveError(f"tag {tag!r} must be 1..100 characters")
    return tag


@dataclass
class Event:
    """One change of a specimen: the version it made, when, what, and a line about it."""

    version: int
    time: str
    action: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Finding:
    """One saved result of a specimen. ``result()`` rebuilds it (files checked by hash); ``data``
    (the result's JSON, possibly megabytes) is read from the database when first used."""

    archive: Rows = field(repr=False)
    id: int = field(repr=False)
    uid: str
    kind: str
    title: str
    summary: str
    evidence: dict
    notes: str
    created: str
    added_in: int
    removed_in: int | None
    files: dict[str, tuple[str, int]]

    def __repr__(self) -> str:
        return f"Finding({self.kind}, uid {self.uid[:8]}, {self.title!r})"

    @functools.cached_property
    def data(self) -> dict[str, Any]:
        """The result's JSON (``Result.to_dict``'s first half)."""
        with self.archive.engine.connect() as conn:
            return json.loads(conn.execute(select(findings.c.data).where(findings.c.id == self.id)).scalar_one())

    @functools.cached_property
    def data_digest(self) -> str:
        """A digest of the result's JSON as stored: what a cache of its rendering is keyed by (an import
        with ``replace`` can give a finding of other contents the same uid and, on SQLite, the same row id)."""
        import hashlib

        with self.archive.engine.connect() as conn:
            text = conn.execute(select(findings.c.data).where(findings.c.id == self.id)).scalar_one()
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def to_json(self, data: bool = False) -> dict[str, Any]:
        """The finding as JSON (what export writes, import reads and the web API returns); files as
        {role: {"hash", "size"}}; the result's ``data`` only when asked."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("archive", "id", "files")}
        out["files"] = {role: {"hash": h, "size": n} for role, (h, n) in self.files.items()}
        return out | ({"data": self.data} if data else {})

    def result(self) -> Result:
        from safetensors.torch import load as load_tensors

        tensors = {}
        if "tensors" in self.files:
            tensors = load_tensors(self.archive.blobs.get(self.files["tensors"][0]))
        return Result.from_dict(self.data, tensors, check=False)  # rows are checked when written (import validates)

    def file(self, role: str) -> bytes | None:
        return self.archive.blobs.get(self.files[role][0]) if role in self.files else None


@dataclass
class Specimen:
    """A view of one specimen row; methods read and write the archive."""

    archive: Rows = field(repr=False)
    id: int = field(repr=False)
    uid: str
    name: str
    description: str
    model_name: str
    model_fingerprint: str
    model_config: dict
    task: str
    dataset: str
    dataset_seed: int | None
    dataset_hash: str
    version: int
    created: str
    updated: str
    tags: list[str]

    def __repr__(self) -> str:
        return f"Specimen({self.name!r}, uid {self.uid[:8]}, v{self.version}, model {self.model_name!r}, tags {self.tags})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: the specimen's report (its findings, viewers working), as a result shows."""
        from ..report.notebook import specimen_html

        return {"text/html": specimen_html(self), "text/plain": repr(self)}

    def to_json(self) -> dict[str, Any]:
        """The specimen's own fields as JSON (what export writes, import reads and the web API returns)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("archive", "id")}

    def add(self, result: Result, *, notes: str = "", figure: bool = True) -> Finding:
        """Store ``result`` as a finding: JSON in the database, tensors (safetensors) and the
        figure (PNG) as content-addressed files."""
        prepared = prepare_finding(self.archive.blobs, result, notes, figure)
        with writing(self.archive.engine) as conn:
            keep_files(self.archive.blobs, prepared)
            insert_finding(conn, self.id, prepared.row, prepared.files)
        self.refresh()
        return self.finding(prepared.row["uid"])

    def findings(self, version: int | None = None, *, removed: bool = False) -> list[Finding]:
        """The findings present now, or at ``version`` of the specimen; ``removed=True``: every
        finding it ever had."""
        q = select(*ROW).where(findings.c.specimen_id == self.id)
        if removed:
            pass
        elif version is None:
            q = q.where(findings.c.removed_in.is_(None))
        else:
            q = q.where(findings.c.added_in <= version).where(
                or_(findings.c.removed_in.is_(None), findings.c.removed_in > version))
        with self.archive.engine.connect() as conn:
            rows = conn.execute(q.order_by(findings.c.id)).mappings().all()
            return [self._finding(conn, r) for r in rows]

    def finding(self, uid: str) -> Finding:
        with self.archive.engine.connect() as conn:
            row = conn.execute(select(*ROW).where(findings.c.specimen_id == self.id)
                               .where(findings.c.uid.startswith(uid, autoescape=True))).mappings().all()
            if len(row) != 1:
                raise ArchiveError(f"{'no' if not row else 'several'} findings {uid!r} in specimen {self.name!r}")
            return self._finding(conn, row[0])

    def remove_finding(self, uid: str) -> None:
        """Remove a finding from the current version (it stays in the history)."""
        found = self.finding(uid)
        with writing(self.archive.engine) as conn:
            version = self._bump(conn, "removed", f"{found.kind} {found.uid[:8]}: {found.title}")
            conn.execute(update(findings).where(findings.c.id == found.id).values(removed_in=version))
        self.refresh()

    def set_notes(self, uid: str, notes: str) -> None:
        found = self.finding(uid)
        with writing(self.archive.engine) as conn:
            self._bump(conn, "notes", f"{found.uid[:8]}: {notes[:80]}")
            conn.execute(update(findings).where(findings.c.id == found.id).values(notes=notes))

    def tag(self, *names: str) -> None:
        new = sorted({clean_tag(t) for t in names} - set(self.tags))
        if not new:
            return
        with writing(self.archive.engine) as conn:
            self._bump(conn, "tagged", ", ".join(new))
            for t in new:
                conn.execute(insert(tag_table).values(specimen_id=self.id, tag=t))
        self.refresh()

    def untag(self, *names: str) -> None:
        gone = sorted(set(names) & set(self.tags))
        if not gone:
            return
        with writing(self.archive.engine) as conn:
            self._bump(conn, "untagged", ", ".join(gone))
            conn.execute(delete(tag_table).where(tag_table.c.specimen_id == self.id).where(tag_table.c.tag.in_(gone)))
        self.refresh()

    def history(self) -> list[Event]:
        with self.archive.engine.connect() as conn:
            rows = conn.execute(select(events).where(events.c.specimen_id == self.id).order_by(events.c.version)).mappings()
            return [Event(r["version"], r["time"], r["action"], r["detail"]) for r in rows]

    def refresh(self) -> "Specimen":
        fresh = self.archive.get(self.uid)
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "archive"})
        return self

    def _bump(self, conn, action: str, detail: str) -> int:
        return bump(conn, self.id, action, detail)

    def _finding(self, conn, row) -> Finding:
        files = {r.role: (r.hash, r.size) for r in conn.execute(
            select(finding_files).where(finding_files.c.finding_id == row["id"]))}
        return Finding(self.archive, row["id"], row["uid"], row["kind"], row["title"], row["summary"],
                       json.loads(row["evidence"]), row["notes"], row["created"], row["added_in"], row["removed_in"],
                       files)


