"""No import cycles through amalgam.config or amalgam.data, counting imports inside functions.

A lazy import hides a cycle; it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amalgam"


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules ``name`` imports anywhere in its file, with the packages on their way (not its own ancestors)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "amalgam":
            targets |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            }
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.split(".")[0] == "amalgam"}
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ first
            edges.add(".".join(parts[:i]))
        if target == "amalgam":  # `from amalgam import x` runs the package's own __init__
            edges.add("amalgam")
    return {e for e in edges if e in known and e != name and e not in ancestors}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


@pytest.mark.parametrize("layer", ["amalgam.config", "amalgam.data"])
def test_no_import_cycle_through_the_config_or_the_data(layer):
    through = [c for c in cycles(import_graph()) if any(m == layer or m.startswith(layer + ".") for m in c)]
    assert through == []


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    graph = {"amalgam.a": {"amalgam.b"}, "amalgam.b": {"amalgam.a"}, "amalgam.c": set()}
    assert cycles(graph) == [["amalgam.a", "amalgam.b"]]
    lazy = tmp_path / "a.py"
    lazy.write_text("def f():\n    from amalgam.b import x\n")
    assert imports_of("amalgam.a", lazy, {"amalgam.a", "amalgam.b"}) == {"amalgam.b"}


def test_the_schema_imports_nothing_of_amalgam_but_errors():
    graph = import_graph()
    assert graph["amalgam.config.schema"] <= {"amalgam.errors"}
