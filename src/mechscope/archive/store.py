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

import json
import os
from contextlib import ExitStack
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..results import Result
from .blobs import BlobStore
from .database import ArchiveError, connect, migrate, resolve, writing
from .faults import crash_point
from .schema import events, finding_files, findings, specimens
from .schema import tags as tag_table
from .specimens import Specimen, bump, clean_tag, insert_finding, keep_files, new_uid, prepare_finding, timestamp
from .transfer import ArchiveImportError, manifest_of, read_export, write_export

GRACE_SECONDS = 3600.0  # unreferenced files younger than this may be a running writer's: kept


def open_archive(location: str | os.PathLike | None = None, *, files: str | os.PathLike | None = None) -> "Archive":
    """Open (creating and migrating as needed) the archive at ``location``.

    ``location``: a directory (SQLite file + files inside), ``sqlite:///path.db``, a PostgreSQL URL
    (``postgresql+psycopg://user@host/db``; files go to ``files`` or $MECHSCOPE_ARCHIVE_FILES), or
    None for the default archive in the user data dir.
    """
    url, file_dir = resolve(location, files)
    return Archive(url, file_dir)


NOTEBOOK_ROWS = 50  # specimens an archive lists in a notebook cell


class Archive:
    """A specimen archive. Use ``open_archive`` (``ms.archive.open``) to get one."""

    def __init__(self, url: str, files: Path):
        self.url = url
        self.engine = connect(url)
        self.blobs = BlobStore(files)
        migrate(self.engine)
        self.collect_garbage()

    def __repr__(self) -> str:
        return f"Archive({self.engine.url.render_as_string(hide_password=True)!r})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook's view: its newest specimens (name, uid, model, task, version, tags, last change)."""
        from ..display import table_html

        found = self.specimens()
        rows = [(s.name, s.uid[:8], s.model_name, s.task, f"v{s.version}", ", ".join(s.tags), s.updated)
                for s in found[:NOTEBOOK_ROWS]]
        title = f"{self!r}: {len(found)} specimen(s)"
        header = ("name", "uid", "model", "task", "version", "tags", "updated")
        return {"text/html": table_html(title, header, rows, more=max(0, len(found) - NOTEBOOK_ROWS)),
                "text/plain": title}

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
        with writing(self.engine) as conn:
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
        tags = [clean_tag(tag) for tag in tags]
        now, uid = timestamp(), new_uid()
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
            prepared.append(prepare_finding(self.blobs, result, notes))
            crash_point("record")
        fingerprint = model.fingerprint if model is not None else None
        with writing(self.engine) as conn:
            for finding in prepared:
                keep_files(self.blobs, finding)
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
                version = bump(conn, sid, "removed", f"{row.kind} {row.uid[:8]}: {row.title}")
                conn.execute(update(findings).where(findings.c.id == row.id).values(removed_in=version))
                crash_point("record")
            for finding in prepared:
                insert_finding(conn, sid, finding.row, finding.files)
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
        with writing(self.engine) as conn:
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
        with writing(self.engine) as conn:  # no writer is between keeping its files and committing
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
        with writing(self.engine) as conn:  # no writer is between keeping its files and committing
            used = set(conn.execute(select(finding_files.c.hash)).scalars())
            orphans = {h for h in self.blobs.all() - used if self.blobs.age(h) >= grace}
            self.blobs.remove(orphans)
        self.blobs.remove_temporary(grace)
        return orphans

    def export(self, key: str, path: str | os.PathLike) -> Path:
        """Write one specimen (findings, files, tags, history, removed findings included) to a single
        archive file, atomically (``transfer.py``: the file's format)."""
        return write_export(Path(path), manifest_of(self.get(key)), self.blobs)

    def import_file(self, path: str | os.PathLike, *, replace: bool = False) -> "Specimen":
        """Import a file written by ``export``: validated completely first (``transfer.read_export``,
        its files streamed to staging), then its files move in under their hashes and one
        transaction adds the rows; a refused file changes nothing."""
        path = Path(path)
        with ExitStack() as cleanup:
            manifest, staged = read_export(self.blobs, path, cleanup)
            return self._add_import(path, manifest, staged, replace)

    def _add_import(self, path: Path, manifest: dict[str, Any], staged: dict[str, Path], replace: bool) -> "Specimen":
        spec = manifest["specimen"]
        with self.engine.connect() as conn:
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
        new_files = [d for d in staged if not self.blobs.exists(d)]
        try:
            with writing(self.engine) as conn:
                for digest in staged:  # under the write lock: no deleter runs until the rows commit
                    if digest in new_files or not self.blobs.touch(digest):
                        self.blobs.adopt(staged[digest], digest)
                        crash_point("import")
                if existing is not None:
                    conn.execute(delete(specimens).where(specimens.c.id == existing))
                sid = conn.execute(insert(specimens).values(
                    **{**spec, "model_config": json.dumps(spec["model_config"])})).inserted_primary_key[0]
                for tag in manifest["tags"]:
                    conn.execute(insert(tag_table).values(specimen_id=sid, tag=tag))
                for e in manifest["events"]:
                    conn.execute(insert(events).values(specimen_id=sid, **e))
                crash_point("import")
                for f in manifest["findings"]:
                    row = {k: v for k, v in f.items() if k not in ("files", "data", "evidence")}
                    fid = conn.execute(insert(findings).values(
                        specimen_id=sid, data=json.dumps(f["data"]), evidence=json.dumps(f["evidence"]),
                        **row)).inserted_primary_key[0]
                    for role, meta in f["files"].items():
                        conn.execute(insert(finding_files).values(finding_id=fid, role=role, hash=meta["hash"],
                                                                  size=meta["size"]))
                    crash_point("import")
        except BaseException as err:  # a refused import leaves the archive as it was
            self.drop_unreferenced(new_files)
            if isinstance(err, SQLAlchemyError):  # e.g. duplicate versions or tags the checks above did not catch
                cause = err.orig or err
                raise ArchiveImportError(f"{path}: the archive refused its contents ({type(cause).__name__}: "
                                         f"{str(cause).splitlines()[0]}); nothing was imported") from None
            raise
        crash_point("import")
        return self.get(spec["uid"])

    def _specimen(self, conn, row) -> "Specimen":
        tag_list = sorted(conn.execute(select(tag_table.c.tag).where(tag_table.c.specimen_id == row["id"])).scalars())
        return Specimen(self, row["id"], row["uid"], row["name"], row["description"], row["model_name"],
                        row["model_fingerprint"], json.loads(row["model_config"] or "{}"), row["task"], row["dataset"],
                        row["dataset_seed"], row["dataset_hash"], row["version"], row["created"], row["updated"], tag_list)


