"""The package's import graph has no cycle, at the level of modules and at the level of subpackages.

Every ``import`` of a ``decaylab`` module counts: at module level, inside a function (a cycle hidden in a
function still ties the two modules together) and under ``if TYPE_CHECKING:`` (a cycle of types is still one).
A name read from a package with lazy exports (``decaylab.lazy``) counts as an import of the module that defines
it, and so does a string that names a module exactly (the tables of lazily imported modules: subcommands, lazy
exports), so lazy imports are checked like the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "decaylab"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _nodes(tree: ast.AST):
    """The import statements of ``tree`` and the strings that name modules to import later: those in a table
    (a dict, tuple or list literal) or passed to ``import_module`` (not a logger's name, not prose)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Dict):
            yield from node.values
        elif isinstance(node, (ast.Tuple, ast.List)):
            yield from node.elts
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            yield from node.args[:1]


def _lazy_exports(path: Path) -> dict[str, str]:
    """The ``_EXPORTS = {name: module}`` table of a package using ``decaylab.lazy``, else {}."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


EXPORTS = {name: _lazy_exports(path) for name, path in MODULES.items() if path.name == "__init__.py"}


def _owner(name: str) -> str | None:
    """The module ``name`` denotes, or the closest enclosing package module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "decaylab"]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != "decaylab":
            return []
        found = []
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in MODULES:
                found.append(submodule)
            elif alias.name in EXPORTS.get(source, {}):
                found.append(EXPORTS[source][alias.name])
            else:
                found.append(source)
        return found
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value and node.value in MODULES:
        return [node.value]  # a module named for a lazy import: importlib.import_module(name) at run time
    return []


def import_graph() -> dict[str, set[str]]:
    """module -> the decaylab modules it imports (anywhere in it)."""
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for node in _nodes(ast.parse(path.read_text())):
            for target in _targets(module, node):
                owner = _owner(target)
                if owner is not None and owner != module:
                    edges.add(owner)
        graph[module] = edges
    return graph


def _unit(module: str) -> str:
    """The subpackage (or top-level module) ``module`` belongs to: decaylab.training.loop -> decaylab.training."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, edges in graph.items():
        units.setdefault(_unit(module), set()).update(_unit(t) for t in edges if _unit(t) != _unit(module))
    return units


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions_type_checking_and_lazy_tables():
    graph = import_graph()
    assert "decaylab.model" in graph["decaylab"]  # a lazy export (and an import under TYPE_CHECKING)
    assert {"decaylab.commands.train", "decaylab.bench.cli"} <= graph["decaylab.cli"]  # the subcommand table
    assert "decaylab.decay.kinds" in graph["decaylab.decay.config"]  # an import inside a method
    assert "decaylab.run.loading" in graph["decaylab.commands.generate"]  # inside run()
    assert "decaylab.training.loop" in graph["decaylab.commands.train"]  # from a lazy package: the defining module


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _without_ops(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: edges for m, edges in graph.items() if not m.startswith("decaylab.ops")}


@pytest.mark.parametrize("level", ["module", "subpackage"])
def test_no_import_cycle(level):
    graph = import_graph()
    graph = package_graph(graph) if level == "subpackage" else _without_ops(graph)  # ops: the test below
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between {level}s: {' -> '.join(cycle)}"


def test_no_import_cycle_inside_ops():
    graph = {m: edges for m, edges in import_graph().items() if m.startswith("decaylab.ops")}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between modules: {' -> '.join(cycle)}"
