"""The package's structure is a checked contract (docs/architecture.md): layers in pipeline order,
and no import cycle between modules of any kind — imports inside functions count."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mechscope"


def test_layers_contract_holds():
    cli = pytest.importorskip("importlinter.cli")
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0  # prints the broken imports


def imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: modules of the package it imports} — every import statement, at module level or
    inside a function (it runs when the function does), but those under ``if TYPE_CHECKING`` (which
    never run). ``from . import x`` counts as importing x, not the package it is in."""
    root = package.name
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        here = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
        found = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found |= {target, *(f"{target}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {t for t in found if t == root or t.startswith(root + ".")}
    known = set(graph)
    out = {}
    for m, targets in graph.items():
        targets = {t for t in targets if t in known and t != m}
        # a submodule named by ``from pkg import sub`` is the import, not pkg; the packages a module is in
        # are imported before it by Python itself, not by the module
        named = {t.rpartition(".")[0] for t in targets if t.rpartition(".")[0] in targets}
        out[m] = {t for t in targets - named if not m.startswith(t + ".")}
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_of_any_kind():
    graph = imports()
    assert "mechscope.models.engine" in graph and graph["mechscope.concepts.probes"] >= {"mechscope.concepts.steering"}
    assert "mechscope.sae.trainer" in graph["mechscope.sae.dictionary"]  # imports inside functions are counted
    found = cycle(graph)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_the_cycle_check_finds_a_cycle_closed_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import a\n")
    (pkg / "sub" / "a.py").write_text("from ..b import f\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import a\n\n"
                              "def f():\n    return 1\n")
    assert cycle(imports(pkg)) is None  # a TYPE_CHECKING import is no cycle; nor is a module's own package
    (pkg / "b.py").write_text("def f():\n    from .sub.a import g\n    return g\n")
    assert cycle(imports(pkg)) == ["pkg.b", "pkg.sub.a", "pkg.b"]


def test_every_module_path_the_architecture_page_names_exists():
    """docs/architecture.md is the authority for the code as it is: every file (`models/hooks.py`,
    `tests/test_placement.py`) and dotted module (`mechscope.models.placement`) it names exists."""
    import importlib
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    files = set(re.findall(r"`([\w/]+\.(?:py|html|js|css|toml))`", text))
    assert len(files) > 20
    missing = [f for f in sorted(files) if not any((base / f).exists() for base in (ROOT, PACKAGE, PACKAGE.parent, PACKAGE / "report" / "static"))]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    top = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    dotted_names = {d if d.startswith("mechscope.") else f"mechscope.{d}"
                    for d in re.findall(r"`((?:mechscope\.)?[a-z_]+(?:\.\w+)+)`", text)
                    if d.split(".")[0] in top | {"mechscope"} and not d.endswith((".css", ".js", ".py", ".html"))}
    assert len(dotted_names) > 5
    for dotted in sorted(dotted_names):
        module, _, attr = dotted, "", ""
        while True:
            try:
                found = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, tail = module.rpartition(".")
                attr = f"{tail}.{attr}".strip(".")
        for name in filter(None, attr.split(".")):
            assert hasattr(found, name), f"docs/architecture.md names {dotted}, which does not exist"
            found = getattr(found, name)


def test_no_module_imports_another_modules_private_names():
    """A name another module needs is public: ``from .x import _helper`` (anywhere, functions included) is a
    helper in the wrong place or with the wrong name."""
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private += [f"{path.relative_to(PACKAGE)}: {node.module or '.'}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
