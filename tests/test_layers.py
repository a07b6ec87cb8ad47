"""The package's structure is a checked contract (docs/architecture.md): layers in pipeline order,
and no import cycle between modules at module level."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mechscope"


def test_layers_contract_holds():
    cli = pytest.importorskip("importlinter.cli")
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0  # prints the broken imports


def module_level_imports() -> dict[str, set[str]]:
    """{module: modules of mechscope it imports when it is imported} — top-level statements only
    (imports inside functions and ``if TYPE_CHECKING`` blocks run later or never)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        found = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names] if not node.module or node.level else []
                found |= {t for t in [target, *names] if t.startswith("mechscope")}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("mechscope")}
        graph[name] = found
    known = set(graph)
    return {m: {t for t in ts if t in known and t != m} for m, ts in graph.items()}


def test_no_module_level_import_cycle():
    graph = module_level_imports()
    assert "mechscope.models.engine" in graph and graph["mechscope.concepts.probes"] >= {"mechscope.concepts.steering"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("module-level import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
