"""The `mechscope` command: one module per family of subcommands, each with its handlers and an
``add(sub)`` that declares their arguments."""

from __future__ import annotations

import argparse
import sys

from . import archive, circuits, compile, concepts, models, sae, verify, vision

FAMILIES = (models, circuits, concepts, sae, vision, verify, compile, archive)  # the order of `mechscope --help`


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mechscope", description="Mechanistic interpretability workbench")
    sub = p.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "specimens" and args.action not in ("list", "gc") and not args.key:
        p.error(f"specimens {args.action} needs a specimen (or, for import, a file)")
    from ..archive import ArchiveError

    try:
        return args.fn(args)
    except (ValueError, KeyError, ModuleNotFoundError, FileNotFoundError, ArchiveError) as err:
        print(f"mechscope: error: {err}", file=sys.stderr)
        return 2
