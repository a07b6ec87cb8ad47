"""The archive's tables (SQLAlchemy Core). Changes go through a migration in ``migrations/``."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

specimens = Table(
    "specimens", metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("model_name", String(200), nullable=False, default=""),
    Column("model_fingerprint", String(64), nullable=False, default=""),
    Column("model_config", Text, nullable=False, default="{}"),  # JSON
    Column("task", String(200), nullable=False, default=""),
    Column("dataset", String(200), nullable=False, default=""),
    Column("dataset_seed", Integer, nullable=True),
    Column("dataset_hash", String(64), nullable=False, default=""),
    Column("version", Integer, nullable=False, default=1),
    Column("created", String(32), nullable=False),
    Column("updated", String(32), nullable=False),
)

findings = Table(
    "findings", metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("specimen_id", Integer, ForeignKey("specimens.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(100), nullable=False),  # the Result class name
    Column("title", String(300), nullable=False),
    Column("summary", Text, nullable=False, default=""),
    Column("data", Text, nullable=False),  # the result's JSON (tensors live in a file)
    Column("evidence", Text, nullable=False, default="{}"),  # JSON: the numbers that back the claim
    Column("notes", Text, nullable=False, default=""),
    Column("created", String(32), nullable=False),
    Column("added_in", Integer, nullable=False),  # specimen version that added it
    Column("removed_in", Integer, nullable=True),  # specimen version that removed it (kept for history)
)

finding_files = Table(
    "finding_files", metadata,
    Column("finding_id", Integer, ForeignKey("findings.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(50), primary_key=True),  # "tensors" (safetensors), "figure.png", "figure.svg"
    Column("hash", String(64), nullable=False, index=True),  # sha256 of the content-addressed file
    Column("size", Integer, nullable=False),
)

tags = Table(
    "tags", metadata,
    Column("specimen_id", Integer, ForeignKey("specimens.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True, index=True),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("specimen_id", Integer, ForeignKey("specimens.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("time", String(32), nullable=False),
    Column("action", String(50), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    UniqueConstraint("specimen_id", "version", name="uq_events_version"),
)
