"""The layers hold: every import in ``agent/`` points down, and no module cycle.

The order is the README's (bottom to top). A layer may import itself and any
layer below it; ``agent.errors`` is the floor everyone may use. Imports inside
functions and under ``TYPE_CHECKING`` count too: a layer that needs a type from
above it is a layer in the wrong place. A ``TYPE_CHECKING`` import does not
make a cycle, though: it never runs, and a facade's parts may name the facade
they serve (``stack.peer_ice`` names ``stack.peer.Peer``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1] / "agent"

#: Bottom to top; keep in step with the README's "Design" table.
LAYERS = (
    "errors",
    "stack",
    "observe",
    "net",
    "report",
    "signaling",
    "call",
    "targets",
    "scenario",
    "cli",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def typing_only_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                nodes.update(id(n) for n in ast.walk(child))
    return nodes


def imports_of(path: Path, *, typing_only: bool = True) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every module this file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = set() if typing_only else typing_only_nodes(tree)
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from agent.x import y``: ``y`` is a submodule or a name in
            # ``agent.x``; ``resolve`` cuts a name off, keeps a submodule.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def known_modules() -> set[str]:
    return {module_name(path) for path in AGENT.rglob("*.py")}


def resolve(name: str, modules: set[str]) -> str | None:
    """The agent module ``name`` refers to (a name imported from it is cut off)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return -1  # ``agent`` itself: its __init__ imports nothing upward
    return LAYERS.index(parts[1])


def import_graph(*, typing_only: bool = True) -> dict[str, set[tuple[int, str]]]:
    modules = known_modules()
    graph: dict[str, set[tuple[int, str]]] = {}
    for path in sorted(AGENT.rglob("*.py")):
        source = module_name(path)
        edges = graph.setdefault(source, set())
        for line, name in imports_of(path, typing_only=typing_only):
            if not (name == "agent" or name.startswith("agent.")):
                continue
            target = resolve(name, modules)
            if target is not None and target != source:
                edges.add((line, target))
    return graph


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in AGENT.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in AGENT.glob("*.py") if p.stem != "__init__"}
    assert packages | modules == set(LAYERS)


def upward_imports(graph: dict[str, set[tuple[int, str]]]) -> list[str]:
    return [
        f"{source} (line {line}) imports {target}"
        for source, edges in sorted(graph.items())
        for line, target in sorted(edges)
        if layer_of(target) > layer_of(source)
    ]


def test_imports_point_down_only() -> None:
    upward = upward_imports(import_graph())
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[tuple[int, str]]]) -> list[str] | None:
    targets = {m: sorted({t for _, t in edges}) for m, edges in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in targets.get(module, []):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(targets):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph(typing_only=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {(1, "b")}, "b": {(1, "a")}}, ["a", "b", "a"]),
        ({"a": {(1, "b")}, "b": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[tuple[int, str]]], expected: list[str] | None
) -> None:
    assert find_cycle(graph) == expected


def test_an_upward_import_is_caught() -> None:
    graph = {
        "agent.stack.peer": {(3, "agent.cli.main"), (4, "agent.errors")},
        "agent.cli.main": {(5, "agent.stack.peer")},
    }
    assert upward_imports(graph) == ["agent.stack.peer (line 3) imports agent.cli.main"]
