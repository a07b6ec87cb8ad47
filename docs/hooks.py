"""MkDocs hooks (mkdocs.yml ``hooks:``): pages generated at build time, so they never go stale.

- ``reference/cli.md``: every command's ``--help``, from the parsers themselves (``mechscope.cli.parser``).
- ``reference/api/PACKAGE.md``: one page per package of mechscope listing its public modules for mkdocstrings
  (``::: mechscope.package.module``); ``mechscope.md`` holds the top-level modules. A module whose name starts
  with ``_`` is private; so are ``cli`` and ``web`` (the command line and the server have their own pages).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mechscope"
NOT_API = {"cli", "web", "__main__", "lazy"}
TOP_LEVEL = ("names", "checks", "data", "files", "display", "jsontext")  # mechscope.md: the top-level modules
OWN_PAGE = {"results": ("results",), "distributed": ("distributed",)}  # top-level modules with a page of their own


def modules(package: str) -> list[str]:
    """The public modules of ``mechscope.package`` (its ``__init__`` first), dotted."""
    root = SRC / package
    found = [f"mechscope.{package}"]
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        if path.name == "__init__.py" or any(part.startswith("_") for part in rel.parts):
            if path.name == "__init__.py" and path.parent != root and not any(p.startswith("_") for p in rel.parts[:-1]):
                found.append("mechscope." + ".".join(rel.parts[:-1]))
            continue
        found.append("mechscope." + ".".join(rel.parts))
    return found


def api_pages() -> dict[str, str]:
    """``reference/api/NAME.md`` → its Markdown."""
    pages = {"mechscope": ("mechscope", [f"mechscope.{m}" for m in TOP_LEVEL])}
    for name, mods in OWN_PAGE.items():
        pages[name] = (f"mechscope.{name}", [f"mechscope.{m}" for m in mods])
    for path in sorted(SRC.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists() and path.name not in NOT_API:
            pages[path.name] = (f"mechscope.{path.name}", modules(path.name))
    out = {}
    for name, (title, mods) in pages.items():
        body = "\n\n".join(f"::: {m}" for m in mods)
        out[f"reference/api/{name}.md"] = f"# {title}\n\n{body}\n"
    return out


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str]]:
    """(command path, help text) for ``parser`` and every subcommand below it, in declaration order."""
    found = [(path, parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _walk(sub, f"{path} {name}")
    return found


def cli_page() -> str:
    from mechscope.cli import PIPELINE, parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps at the terminal's width: fix it for the page, then put it back
    try:
        commands = dict(_walk(parser(), "mechscope"))
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before
    order = ["mechscope"] + [p for _, names in PIPELINE for name in names for p in commands
                             if p == f"mechscope {name}" or p.startswith(f"mechscope {name} ")]
    lines = ["# Command reference", "",
             "Every command's `--help`, generated from the parsers when the site is built. The guide to the command "
             "line — its grammar, threads, pages and specimens — is [the command line](../cli.md).", ""]
    for path in order:
        lines += [f"## `{path}`", "", "```text", commands[path].rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files, config):
    from mkdocs.structure.files import File

    generated = {"reference/cli.md": cli_page(), **api_pages()}
    for uri, content in generated.items():
        files.append(File.generated(config, uri, content=content))
    return files
