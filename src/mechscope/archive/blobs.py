"""Content-addressed files beside the database: ``<root>/<sha256[:2]>/<sha256>``, checked on read."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterable

HASH_RE = re.compile(r"^[0-9a-f]{64}$")
STAGING = "staging"  # where streamed files wait for their hash to be known (not a hex prefix)


class BlobError(RuntimeError):
    """A missing or corrupted archive file."""


class BlobStore:
    """Immutable files named by the sha256 of their bytes. Writes are atomic (temp file, fsync,
    rename), so a crash never leaves a partial file under a real name."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not HASH_RE.match(digest):
            raise BlobError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; returns (sha256, size). Storing bytes already there only touches their file:
        a writer reusing an old file makes it young again, so the garbage collection's grace covers it."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if path.exists() and path.stat().st_size == len(data):
            try:
                os.utime(path)
                return digest, len(data)
            except FileNotFoundError:  # deleted in between: write it again
                pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, len(data)

    def stage(self, chunks: Iterable[bytes], limit: int) -> tuple[Path, str, int]:
        """Write ``chunks`` to a temporary file of the store, hashing as they stream by (nothing
        held in memory); returns (its path, sha256, size). ``BlobError`` past ``limit`` bytes. The
        caller ``adopt``s the file or unlinks it; an interrupted one is swept by ``remove_temporary``."""
        folder = self.root / STAGING
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        h, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise BlobError(f"more than {limit} bytes")
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp), h.hexdigest(), size

    def adopt(self, staged: Path, digest: str) -> None:
        """Move a file written by ``stage`` in under its ``digest`` (atomic rename)."""
        path = self.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, path)

    def get(self, digest: str) -> bytes:
        """The bytes of ``digest``, verified against their hash."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobError(f"archive file {digest} is missing from {self.root}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobError(f"archive file {path} is corrupted: its content does not match its sha256")
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def all(self) -> set[str]:
        return {p.name for p in self.root.glob("??/*") if HASH_RE.match(p.name)}

    def age(self, digest: str) -> float:
        """Seconds since ``digest`` was written (0 when it is gone)."""
        try:
            return time.time() - self.path(digest).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def touch(self, digest: str) -> bool:
        """Make ``digest``'s file young again; False when it is gone."""
        try:
            os.utime(self.path(digest))
            return True
        except FileNotFoundError:
            return False

    def remove(self, digests: set[str]) -> None:
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)

    def remove_temporary(self, grace: float) -> int:
        """Remove the temporary files of interrupted writes older than ``grace`` seconds; returns how many."""
        removed = 0
        for tmp in [*self.root.glob("??/.tmp-*"), *self.root.glob(f"{STAGING}/.tmp-*")]:
            try:
                if time.time() - tmp.stat().st_mtime >= grace:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
