"""The package's modules import each other without a circle, counting imports inside functions too
(an import moved into a function to dodge a circle is still the circle)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "intlm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """module -> the package's modules it imports anywhere in its source. ``from . import x`` names
    module x (not the package it is in) when x is a module."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "kernels" not in p.parts}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
                out.update(subs if len(subs) == len(node.names) else [target, *subs])
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[name] = {m for m in out if m in files and m != name}
    return graph


def cycle(graph: dict):
    """One import circle of ``graph`` as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "intlm.step" in graph["intlm.train"] and "intlm.backends.numba.context" in graph["intlm.backends.numba"]
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_check_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
