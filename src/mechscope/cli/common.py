"""What the commands share: one grammar and one way to write what they produce.

Every command is a parser made by ``command`` (a one-line summary and an example in its help); a
group of commands (``sae``, ``vision``, ``specimens``) has a subcommand each. The outputs mean the
same everywhere: ``-o/--out PAGE`` is the HTML page (by default ``NAME.html`` in the pages folder,
``$MECHSCOPE_PAGES`` or ``pages/`` in the user data dir — never silently the working directory),
``--json PATH`` the result's JSON (``-``: print it), ``--archive [WHERE]`` stores the findings as a
specimen (bare: the default archive), ``--dir DIR`` a folder a command writes; ``-q/--quiet`` drops
progress bars, ``-n`` counts examples, ``-k`` counts top items. ``emit`` writes all three.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..models.embedded import EMBEDDED

if TYPE_CHECKING:
    from ..results import Result

MODEL_HELP = f"embedded model ({', '.join(EMBEDDED)}) or a local HF directory"
ARCHIVE_HELP = "archive directory or database URL (default: $MECHSCOPE_ARCHIVE or the user data dir)"


def command(sub, name: str, summary: str, examples: str | Sequence[str], *,
            parent: str = "") -> argparse.ArgumentParser:
    """A subcommand ``name`` of ``sub`` whose help gives ``summary`` and the ``examples`` (each a whole
    command line); ``args.command_name`` becomes its full name (``"sae eval"``)."""
    p = _parser(sub, name, summary, examples)
    p.set_defaults(command_name=f"{parent} {name}".strip())
    return p


def group(sub, name: str, summary: str, examples: Sequence[str]) -> Any:
    """A command ``name`` made of subcommands (``mechscope NAME ACTION ...``, one example each): its
    subparsers."""
    return _parser(sub, name, summary, examples).add_subparsers(dest="action", required=True, metavar="ACTION")


def _parser(sub, name: str, summary: str, examples: str | Sequence[str]) -> argparse.ArgumentParser:
    lines = [examples] if isinstance(examples, str) else list(examples)
    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                          epilog=("example:\n  " if len(lines) == 1 else "examples:\n  ") + "\n  ".join(lines),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def outputs(p: argparse.ArgumentParser, page: str | None, *, json_help: str = "also write the result's JSON to PATH",
            archive: bool = True) -> None:
    """The output options: ``--out`` (a page named ``page``.html in the pages folder by default; with
    ``page=None`` only when asked), ``--json`` (described by ``json_help``), ``--archive``."""
    default = f"default: {page}.html in the pages folder ($MECHSCOPE_PAGES, else pages/ in the user data dir)" \
        if page else "none unless given"
    p.add_argument("-o", "--out", metavar="PAGE", help=f"the HTML page to write ({default})")
    p.set_defaults(page_name=page)
    p.add_argument("--json", metavar="PATH", help=f"{json_help} ('-' prints it)")
    if archive:
        p.add_argument("--archive", nargs="?", const="", metavar="WHERE",
                       help="store the findings as a specimen, in WHERE (a directory or database URL) or, bare, "
                            "in the default archive ($MECHSCOPE_ARCHIVE or the user data dir)")


def pages_dir() -> Path:
    """Where pages go unless ``--out`` names one: $MECHSCOPE_PAGES, else ``pages/`` in the user data dir."""
    env = os.environ.get("MECHSCOPE_PAGES")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("mechscope")) / "pages"


def open_archive(args):
    """The archive named by ``--archive`` (bare or absent: the default one)."""
    from ..archive import open as open_archive

    return open_archive(getattr(args, "archive", None) or None)


def write_text(path: str | os.PathLike, text: str, what: str = "") -> None:
    """Write ``text`` to ``path`` atomically and say so; ``-`` prints it instead."""
    from ..files import write_atomic

    if str(path) == "-":
        print(text)
        return
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"wrote {path}{f' ({what})' if what else ''}")


def emit(args, findings: Sequence[tuple["Result", str]], title: str, *, model: Any = None, name: str | None = None,
         task: str | None = None, tags: Sequence[str] = (), json_text: str | None = None) -> None:
    """Write what a command produced, the same way for every command: the page of every finding
    (``--out``, else the pages folder when the command has a default page), the first finding's JSON
    (``--json``; ``json_text`` where a result's exchange format is another), the specimen ``name``
    (``--archive``) of ``model`` on ``task``."""
    from markupsafe import Markup

    from ..report.page import page

    path = args.out or (pages_dir() / f"{args.page_name}.html" if args.page_name else None)
    if path is not None:
        write_text(path, page(title, Markup("").join(result.html() for result, _ in findings)))
    if getattr(args, "json", None):
        write_text(args.json, json_text if json_text is not None else findings[0][0].to_json())
    if getattr(args, "archive", None) is not None:
        create = {"tags": list(tags)} | ({"task": task} if task else {})
        spec = open_archive(args).record(name or title, list(findings), model=model, **create)
        print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
