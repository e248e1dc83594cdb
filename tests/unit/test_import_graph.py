"""scheduler/'s import graph: no cycle at run time, and no new one through type-only imports.

Modules that take the controller shell as an argument import it under ``TYPE_CHECKING``,
which hides a cycle (controller -> execute -> controller ...). The known one is listed
below and may only shrink (the state-owner redesign of issue 20 removes it); any other
cycle, at run time or through type-only imports, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The one cycle through type-only imports today: modules that take the shell to mutate it
#: (follow, grid, operator and shortfall joined it when the controller step began to call
#: the grid-following budget, which sets the budget through operator).
KNOWN_TYPE_ONLY_CYCLE = frozenset(
    {
        "scheduler.shell.controller",
        "scheduler.shell.cpubound",
        "scheduler.shell.execute",
        "scheduler.shell.follow",
        "scheduler.shell.grid",
        "scheduler.shell.operator",
        "scheduler.shell.persist",
        "scheduler.shell.shortfall",
        "scheduler.shell.transitions",
    }
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in (REPO / "scheduler").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path, known: dict[str, Path], type_only: bool) -> set[str]:
    """Modules of scheduler/ that ``path`` imports (with the type-only ones or not)."""
    tree = ast.parse(path.read_text(), str(path))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            guarded.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in guarded and not type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_at_run_time() -> None:
    known = _modules()
    graph = {m: _imports(p, known, type_only=False) for m, p in known.items()}
    assert _cycles(graph) == []


def test_no_new_cycle_through_type_only_imports() -> None:
    known = _modules()
    graph = {m: _imports(p, known, type_only=True) for m, p in known.items()}
    for cycle in _cycles(graph):
        assert cycle <= KNOWN_TYPE_ONLY_CYCLE, sorted(cycle - KNOWN_TYPE_ONLY_CYCLE)


def test_a_cycle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
