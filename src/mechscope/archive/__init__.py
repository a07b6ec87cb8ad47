"""The specimen archive: ``ms.archive.open()``, ``specimen.add(result)``, search, export/import.

>>> arch = ms.archive.open()                      # SQLite in the user data dir; or a dir / URL
>>> spec = arch.create("SmolLM2 factual recall", model=model, task="factual-recall", tags=["demo"])
>>> spec.add(scan, notes="L23H4 carries most of it")
>>> arch.search(tag="demo"), arch.export(spec.uid, "spec.mscope"), arch.import_file("spec.mscope")
"""

from .blobs import BlobError
from .database import ArchiveError, default_location
from .specimens import Event, Finding, Specimen
from .store import Archive, open_archive

open = open_archive  # noqa: A001 - the documented spelling: ms.archive.open()

__all__ = ["Archive", "ArchiveError", "BlobError", "Event", "Finding", "Specimen", "default_location", "open"]
