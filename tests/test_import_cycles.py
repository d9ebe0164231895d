"""No two modules of relstep import each other, directly or around a longer loop.

Every import counts, also those inside functions (relstep imports heavy modules
lazily): a lazy import that closes a loop is still two modules that cannot be
understood, or moved, one without the other.  The graph is read from the source
with ``ast``, so nothing is imported and no driver needs to be installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import relstep

PACKAGE = Path(relstep.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """relstep module -> the relstep modules it imports (``from pkg import sub`` counts as pkg.sub)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                # `from relstep import snapshot` imports the module relstep.snapshot, not just the package.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as [a, b, ..., a], or None."""
    state: dict[str, int] = {}       # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_of_relstep_is_part_of_an_import_cycle() -> None:
    graph = import_graph()
    assert "relstep.verify" in graph and "relstep.lookup" in graph["relstep.verify"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_the_cycle_restore_and_verify_had() -> None:
    graph = {"relstep.restore": {"relstep.verify"}, "relstep.verify": {"relstep.restore", "relstep.snapshot"},
             "relstep.snapshot": set()}
    assert find_cycle(graph) == ["relstep.restore", "relstep.verify", "relstep.restore"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
