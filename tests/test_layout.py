"""The package's architecture: three layers importing only downward, no cycles, small modules."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gnnopt"
CORE_EXEMPT = ("gnnopt.bench", "gnnopt.training", "gnnopt.demo", "gnnopt.eval")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every gnnopt module and the gnnopt modules it imports, anywhere in its body (also
    inside functions); ``from .x import y`` counts ``x.y`` where that is a module."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _package_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycle_counting_imports_inside_functions():
    graph = _imports()
    # importing gnnopt.x.y runs gnnopt/__init__ and gnnopt/x/__init__ first: not an edge back
    acyclic = {m: {d for d in deps if d not in _package_parents(m)} for m, deps in graph.items()}
    assert _cycle(acyclic) is None, " -> ".join(_cycle(acyclic))


def test_the_core_never_imports_the_harness_or_meta_training():
    graph = _imports()
    core = [m for m in graph if not m.startswith(CORE_EXEMPT)]
    assert "gnnopt.optimizer" in core and "gnnopt.rules.pna" in core and "gnnopt.hub" in core
    leaks = {m: sorted(d for d in graph[m] if d.startswith(CORE_EXEMPT)) for m in core}
    assert not any(leaks.values()), {m: d for m, d in leaks.items() if d}
    bench = [m for m in graph if m.startswith("gnnopt.bench")]
    assert not any(d.startswith("gnnopt.training") for m in bench for d in graph[m])


def test_hub_knows_no_rule():
    assert not any(d.startswith("gnnopt.rules") for d in _imports()["gnnopt.hub"])


def test_no_module_over_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long
