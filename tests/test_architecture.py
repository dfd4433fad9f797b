"""The package's structure: one-way imports, and lazy imports only where they are meant."""
from __future__ import annotations

import ast
from pathlib import Path

import audioembed

PACKAGE = Path(audioembed.__file__).parent
# The command line defers every import past click, so that --help does not import torch.
DEFERRING_MODULES = {"cli"}


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), str(p))
            for p in sorted(PACKAGE.glob("*.py"))}


def _imported(node: ast.AST, modules) -> list[str]:
    """The audioembed modules an import statement names."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
        return []
    out = []
    for name in names:
        parts = name.split(".")
        if parts[0] == "audioembed" and len(parts) == 2 and parts[1] in modules:
            out.append(parts[1])
    return out


def _graph(lazy: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        nodes = ast.walk(tree) if lazy else tree.body
        graph[name] = {m for node in nodes for m in _imported(node, modules)} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_audioembed_has_no_import_cycle():
    # Imports inside functions count too: a cycle hidden by a lazy import is still a cycle.
    cycle = _cycle(_graph(lazy=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modules_import_each_other_at_the_top_except_the_cli():
    top, every = _graph(lazy=False), _graph(lazy=True)
    lazy = {name: sorted(every[name] - top[name]) for name in every
            if every[name] - top[name] and name not in DEFERRING_MODULES}
    assert lazy == {}, f"imports of audioembed modules inside functions: {lazy}"
