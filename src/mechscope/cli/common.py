"""What the commands share: help texts, the archive they store into, the page they write."""

from __future__ import annotations

from ..models.load import EMBEDDED

MODEL_HELP = f"embedded model ({', '.join(EMBEDDED)}) or a local HF directory"
ARCHIVE_HELP = "archive directory or database URL (default: $MECHSCOPE_ARCHIVE or the user data dir)"


def open_archive(args):
    """The archive named by ``--archive`` (or the default one)."""
    from ..archive import open as open_archive

    return open_archive(args.archive)


def write_page(result, path: str) -> None:
    """Write ``result`` as a self-contained HTML page."""
    from ..files import write_atomic
    from ..report.page import page

    text = page(result.title, result.html())
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"wrote {path}")
