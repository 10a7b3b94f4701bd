"""The package structure: dependencies between ambient's parts go one way, modules stay small.

The import graph is read from the source with ``ast``: every import that runs
(at module level or inside a function) counts; imports under ``if
TYPE_CHECKING:`` do not (they exist for annotations only). A unit is a
subpackage (``ambient.ztunnel``) or a top-level module (``ambient.netns``).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ambient"
MAX_LINES = 600
GENERATED = ("_pb2.py", "_pb2_grpc.py")  # protoc's output (ambient.xds.proto.generate)

Edge = tuple[str, str, str]  # (from unit, to unit, "module:line imports name")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str | None:
    """``ambient.ztunnel.capture`` -> ``ztunnel``; ``ambient.netns`` -> ``netns``."""
    parts = module.split(".")
    if parts[0] != "ambient" or len(parts) < 2:
        return None
    return parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module, module: str, package: bool) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import that runs, ``if TYPE_CHECKING:`` excluded."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if package else -1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # ``from ambient import netns`` imports a unit
                yield f"{target}.{alias.name}", node.lineno
        stack.extend(ast.iter_child_nodes(node))


def import_edges(root: Path = SRC) -> list[Edge]:
    """The runtime imports between different units of the ``ambient`` package under ``root``."""
    units = {p.stem for p in root.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    edges = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        source = _unit(module)
        if source is None:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for target, line in _runtime_imports(tree, module, path.name == "__init__.py"):
            unit = _unit(target)
            if unit is not None and unit != source and unit in units:
                edges.append((source, unit, f"{module}:{line} imports {target}"))
    return edges


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One cycle of the unit graph, as the edges that make it; None if there is none."""
    graph: dict[str, dict[str, str]] = {}
    for source, target, why in edges:
        graph.setdefault(source, {}).setdefault(target, why)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        path.append(unit)
        for target in sorted(graph.get(unit, {})):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)) is not None:
            return [(a, b, graph[a][b]) for a, b in itertools.pairwise(cycle)]
    return None


def test_no_cycle_between_ambients_parts() -> None:
    cycle = find_cycle(import_edges())
    assert cycle is None, "import cycle between packages:\n" + "\n".join(
        f"  {a} -> {b}  ({why})" for a, b, why in cycle or ()
    )


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The check itself: a two-package cycle made of a function-level import is found,
    one behind ``if TYPE_CHECKING:`` is not."""
    root = tmp_path / "ambient"
    for package, text in {
        "a": "from ambient.b import thing\n",
        "b": "def f():\n    from ambient import a\n",
        "c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ambient.a import x\n",
    }.items():
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(text)
    (root / "__init__.py").write_text("")
    edges = import_edges(root)
    assert {(a, b) for a, b, _ in edges} == {("a", "b"), ("b", "a")}
    cycle = find_cycle(edges)
    assert cycle is not None and {cycle[0][0], cycle[0][1]} == {"a", "b"}


def test_no_hand_written_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if not path.name.endswith(GENERATED)
        and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
