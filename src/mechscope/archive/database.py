"""Where an archive lives and its database: the location (a directory, a SQLite or PostgreSQL URL),
the engine (SQLite in WAL mode with our own transactions), and the schema migrations (alembic).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

from .faults import crash_point

MIGRATIONS = Path(__file__).with_name("migrations")
WRITE_LOCK = 0x6D73636F  # PostgreSQL: the advisory lock every archive write holds ("msco")
BUSY_SECONDS = 60  # SQLite: how long a writer waits for another's lock (connect's timeout)


class ArchiveError(RuntimeError):
    """A request the archive cannot satisfy: unknown specimen, schema too new, bad input."""


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


def connect(url: str) -> Engine:
    """The engine of the database at ``url`` (SQLite: pysqlite's transaction handling off, WAL, full sync,
    foreign keys; every transaction begun explicitly, so DDL rolls back too)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_SECONDS, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # pysqlite's transaction handling off: DDL too runs in ours
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # a writer takes the write lock up front: no read-then-write upgrade to fail
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("archive_write") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the archive's one write lock from its start — SQLite ``BEGIN
    IMMEDIATE``, PostgreSQL a transaction-scoped advisory lock — so writers queue instead of failing
    when another commits first, and files are deleted (by ``remove`` and the garbage collection) only
    while no writer is between checking its files and committing the rows that reference them.
    Another process holding the lock past the busy timeout is a clear ``ArchiveError``."""
    try:
        with engine.execution_options(archive_write=True).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            yield conn
    except OperationalError as err:
        if "locked" not in str(err.orig):
            raise
        raise ArchiveError(f"the archive is busy: another process held its write lock for {BUSY_SECONDS} s "
                           f"({engine.url.render_as_string(hide_password=True)}); try again") from None


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
    with writing(engine) as conn:  # two first opens at once: the second waits, then finds the schema built
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
