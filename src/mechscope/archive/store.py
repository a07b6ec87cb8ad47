"""The specimen archive: SQLAlchemy (SQLite by default, PostgreSQL by URL) plus content-addressed files.

A *specimen* is one model studied for one behaviour; its *findings* are saved results with their
evidence, notes and provenance. Every change bumps the specimen's version and logs an event, and
removed findings stay in the database, so ``findings(version=k)`` shows the specimen as it was.

Crash safety: every write is one database transaction (on SQLite too: pysqlite's own transaction
handling, which runs DDL outside any transaction, is switched off and transactions are begun
explicitly, so creating the schema rolls back as a whole). A finding's files are written
(atomically) before the transaction that references them commits, so a committed finding always
has its files; an interrupted write leaves at worst unreferenced files, which ``collect_garbage``
(run on open, and by ``mechscope specimens gc``) removes once they are older than a grace period
(a concurrent writer's files are unreferenced until it commits). ``faults.crash_point`` marks the
steps that the crash tests interrupt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import Engine, create_engine, delete, event, func, insert, or_, select, update

from ..results import Result
from .blobs import BlobStore
from .faults import crash_point
from .schema import events, finding_files, findings, specimens
from .schema import tags as tag_table

MIGRATIONS = Path(__file__).with_name("migrations")
ROW = [c for c in findings.c if c.name != "data"]  # a finding's columns but its (large) result data
GRACE_SECONDS = 3600.0  # unreferenced files younger than this may be a running writer's: kept


class ArchiveError(RuntimeError):
    """A request the archive cannot satisfy: unknown specimen, schema too new, bad input."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _uid() -> str:
    return uuid.uuid4().hex


def default_location() -> str:
    """$MECHSCOPE_ARCHIVE, else ``archive/`` in the platform's user data dir."""
    env = os.environ.get("MECHSCOPE_ARCHIVE")
    if env:
        return env
    import platformdirs

    return str(Path(platformdirs.user_data_dir("mechscope")) / "archive")


