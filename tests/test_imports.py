"""The import graph: no cycle, and the shared base knows neither side.

Read from the source (``ast``), not by importing, so an import inside a
function counts too; one under ``if TYPE_CHECKING:`` does not (it never runs).
The shared base (``deltawire/*.py``) and the protocol are used by both the
collector and the watchdog: if they imported either side, installing one
would drag in the other.
"""

from __future__ import annotations

import ast
import os
import pathlib

import deltawire

ROOT = pathlib.Path(deltawire.__file__).resolve().parent
SIDES = ("deltawire.collector", "deltawire.watchdog")


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for folder, dirs, files in os.walk(ROOT, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        rel = pathlib.Path(folder).relative_to(ROOT)
        package = ".".join(("deltawire", *rel.parts))
        for name in files:
            if name.endswith(".py"):
                stem = name[:-3]
                found[package if stem == "__init__" else f"{package}.{stem}"] = (
                    pathlib.Path(folder) / name
                )
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                # `from pkg import mod` imports the module pkg.mod
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != module}
        graph[module] = edges
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_walk_sees_the_whole_tree() -> None:
    graph = _graph()
    assert {"deltawire.config", "deltawire.protocol.server", "deltawire.collector.hub",
            "deltawire.watchdog.link"} <= set(graph)  # fmt: skip
    assert "deltawire.collector.hub" in graph["deltawire.collector.connection"]


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles = sorted(m for m in graph if m in _reachable(graph, m))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_shared_base_imports_neither_side() -> None:
    graph = _graph()
    others = (*SIDES, "deltawire.testing", "deltawire.tools")  # they see both sides
    base = [m for m in graph if m.count(".") == 1 and not m.startswith(others)]
    base += [m for m in graph if m.startswith("deltawire.protocol")]
    assert "deltawire.config" in base and "deltawire.logs" in base
    for module in base:
        wrong = sorted(m for m in _reachable(graph, module) if m.startswith(SIDES))
        assert wrong == [], f"{module} imports {wrong}"
