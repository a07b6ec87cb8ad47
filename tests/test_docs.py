"""The documentation site's sources: every page in the navigation and every navigation entry a page; the
generated command reference holds every command; the generated API reference a page per package. (`make docs`
builds the site in strict mode: CI runs it after the tests.)"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import hooks  # noqa: E402  (docs/hooks.py)


def nav_entries() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s+- (?:[^:\n]+: )?([\w./-]+\.(?:md|ipynb))$", nav, re.M)


def test_every_page_is_in_the_navigation_and_every_entry_is_a_page():
    entries = nav_entries()
    assert len(entries) == len(set(entries))
    generated = {"reference/cli.md", *hooks.api_pages()}
    written = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*") if p.suffix in (".md", ".ipynb")}
    assert set(entries) == written | generated, (set(entries) ^ (written | generated))


def test_the_api_reference_has_a_page_per_package():
    pages = hooks.api_pages()
    packages = {p.name for p in hooks.SRC.iterdir() if (p / "__init__.py").exists()} - hooks.NOT_API
    assert {f"reference/api/{name}.md" for name in packages} <= set(pages)
    assert "::: mechscope.circuits.discovery" in pages["reference/api/circuits.md"]
    assert "::: mechscope.models.placement.places" in pages["reference/api/models.md"]
    assert not any("._" in line for page in pages.values() for line in page.splitlines() if line.startswith(":::"))


def test_the_command_reference_is_every_commands_help(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    text = hooks.cli_page()
    assert "COLUMNS" not in os.environ  # its fixed width stays inside the page
    for command in ("mechscope", "mechscope graph", "mechscope sae train", "mechscope sae explain",
                    "mechscope specimens import", "mechscope vision gradcam"):
        assert f"## `{command}`\n" in text, command
    assert "usage: mechscope sae train" in text and "--max-features" in text
