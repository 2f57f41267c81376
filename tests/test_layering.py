"""The package's layering, read from the import statements (no import runs): the condensation loop
uses the public API only (nothing in dsa_fast/condense/ imports ``_ops``, ``compat`` or
``device_rng``), and no module of dsa_fast/ imports, directly or through others, itself."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "dsa_fast"
PRIVATE_TO_CONDENSE = {"dsa_fast._ops", "dsa_fast.compat", "dsa_fast.device_rng"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: Set[str]) -> Set[str]:
    """The dsa_fast modules a file imports (``from . import x`` names module x when it is one).
    Imports inside functions count too: they still make the dependency. Imports under
    ``if TYPE_CHECKING:`` do not: they never run."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for body in node.body for n in ast.walk(body)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dsa_fast"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("dsa_fast"):
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules)
    return {m for m in found if m in modules and m != name}


def _graph() -> Dict[str, Set[str]]:
    files = {(_module_name(p)): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def test_condense_uses_the_public_api_only():
    bad = {m: sorted(deps & PRIVATE_TO_CONDENSE) for m, deps in _graph().items()
           if m.startswith("dsa_fast.condense") and deps & PRIVATE_TO_CONDENSE}
    assert not bad, f"condense modules reach past the public API: {bad}"


def _cycle(graph: Dict[str, Set[str]]):
    """One import cycle (a list of modules), or None. A package's own __init__ importing its
    submodules is how a package is built, not a cycle: edges into a parent package are kept, edges
    from a package to its own submodules are kept, and only a path that returns to its start counts."""
    state: Dict[str, int] = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def _without_package_edges(graph):
    """Drop the edge from a submodule to a package that contains it (``from .. import X`` resolves
    X in the package's __init__, which is fine when X's module does not import the submodule)."""
    out = {}
    for m, deps in graph.items():
        out[m] = {d for d in deps if not m.startswith(d + ".")}
    return out


def test_no_import_cycle():
    graph = _graph()
    assert _cycle(_without_package_edges(graph)) is None, _cycle(_without_package_edges(graph))


def test_the_checks_see_a_cycle_and_a_private_import():
    """The parser is not blind: a made-up cycle and a condense module importing compat are found."""
    graph = {"dsa_fast.a": {"dsa_fast.b"}, "dsa_fast.b": {"dsa_fast.a"}}
    assert _cycle(graph) == ["dsa_fast.a", "dsa_fast.b", "dsa_fast.a"]
    assert _imports(PACKAGE / "augment.py", set(_graph())) >= {"dsa_fast._ops", "dsa_fast.compat"}
