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
# under torchrun the ranks divide these commands' sweeps and rank 0 alone writes; `sae harvest` / `sae train`
# manage their ranks themselves; any other command is refused there (it would only repeat its work per rank)
DIVIDED = ("patch", "circuit", "graph", "probe", "sae dashboard", "sae eval")
SELF_MANAGED = ("sae harvest", "sae train")
OUTPUTS = ("out", "json", "archive", "page", "neuronpedia")  # what a command writes: to scratch on the other ranks


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

    name = f"{args.command} {getattr(args, 'action', '')}".strip() if args.command == "sae" else args.command
    with records(args.records) if args.records else contextlib.nullcontext():
        if int(os.environ.get("WORLD_SIZE", "1")) == 1 or name in SELF_MANAGED:
            return args.fn(args)
        if name not in DIVIDED:
            raise ValueError(f"`mechscope {name}` does not divide its work across torchrun's ranks; run it as one "
                             f"process (commands that do: {', '.join(DIVIDED + SELF_MANAGED)})")
        with group(getattr(args, "device", None)) as device:
            if hasattr(args, "device"):
                args.device = device  # under NCCL: this rank's own GPU
            if rank_world()[0] == 0:
                return args.fn(args)
            with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
                for output in OUTPUTS:
                    if hasattr(args, output):
                        setattr(args, output, os.path.join(scratch, output))
                return args.fn(args)
