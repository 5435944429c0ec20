# SPDX-License-Identifier: AGPL-3.0-or-later
"""The package's shape, read from its imports (docs/architecture.md).

Three parts: ``whistle.core`` (what the server and the offline workstation share) imports nothing
of the other two; ``whistle.workstation`` imports the core and itself only (it runs on the
machine that holds the unit's private key and installs no server code); ``whistle.server`` may use
the core. No module-level import cycle anywhere. Imports inside functions count for the layering
(they run too), not for cycles (they are how a module defers a heavy or optional import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "whistle"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported whistle module, imported at module level?)], names resolved to the
    longest existing module (``from whistle.core import crypto`` is an import of the subpackage)."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, list[tuple[str, bool]]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top_level = {id(n) for n in tree.body}
        # Imports under ``if TYPE_CHECKING:`` never run.
        skipped = {id(n) for stmt in tree.body if isinstance(stmt, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(stmt.test) for n in ast.walk(stmt)}
        edges: list[tuple[str, bool]] = []
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target.startswith("whistle") and target != module:
                    edges.append((target, id(node) in top_level))
        graph[module] = edges
    return graph


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "top"


def test_architecture_graph_sees_the_three_parts() -> None:
    graph = import_graph()
    assert {part(m) for m in graph} >= {"core", "server", "workstation"}
    # The reader really finds imports (a broken reader would let every rule below pass).
    assert ("whistle.core.crypto", True) in graph["whistle.workstation.decrypt"]
    assert len([e for edges in graph.values() for e in edges]) > 150


@pytest.mark.parametrize(("layer", "allowed"), [
    ("core", {"core"}),
    ("workstation", {"core", "workstation"}),
])
def test_architecture_layer_imports_only_what_it_may(layer: str, allowed: set[str]) -> None:
    bad = [f"{m} imports {t}" for m, edges in import_graph().items() if part(m) == layer
           for t, _ in edges if part(t) not in allowed and t != "whistle"]
    assert bad == []


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk closes (each as the path that closes it)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_architecture_no_import_cycle() -> None:
    graph = {m: sorted({t for t, top in edges if top}) for m, edges in import_graph().items()}
    # A package's __init__ importing its own submodules is how Python packages re-export: the
    # edge from a submodule up to its package is the only one that would close such a loop.
    graph = {m: [t for t in ts if not m.startswith(t + ".")] for m, ts in graph.items()}
    assert find_cycles(graph) == []
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"]}) == [["a", "b", "c", "a"]]


def test_architecture_reader_catches_a_planted_layer_breach(tmp_path: Path) -> None:
    """The reader sees what the rules need: a core module importing the server, relative or not."""
    package = tmp_path / "whistle"
    for folder in ("core", "server"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "server" / "config.py").write_text("")
    (package / "core" / "a.py").write_text("from whistle.server import config\n")
    (package / "core" / "b.py").write_text("def f():\n    from ..server.config import x\n")
    graph = import_graph(package)
    assert ("whistle.server.config", True) in graph["whistle.core.a"]
    assert ("whistle.server.config", False) in graph["whistle.core.b"]


def test_architecture_casebook_web_stack_stays_in_its_web_package() -> None:
    """Only whistle.workstation.casebook.web (the UI of ``casebook serve``) imports Flask and its
    kin; the casebook's import, replies and export run with the workstation's plain install."""
    web = ("flask", "flask_wtf", "flask_babel", "werkzeug", "jinja2", "wtforms", "babel")
    offenders = []
    package = PACKAGE / "workstation" / "casebook"
    assert (package / "web" / "__init__.py").is_file()
    for path in package.rglob("*.py"):
        if "web" in path.relative_to(package).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.name}: {n}" for n in names if n.partition(".")[0] in web]
    # serve imports werkzeug's server inside the command, when it runs: the one allowed place.
    assert offenders == ["commands.py: werkzeug.serving"], offenders
