"""The package layering, checked on the source: every module under streamer/ is parsed with `ast` and each of
its imports (at module level and inside functions alike) is held against the rules in the package
docstrings and README's "How it works":

- streamer.core is pure: nothing from streamer.{model,audio,app,cli,sinks,ui,bench}, and never torch,
  transformers, threading or sounddevice (not even lazily);
- streamer.audio and streamer.model never import streamer.{app,cli,ui,bench};
- streamer.app never imports streamer.cli, streamer.bench or streamer.server;
- streamer.server (a layer beside cli) imports app, audio, model, core and sinks, never cli, bench or ui, and
  only streamer.cli imports it;
- only streamer.cli and streamer/__main__.py import streamer.cli, except that streamer.bench may import
  streamer.cli.args (the streaming flags both command lines share);
- the packages import each other at module level without cycles.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streamer"
LAYERED = ("core", "model", "audio", "app", "cli", "sinks", "ui", "bench", "server")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted name of what is imported (a streamer module, or a third-party top-level name)
    line: int
    top_level: bool  # runs when the importer is imported (not inside a function, not under TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def add(target: str, node: ast.AST, top: bool) -> None:
        found.append(Import(name, target, node.lineno, top))

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, top)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, is_package, node)
            add(module, node, top)
            for alias in node.names:  # `from streamer import cli` imports the module streamer.cli
                if f"{module}.{alias.name}" in MODULES:
                    add(f"{module}.{alias.name}", node, top)
        elif isinstance(node, ast.Call):  # importlib.import_module("streamer.x") with a literal name
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                add(node.args[0].value, node, top)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            top = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, top)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top)

    visit(tree, True)
    return found


ALL_IMPORTS = [imp for name, path in MODULES.items() for imp in imports_of(name, path)]


def layer(module: str) -> str | None:
    """The package a streamer module belongs to: 'core', 'cli', ...; '__main__', 'errors' for the top-level
    modules; 'streamer' for the package's own __init__ (the public facade)."""
    parts = module.split(".")
    if parts[0] != "streamer":
        return None
    return parts[1] if len(parts) > 1 else "streamer"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(importers: str, forbidden) -> list[str]:
    return [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
            if within(i.importer, importers) and forbidden(i.target)]


def test_the_import_graph_sees_the_whole_package():
    """A sanity check of the parser itself: it finds known imports, lazy ones included."""
    assert {"streamer.core.recognizer", "streamer.app.worker", "streamer.cli.main", "streamer.__main__"} <= set(MODULES)
    pairs = {(i.importer, i.target, i.top_level) for i in ALL_IMPORTS}
    assert ("streamer.app.worker", "streamer.core.recognizer", True) in pairs
    assert ("streamer.app.worker", "threading", True) in pairs
    assert any(i.importer.startswith("streamer.model.") and i.target == "torch" and not i.top_level for i in ALL_IMPORTS)
    assert ("streamer.__main__", "streamer.cli", True) in pairs
    # relative imports resolve to absolute names
    tree = ast.parse("from .events import Event\nfrom .. import errors\n")
    node1, node2 = tree.body
    assert _resolve("streamer.core.recognizer", False, node1) == "streamer.core.events"
    assert _resolve("streamer.core", True, node2) == "streamer"


def test_core_is_pure():
    other_layers = tuple(f"streamer.{p}" for p in LAYERED if p != "core")
    heavy = ("torch", "transformers", "threading", "sounddevice")
    bad = violations("streamer.core", lambda t: any(within(t, p) for p in other_layers + heavy))
    assert bad == [], "streamer.core must stay free of the other layers, threads, devices and torch:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["streamer.audio", "streamer.model"])
def test_audio_and_model_sit_below_the_application(package):
    above = ("streamer.app", "streamer.cli", "streamer.ui", "streamer.bench", "streamer.server")
    bad = violations(package, lambda t: any(within(t, p) for p in above))
    assert bad == [], "\n".join(bad)


def test_app_does_not_import_the_command_lines():
    bad = violations("streamer.app", lambda t: any(within(t, p) for p in ("streamer.cli", "streamer.bench", "streamer.server")))
    assert bad == [], "\n".join(bad)


def test_the_server_sits_beside_the_command_line():
    bad = violations("streamer.server", lambda t: any(within(t, p) for p in ("streamer.cli", "streamer.bench", "streamer.ui")))
    bad += [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
            if within(i.target, "streamer.server") and not (within(i.importer, "streamer.cli")
                                                             or within(i.importer, "streamer.server"))]
    assert bad == [], "\n".join(bad)


def test_only_the_command_line_imports_the_command_line():
    def allowed(i: Import) -> bool:
        if within(i.importer, "streamer.cli") or i.importer == "streamer.__main__":
            return True
        return within(i.importer, "streamer.bench") and i.target == "streamer.cli.args"

    bad = [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
           if within(i.target, "streamer.cli") and not allowed(i)]
    assert bad == [], "\n".join(bad)


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for i in ALL_IMPORTS:
        a, b = layer(i.importer), layer(i.target)
        if i.top_level and a and b and a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_between_packages_at_module_level():
    graph = package_graph()
    assert "core" in graph and "app" in graph  # the graph is not empty by mistake
    cycle = find_cycle(graph)
    assert cycle is None, "packages import each other in a cycle at module level: " + " -> ".join(cycle)


def test_importing_streamer_and_its_cli_does_not_import_torch():
    code = ("import sys, streamer, streamer.cli; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