def resolve(location: str | os.PathLike | None, files: str | os.PathLike | None = None) -> tuple[str, Path]:
    """(database URL, files directory) for a directory, a SQLite/PostgreSQL URL, or None (default)."""
    location = str(location) if location is not None else default_location()
    if "://" not in location:
        root = Path(location).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'archive.db'}", Path(files) if files else root / "files"
    if location.startswith("sqlite:///"):
        db = Path(location[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        return location, Path(files) if files else db.parent / "files"
    if files is None:
        files = os.environ.get("MECHSCOPE_ARCHIVE_FILES")
    if files is None:
        import platformdirs

        digest = hashlib.blake2b(location.encode(), digest_size=6).hexdigest()
        files = Path(platformdirs.user_data_dir("mechscope")) / f"archive-files-{digest}"
    return location, Path(files)


def open_archive(location: str | os.PathLike | None = None, *, files: str | os.PathLike | None = None) -> "Archive":
    """Open (creating and migrating as needed) the archive at ``location``.

    ``location``: a directory (SQLite file + files inside), ``sqlite:///path.db``, a PostgreSQL URL
    (``postgresql+psycopg://user@host/db``; files go to ``files`` or $MECHSCOPE_ARCHIVE_FILES), or
    None for the default archive in the user data dir.
    """
    url, file_dir = resolve(location, files)
    return Archive(url, file_dir)


class Archive:
    """A specimen archive. Use ``open_archive`` (``ms.archive.open``) to get one."""

    def __init__(self, url: str, files: Path):
        self.url = url
        self.engine = _engine(url)
        self.blobs = BlobStore(files)
        migrate(self.engine)
        self.collect_garbage()

    def __repr__(self) -> str:
        return f"Archive({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- specimens -----------------------------------------------------------------------------
    def create(self, name: str, *, model: Any = None, task: str = "", dataset: str = "", seed: int | None = None,
               dataset_hash: str = "", description: str = "", tags: Iterable[str] = ()) -> "Specimen":
        """A new specimen. ``model`` is a mechscope Model or a toy model (name, fingerprint and
        config are kept)."""
        with self.engine.begin() as conn:
            _, uid = self._create(conn, name, model=model, task=task, dataset=dataset, seed=seed,
                                  dataset_hash=dataset_hash, description=description, tags=tags)
        return self.get(uid)

    def _create(self, conn, name: str, *, model: Any = None, task: str = "", dataset: str = "",
                seed: int | None = None, dataset_hash: str = "", description: str = "",
                tags: Iterable[str] = ()) -> tuple[int, str]:
        """Insert a specimen inside the transaction ``conn``; returns its (id, uid)."""
        if not name or not name.strip():
            raise ArchiveError("a specimen needs a non-empty name")
        model_name, fingerprint, config = "", "", {}
        if model is not None:
            cfg = model.cfg
            model_name, fingerprint, config = model.name, model.fingerprint, asdict(cfg) if is_dataclass(cfg) else dict(cfg)
        tags = [_clean_tag(tag) for tag in tags]
        now, uid = _now(), _uid()
        sid = conn.execute(insert(specimens).values(
            uid=uid, name=name.strip(), description=description, model_name=model_name,
            model_fingerprint=fingerprint, model_config=json.dumps(config), task=task, dataset=dataset,
            dataset_seed=seed, dataset_hash=dataset_hash, version=1, created=now, updated=now,
        )).inserted_primary_key[0]
        conn.execute(insert(events).values(specimen_id=sid, version=1, time=now, action="created", detail=name))
        for tag in sorted(set(tags)):
            conn.execute(insert(tag_table).values(specimen_id=sid, tag=tag))
        return sid, uid

    def record(self, name: str, results: Iterable[tuple[Result, str]], *, model: Any = None,
               **create: Any) -> "Specimen":
        """Store ``results`` ((result, notes) pairs) as the current findings of the specimen
        called ``name`` for ``model`` (matched by fingerprint), created with ``create`` (task,
        dataset, description, tags, ...) when missing. Earlier findings are soft-removed: the
        history keeps them. All or nothing: the files are written first, then one transaction
        creates the specimen if needed, removes the old findings and adds the new ones — a crash
        at any point leaves the specimen with exactly its old findings or exactly its new ones."""
        prepared = []
        for result, notes in results:
            prepared.append(_prepare_finding(self.blobs, result, notes))
            crash_point("record")
        fingerprint = model.fingerprint if model is not None else None
        with self.engine.begin() as conn:
            q = select(specimens.c.id, specimens.c.uid).where(specimens.c.name == name.strip())
            if fingerprint is not None:
                q = q.where(specimens.c.model_fingerprint.startswith(fingerprint, autoescape=True))
            found = conn.execute(q.order_by(specimens.c.id.desc())).first()
            sid, uid = (found.id, found.uid) if found else self._create(conn, name, model=model, **create)
            crash_point("record")
            old = conn.execute(select(findings.c.id, findings.c.uid, findings.c.kind, findings.c.title)
                               .where(findings.c.specimen_id == sid).where(findings.c.removed_in.is_(None))
                               .order_by(findings.c.id)).all()
            for row in old:
                version = _bump(conn, sid, "removed", f"{row.kind} {row.uid[:8]}: {row.title}")
                conn.execute(update(findings).where(findings.c.id == row.id).values(removed_in=version))
                crash_point("record")
            for row, files in prepared:
                _insert_finding(conn, sid, row, files)
                crash_point("record")
        crash_point("record")
        return self.get(uid)

    def get(self, key: str) -> "Specimen":
        """The specimen with this uid (or unique uid prefix, or unique name)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(specimens).where(specimens.c.uid == key)).mappings().all()
            if not rows and len(key) >= 4:
                rows = conn.execute(select(specimens).where(specimens.c.uid.startswith(key, autoescape=True))).mappings().all()
            if not rows:
                rows = conn.execute(select(specimens).where(specimens.c.name == key)).mappings().all()
            if len(rows) > 1:
                raise ArchiveError(f"{key!r} matches {len(rows)} specimens ({', '.join(r['uid'][:8] for r in rows)}); use a uid")
            if not rows:
                names = conn.execute(select(specimens.c.name, specimens.c.uid).order_by(specimens.c.id.desc()).limit(10)).all()
                known = ", ".join(f"{n} ({u[:8]})" for n, u in names) or "none"
                raise ArchiveError(f"no specimen {key!r} in {self!r}; recent: {known}")
            return self._specimen(conn, rows[0])

    def specimens(self) -> list["Specimen"]:
        return self.search()

    def search(self, text: str | None = None, *, model: str | None = None, task: str | None = None,
               tag: str | None = None, kind: str | None = None) -> list["Specimen"]:
        """Specimens matching all given filters, newest first. ``text`` searches names,
        descriptions and finding notes/titles; ``model`` matches the model name or fingerprint;
        ``kind`` keeps specimens holding a current finding of that result type."""
        q = select(specimens)
        if text:
            like = f"%{text.lower()}%"
            in_findings = select(findings.c.specimen_id).where(
                or_(func.lower(findings.c.notes).like(like), func.lower(findings.c.title).like(like)))
            q = q.where(or_(func.lower(specimens.c.name).like(like), func.lower(specimens.c.description).like(like),
                            specimens.c.id.in_(in_findings)))
        if model:
            q = q.where(or_(specimens.c.model_name == model, specimens.c.model_fingerprint.startswith(model, autoescape=True)))
        if task:
            q = q.where(specimens.c.task == task)
        if tag:
            q = q.where(specimens.c.id.in_(select(tag_table.c.specimen_id).where(tag_table.c.tag == tag)))
        if kind:
            q = q.where(specimens.c.id.in_(select(findings.c.specimen_id).where(
                findings.c.kind == kind, findings.c.removed_in.is_(None))))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(specimens.c.id.desc())).mappings().all()
            return [self._specimen(conn, r) for r in rows]

    def facets(self) -> dict[str, list[str]]:
        """The values the filters can take: models, tasks, tags and result types (kinds) present."""
        queries = {"models": select(specimens.c.model_name).where(specimens.c.model_name != ""),
                   "tasks": select(specimens.c.task).where(specimens.c.task != ""),
                   "tags": select(tag_table.c.tag),
                   "kinds": select(findings.c.kind).where(findings.c.removed_in.is_(None))}
        with self.engine.connect() as conn:
            return {name: sorted({row[0] for row in conn.execute(q.distinct())}) for name, q in queries.items()}

    def remove(self, key: str) -> None:
        """Delete a specimen with its findings and history; files no longer referenced are removed."""
        spec = self.get(key)
        with self.engine.begin() as conn:
            own = set(conn.execute(select(finding_files.c.hash).join(findings, findings.c.id == finding_files.c.finding_id)
                                   .where(findings.c.specimen_id == spec.id)).scalars())
            conn.execute(delete(specimens).where(specimens.c.uid == spec.uid))
        self.drop_unreferenced(own)

    def drop_unreferenced(self, digests: Iterable[str]) -> None:
        """Remove the files among ``digests`` that no finding references (whatever their age: the
        caller knows they were its own — a removed specimen's, a refused import's)."""
        digests = set(digests)
        if not digests:
            return
        with self.engine.connect() as conn:
            used = set(conn.execute(select(finding_files.c.hash).where(finding_files.c.hash.in_(digests))).scalars())
        self.blobs.remove(digests - used)

    def file_role(self, digest: str) -> str | None:
        """The role (``figure.png``, ``tensors``, ...) a finding gives the file ``digest``; None
        when no finding references it."""
        with self.engine.connect() as conn:
            return conn.execute(select(finding_files.c.role).where(finding_files.c.hash == digest).limit(1)).scalar()

    def collect_garbage(self, grace: float = GRACE_SECONDS) -> set[str]:
        """Remove files that no finding references and that are older than ``grace`` seconds
        (younger ones may belong to a write that has not committed yet), and temporary files left
        by interrupted writes; returns the hashes removed."""
        with self.engine.connect() as conn:
            used = set(conn.execute(select(finding_files.c.hash)).scalars())
        orphans = {h for h in self.blobs.all() - used if self.blobs.age(h) >= grace}
        self.blobs.remove(orphans)
        self.blobs.remove_temporary(grace)
        return orphans

    def export(self, key: str, path: str | os.PathLike) -> Path:
        """Write one specimen (findings, files, tags, history) to a single archive file."""
        from .transfer import export_specimen

        return export_specimen(self, self.get(key), Path(path))

    def import_file(self, path: str | os.PathLike, *, replace: bool = False) -> "Specimen":
        """Import a file written by ``export``; validates everything first, changes nothing on error."""
        from .transfer import import_specimen

        return import_specimen(self, Path(path), replace=replace)

    def _specimen(self, conn, row) -> "Specimen":
        tag_list = sorted(conn.execute(select(tag_table.c.tag).where(tag_table.c.specimen_id == row["id"])).scalars())
        return Specimen(self, row["id"], row["uid"], row["name"], row["description"], row["model_name"],
                        row["model_fingerprint"], json.loads(row["model_config"] or "{}"), row["task"], row["dataset"],
                        row["dataset_seed"], row["dataset_hash"], row["version"], row["created"], row["updated"], tag_list)


def _bump(conn, specimen_id: int, action: str, detail: str) -> int:
    """Increment a specimen's version (the first statement of a write: takes the write lock) and
    log the event; returns the new version."""
    now = _now()
    conn.execute(update(specimens).where(specimens.c.id == specimen_id)
                 .values(version=specimens.c.version + 1, updated=now))
    version = conn.execute(select(specimens.c.version).where(specimens.c.id == specimen_id)).scalar_one()
    conn.execute(insert(events).values(specimen_id=specimen_id, version=version, time=now, action=action, detail=detail))
    return version


def _prepare_finding(blobs: BlobStore, result: Result, notes: str = "",
                     figure: bool = True) -> tuple[dict, dict[str, tuple[str, int]]]:
    """Write a result's files (tensors, figure) and return its finding row and {role: (hash, size)}:
    everything a transaction needs to add it, nothing in the database yet."""
    from safetensors.torch import save as save_tensors

    if not isinstance(result, Result):
        raise ArchiveError(f"a finding takes a mechscope result, not {type(result).__name__}")
    data, tensors = result.to_dict()
    files: dict[str, tuple[str, int]] = {}
    if tensors:
        files["tensors"] = blobs.put(save_tensors(tensors))
    if figure:
        png = result.png_bytes()
        if png is not None:
            files["figure.png"] = blobs.put(png)
        if callable(getattr(result, "svg", None)):
            files["figure.svg"] = blobs.put(result.svg().encode())
    row = dict(uid=_uid(), kind=type(result).__name__, title=result.title, summary=result.summary(),
               data=json.dumps(data, default=str), evidence=json.dumps(result.evidence(), default=str),
               notes=notes, created=_now())
    return row, files


def _insert_finding(conn, specimen_id: int, row: dict, files: dict[str, tuple[str, int]]) -> int:
    """Add a prepared finding inside the transaction ``conn`` (one version bump); returns its version."""
    version = _bump(conn, specimen_id, "added", f"{row['kind']} {row['uid'][:8]}: {row['title']}")
    fid = conn.execute(insert(findings).values(specimen_id=specimen_id, added_in=version, **row)).inserted_primary_key[0]
    for role, (digest, size) in files.items():
        conn.execute(insert(finding_files).values(finding_id=fid, role=role, hash=digest, size=size))
    return version


def _clean_tag(tag: str) -> str:
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

    archive: Archive = field(repr=False)
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

    archive: Archive = field(repr=False)
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

    def to_json(self) -> dict[str, Any]:
        """The specimen's own fields as JSON (what export writes, import reads and the web API returns)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("archive", "id")}

    def add(self, result: Result, *, notes: str = "", figure: bool = True) -> Finding:
        """Store ``result`` as a finding: JSON in the database, tensors (safetensors) and the
        figure (PNG) as content-addressed files."""
        row, files = _prepare_finding(self.archive.blobs, result, notes, figure)
        with self.archive.engine.begin() as conn:
            _insert_finding(conn, self.id, row, files)
        self.refresh()
        return self.finding(row["uid"])

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
        with self.archive.engine.begin() as conn:
            version = self._bump(conn, "removed", f"{found.kind} {found.uid[:8]}: {found.title}")
            conn.execute(update(findings).where(findings.c.id == found.id).values(removed_in=version))
        self.refresh()

    def set_notes(self, uid: str, notes: str) -> None:
        found = self.finding(uid)
        with self.archive.engine.begin() as conn:
            self._bump(conn, "notes", f"{found.uid[:8]}: {notes[:80]}")
            conn.execute(update(findings).where(findings.c.id == found.id).values(notes=notes))

    def tag(self, *names: str) -> None:
        new = sorted({_clean_tag(t) for t in names} - set(self.tags))
        if not new:
            return
        with self.archive.engine.begin() as conn:
            self._bump(conn, "tagged", ", ".join(new))
            for t in new:
                conn.execute(insert(tag_table).values(specimen_id=self.id, tag=t))
        self.refresh()

    def untag(self, *names: str) -> None:
        gone = sorted(set(names) & set(self.tags))
        if not gone:
            return
        with self.archive.engine.begin() as conn:
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
        return _bump(conn, self.id, action, detail)

    def _finding(self, conn, row) -> Finding:
        files = {r.role: (r.hash, r.size) for r in conn.execute(
            select(finding_files).where(finding_files.c.finding_id == row["id"]))}
        return Finding(self.archive, row["id"], row["uid"], row["kind"], row["title"], row["summary"],
                       json.loads(row["evidence"]), row["notes"], row["created"], row["added_in"], row["removed_in"],
                       files)


# -- engine and migrations ---------------------------------------------------------------------

def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # pysqlite's transaction handling off: DDL too runs in ours
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; refuse a database newer than this mechscope."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        known = {rev.revision for rev in script.walk_revisions()}
        if current is not None and current not in known:
            raise ArchiveError(
                f"the archive's schema revision {current!r} is newer than this mechscope knows "
                f"(up to {head!r}); upgrade mechscope to open it"
            )
        cfg.attributes["connection"] = conn
        crash_point("migrate")
        command.upgrade(cfg, "head")
        crash_point("migrate")  # the schema is built but not committed


def schema_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
