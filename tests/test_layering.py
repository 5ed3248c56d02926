"""The architecture holds: launchers and ``cnnbench`` -> studies -> engine -> models and data loaders -> foundation.

Every import of the project's own modules is read from the source (lazy imports inside functions included) and
must point to the importer's layer or one below it; and no set of modules imports itself round in a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.workspace import REPO

# lowest first; a module may import its own layer and the ones before it
LAYERS = (
    ("foundation", ("train.errors", "train.context", "train")),
    ("models and data", ("train.models", "dataloaders")),
    ("engine", ("train.engine",)),
    ("studies", ("train.studies",)),
    ("entry points", ("train.cli", "launchers")),
)
PACKAGES = ("train", "dataloaders", "launchers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


MODULES = sources()


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix that names ``module``; ``__main__`` modules are entry points."""
    if module.endswith(".__main__"):
        return len(LAYERS) - 1
    best, rank = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, i
    assert rank is not None, f"{module} belongs to no layer: add it to LAYERS"
    return rank


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports, anywhere in its source."""
    found = set()
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    found.discard(module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_imports_only_its_own_layer_or_lower():
    upward = [f"{m} ({LAYERS[layer(m)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
              for m, targets in GRAPH.items() for target in sorted(targets) if layer(target) > layer(m)]
    assert upward == []


def test_the_engine_imports_nothing_of_the_studies():
    engine = {m: t for m, t in GRAPH.items() if m.startswith("train.engine")}
    assert engine, "no engine modules found"
    assert [(m, t) for m, targets in engine.items() for t in targets if t.startswith("train.studies")] == []


def test_no_import_cycles():
    cycles = [sorted(component) for component in strongly_connected(GRAPH) if len(component) > 1]
    assert cycles == []


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively (the module graph is deep enough to matter for recursion)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return components


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert [sorted(c) for c in strongly_connected(graph) if len(c) > 1] == expected
