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

FAMILIES = (models, circuits, concepts, sae, vision, verify, compile, archive)  # each declares its commands
# `mechscope --help`: the commands in the order of the work, one line each
PIPELINE = (("open a model", ("info", "run")),
            ("look inside", ("lens", "attribute", "heads")),
            ("find circuits", ("patch", "circuit", "graph")),
            ("read and write concepts", ("probe", "steer")),
            ("learn and open dictionaries", ("sae", "transcoders")),
            ("image models", ("vision",)),
            ("prove and compile", ("verify", "compile")),
            ("keep and browse", ("specimens", "report", "serve")),
            ("tours", ("demo", "toy")))
# under torchrun the ranks divide these commands' sweeps and rank 0 alone writes; `sae harvest` / `sae train`
# manage their ranks themselves; any other command is refused there (it would only repeat its work per rank)
DIVIDED = ("patch", "circuit", "graph", "probe", "sae dashboard", "sae eval", "sae explain")
SELF_MANAGED = ("sae harvest", "sae train")
OUTPUTS = ("out", "json", "archive", "neuronpedia")  # what a command writes: to scratch on the other ranks
QUICK = ("info", "run", "specimens list", "specimens show", "specimens export", "specimens import", "specimens rm",
         "specimens gc", "report", "serve", "sae info", "sae convert")  # no thread line: they compute little


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mechscope", usage="mechscope [-h] [--threads N] [--records DIR] [--download] COMMAND ...",
                                description="Mechanistic interpretability workbench",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="`mechscope COMMAND --help` shows a command's options and examples.\n"
                                       "Every command writes its page to --out PAGE, else to $MECHSCOPE_PAGES (or "
                                       "pages/ in the user\ndata dir); --json PATH writes the result's JSON, "
                                       "--archive [WHERE] stores it as a specimen.")
    p.add_argument("--threads", metavar="N",
                   help="torch threads (default: $MECHSCOPE_THREADS, else the cores free now — torch's one per core "
                        "runs 5-18x slower when another process is busy)")
    p.add_argument("--records", metavar="DIR",
                   help="keep progress records of the sweeps in DIR: run the command again (or under torchrun "
                        "--max-restarts) and it resumes from what was finished")
    p.add_argument("--download", action="store_true",
                   help="a MODEL given as a hub id (org/name) missing from the Hugging Face cache is downloaded "
                        "(default: read from the cache only; HF_HUB_OFFLINE forbids it; same as $MECHSCOPE_DOWNLOAD=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS,
                           prog="mechscope")  # a command's usage line starts "mechscope COMMAND", not the top usage
    for family in FAMILIES:
        family.add(sub)
    listed = [name for _, names in PIPELINE for name in names]
    if sorted(listed) != sorted(sub.choices):
        raise AssertionError(f"PIPELINE lists {sorted(listed)}, the commands are {sorted(sub.choices)}")
    width = max(map(len, listed)) + 2
    p.description += "\n\ncommands, in the order of the work:" + "".join(
        f"\n  {title}:" + "".join(f"\n    {name:<{width}}{sub.choices[name].description.rstrip('.')}" for name in names)
        for title, names in PIPELINE)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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

    name = args.command_name
    if args.download:
        os.environ["MECHSCOPE_DOWNLOAD"] = "1"  # what models.load reads: every command loads through it
    if name not in QUICK:
        from ..models.threads import use_threads

        print(use_threads(args.threads), file=sys.stderr)
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
                for output in OUTPUTS:  # the page always; the others where asked
                    if hasattr(args, output) and (output == "out" or getattr(args, output) is not None):
                        setattr(args, output, os.path.join(scratch, output))
                return args.fn(args)
