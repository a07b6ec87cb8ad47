"""Where an archive lives and its database: the location (a directory, a SQLite or PostgreSQL URL),
the engine (SQLite in WAL mode with our own transactions), and the schema migrations (alembic).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event

from .faults import crash_point

MIGRATIONS = Path(__file__).with_name("migrations")


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
