"""The `mechscope` command: one module per family of subcommands, each with its handlers and an
``add(sub)`` that declares their arguments."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile

from . import archive, circuits, compile, concepts, models, sae, verify, vision

FAMILIES = (models, circuits, concepts, sae, vision, verify, compile, archive)  # the order of `mechscope --help`
DIVIDED = ("patch", "circuit", "graph", "probe")  # under torchrun the ranks divide their sweeps; rank 0 writes
OUTPUTS = ("out", "json", "archive")  # what a command writes: redirected to scratch on the other ranks


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mechscope", description="Mechanistic interpretability workbench")
    p.add_argument("--records", metavar="DIR",
                   help="keep progress records of the sweeps in DIR: run the command again (or under torchrun "
                        "--max-restarts) and it resumes from what was finished")
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
        return _run(args)
    except (ValueError, KeyError, ModuleNotFoundError, FileNotFoundError, ArchiveError) as err:
        print(f"mechscope: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    """The command, inside ``--records`` when given; under torchrun (WORLD_SIZE > 1) a DIVIDED command
    joins the process group (gloo) and every rank runs it, dividing its sweeps; rank 0 alone prints and
    writes (the other ranks' outputs go to a scratch folder that is then removed)."""
    from ..distributed import group, rank_world, records

    with records(args.records) if args.records else contextlib.nullcontext():
        if int(os.environ.get("WORLD_SIZE", "1")) == 1 or args.command not in DIVIDED:
            return args.fn(args)
        with group():
            if rank_world()[0] == 0:
                return args.fn(args)
            with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
                for name in OUTPUTS:
                    if hasattr(args, name) and (getattr(args, name) is not None or name == "archive"):
                        setattr(args, name, os.path.join(scratch, name))
                return args.fn(args)
