"""The package's import graph has no cycle: every module of ``connector/`` can be read (and imported)
before the modules that import it.

The graph is built from the source (``ast``), not from ``sys.modules``: every ``import`` and
``from ... import`` of a ``connector`` module counts, at module level, inside functions (a deferred
import is still a dependency) and under ``if TYPE_CHECKING:`` (a cycle through annotations is a cycle
a reader has to untangle). Importing ``a.b.c`` also imports the packages ``a.b`` and ``a`` (their
``__init__`` runs first), so those are edges too, except the importer's own enclosing packages, which
are being imported already.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import connector

ROOT = Path(connector.__file__).resolve().parent

ALLOWED: set[tuple[str, str]] = set()
"""Edges left out of the graph, each a known cycle that is someone else's to end."""


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> Iterator[str]:
    """The ``connector`` modules an import statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[: len(package) - node.level + 1]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        for alias in node.names:
            if f"{source}.{alias.name}" in known:  # a submodule: ``from connector import metadata``
                yield f"{source}.{alias.name}"
            elif source in known:
                yield source


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of the package ``root`` and the modules of it that importing it imports."""
    known = _modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        own = set(_ancestors(module))
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _imported(node, module, path.name == "__init__.py", known):
                edges.add(target)
                edges.update(p for p in _ancestors(target) if p not in own and p in known)
        edges.discard(module)
        graph[module] = {target for target in edges if (module, target) not in ALLOWED}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as one cycle
    through it, written ``a -> b -> ... -> a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_one_cycle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    for v in queue:
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError("a strongly connected component without a cycle")


def test_the_package_has_no_import_cycle() -> None:
    """No module of ``connector/`` imports, directly or not, a module that imports it."""
    graph = import_graph()
    assert len(graph) > 50
    found = cycles(graph)
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_every_allowed_edge_still_exists() -> None:
    """An entry of ``ALLOWED`` whose import is gone is removed, so that it cannot hide a new cycle."""
    known = _modules(ROOT)
    stale = []
    for importer, imported in sorted(ALLOWED):
        path = known[importer]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {t for n in ast.walk(tree) for t in _imported(n, importer, path.name == "__init__.py", known)}
        if imported not in names:
            stale.append(f"{importer} -> {imported}")
    assert stale == [], "remove from ALLOWED: " + ", ".join(stale)


def test_the_vendors_registry_sits_below_config() -> None:
    """The registry, the vendors' modules and the clients' shared plumbing import neither ``config``
    nor anything that reads settings: ``config`` checks settings against the registry."""
    graph = import_graph()

    def reach(module: str) -> set[str]:
        seen, todo = set(), [module]
        while todo:
            for w in graph[todo.pop()] - seen:
                seen.add(w)
                todo.append(w)
        return seen

    for module in ("connector.vendors", "connector.vendors.loop", "connector.vendors.shoplazza"):
        assert "connector.config" not in reach(module), module
    assert "connector.vendors" in graph["connector.config"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b", "c"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["c", "d", "c"], ["a", "b", "a"]]),
    ],
)
def test_cycles_are_found(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    """The check itself can fail: a cycle of two or three modules is found and written out."""
    assert cycles(graph) == expected


def test_imports_of_every_form_are_edges(tmp_path: Path) -> None:
    """``import a.b``, ``from a import b`` (a submodule), ``from a.b import name``, relative imports,
    deferred and TYPE_CHECKING imports all count, and a submodule's import brings its package."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from . import sibling\n")
    (pkg / "sub" / "sibling.py").write_text("def f():\n    import pkg.top\n")
    (pkg / "top.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.leaf import x\n"
    )
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.sub.sibling"}
    assert graph["pkg.sub.sibling"] == {"pkg.top"}
    assert graph["pkg.top"] == {"pkg.sub.leaf", "pkg.sub"}
    assert cycles(graph) == [["pkg.sub", "pkg.sub.leaf", "pkg.sub.sibling", "pkg.top", "pkg.sub"]]


INSTRUMENTED = {
    # The modules that may import Prometheus (``prometheus_client``) or its implementation of the
    # hooks (``connector.metrics``), and why; every other module reports to ``connector.instruments``.
    "connector.metrics": "the Prometheus implementation of the hooks",
    "connector._series": "declares the series the Prometheus implementation writes",
    "connector.endpoints": "serves the registry on /metrics",
    "connector.app": "the composition root builds the Prometheus implementation and passes it on",
    "connector.demo_drift": "the drift demo runs the connector and reports what its audits' counters say",
}


def prometheus_users(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of the package ``root`` that imports ``prometheus_client`` or the package's
    ``metrics`` module (at module level, inside functions or under TYPE_CHECKING), with which."""
    known = _modules(root)
    metrics = f"{root.name}.metrics"
    graph = import_graph(root)
    found: dict[str, set[str]] = {}
    for module, path in known.items():
        names = {metrics} & graph[module]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                tops = {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = {(node.module or "").partition(".")[0]}
            else:
                continue
            names |= tops & {"prometheus_client"}
        if names:
            found[module] = names
    return found


def test_only_the_prometheus_implementation_imports_prometheus() -> None:
    """The core reports to the hooks of ``connector.instruments`` and never imports Prometheus nor
    its implementation of them: only the modules of ``INSTRUMENTED`` do."""
    users = prometheus_users()
    stray = {module: sorted(names) for module, names in users.items() if module not in INSTRUMENTED}
    assert stray == {}, f"report to connector.instruments instead: {stray}"
    assert users["connector.metrics"] == {"prometheus_client"}
    assert set(INSTRUMENTED) <= set(users), "remove from INSTRUMENTED: " + ", ".join(
        set(INSTRUMENTED) - set(users)
    )


def test_an_import_of_prometheus_is_seen_in_every_form(tmp_path: Path) -> None:
    """The check itself can fail: ``import prometheus_client``, ``from prometheus_client.x import
    y``, a deferred import and an import of the package's ``metrics`` module are all seen."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics.py").write_text("from prometheus_client import Counter\n")
    (pkg / "plain.py").write_text("import prometheus_client.exposition\n")
    (pkg / "late.py").write_text("def f():\n    from prometheus_client.core import Metric\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "user.py").write_text("from pkg import metrics\n")
    (pkg / "clean.py").write_text("import prometheus_clients\nfrom pkg import sub\n")
    assert prometheus_users(pkg) == {
        "pkg.metrics": {"prometheus_client"},
        "pkg.plain": {"prometheus_client"},
        "pkg.late": {"prometheus_client"},
        "pkg.sub.user": {"pkg.metrics"},
    }
