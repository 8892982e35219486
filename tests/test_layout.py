"""The tests mirror the package: every module of ``connector/`` that defines a class has a unit test
module that imports it, and the unit tests drive the package through its public surface (no private
attribute of an object, no ``SimpleNamespace`` standing in for a part).

A module counts as imported by the name a test imports: ``from connector.park import Parking`` is an
import of ``connector.park._parking``, where ``Parking`` is defined, whichever module re-exports it.
Unit test modules are ``tests/**/test_*.py`` outside ``tests/integration`` and ``tests/container``
(they need a broker or podman) and ``tests/sim`` (the simulation)."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "connector"
NOT_UNIT = ("integration", "container", "sim")

EXEMPT = {
    # Modules with a class that no unit test module imports, and why. Each entry must still be needed:
    # once a unit test imports the module (or it has no class, or is gone), remove it here.
    "connector.deadletter.redrive": "reads the dead-letter topic and the source topics, and writes the "
    "vendor: tests/integration/test_failures.py and test_tenants.py (`connector dlq redrive`)",
}

PRIVATE_ALLOWED = {
    # (test module, attribute): reads of a private attribute of something that is not ours.
    ("tests/test_help.py", "_actions"): "argparse lists a parser's subcommands nowhere public",
    ("tests/test_help.py", "_SubParsersAction"): "argparse's type of that list",
}


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_with_classes() -> dict[str, list[str]]:
    """Every module of the package that defines a class (at its top level), with those classes."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        classes = [node.name for node in _tree(path).body if isinstance(node, ast.ClassDef)]
        if classes:
            found[_module_name(path)] = classes
    return found


def unit_test_modules() -> list[Path]:
    return sorted(
        path
        for path in (ROOT / "tests").rglob("test_*.py")
        if path.relative_to(ROOT / "tests").parts[0] not in NOT_UNIT
    )


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def imported_modules(path: Path) -> Iterator[str]:
    """The package's modules ``path`` imports, by the module each imported name is defined in."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("connector"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("connector")
        ):
            assert node.module is not None
            source = importlib.import_module(node.module)
            yield node.module
            for alias in node.names:
                if _is_module(f"{node.module}.{alias.name}"):
                    yield f"{node.module}.{alias.name}"
                    continue
                defined_in = getattr(getattr(source, alias.name, None), "__module__", None)
                if isinstance(defined_in, str):
                    yield defined_in


@functools.cache
def _credit() -> dict[str, set[str]]:
    """Every module of the package, with the unit test modules that import it."""
    credit: dict[str, set[str]] = {}
    for test in unit_test_modules():
        for name in imported_modules(test):
            credit.setdefault(name, set()).add(str(test.relative_to(ROOT)))
    return credit


def test_every_module_with_a_class_has_a_unit_test_module_that_imports_it() -> None:
    credit = _credit()
    missing = {
        name: classes
        for name, classes in modules_with_classes().items()
        if name not in credit and name not in EXEMPT
    }
    assert not missing, (
        "modules defining a class that no unit test module imports (write a test module for each, or, "
        f"if it truly cannot be unit-tested, add it to EXEMPT saying why): {missing}"
    )


def test_every_exemption_is_still_needed() -> None:
    credit, with_classes = _credit(), modules_with_classes()
    stale = {name: credit.get(name) for name in EXEMPT if name not in with_classes or name in credit}
    assert not stale, f"remove from EXEMPT (gone, no class, or imported by a unit test now): {stale}"


def test_the_meta_test_sees_an_import_by_the_module_that_defines_the_name() -> None:
    """Its own check: ``from connector.park import Parking`` credits ``connector.park._parking``."""
    credit = _credit()
    assert "tests/test_park.py" in credit["connector.park._parking"]
    assert "tests/test_ledger.py" in credit["connector.ledger"]
    assert "tests/test_pipeline.py" in credit["connector.pipeline"]
    assert "connector.pipeline" in modules_with_classes()


def _private_reads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``x._name`` in ``tree``, but for ``self``/``cls`` (a test double's own state) and dunders."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        yield node.lineno, name


def test_unit_tests_reach_into_no_private_attribute() -> None:
    """What a test asserts through a private attribute breaks with a refactoring that keeps the
    behaviour, and passes with one that breaks it: drive the public surface, read a metric from the
    registry (``registry.get_sample_value``), or give the part a small public accessor."""
    found = []
    for path in [*unit_test_modules(), ROOT / "tests" / "fakes.py"]:
        where = str(path.relative_to(ROOT))
        for line, name in _private_reads(_tree(path)):
            if (where, name) not in PRIVATE_ALLOWED:
                found.append(f"{where}:{line}: .{name}")
    assert not found, "private attributes read or written by unit tests:\n" + "\n".join(found)


def _namespaces(tree: ast.AST) -> Iterator[int]:
    """Lines of ``tree`` that name ``SimpleNamespace``."""
    for node in ast.walk(tree):
        if (
            (isinstance(node, ast.Name) and node.id == "SimpleNamespace")
            or (isinstance(node, ast.Attribute) and node.attr == "SimpleNamespace")
            or (isinstance(node, ast.ImportFrom) and any(a.name == "SimpleNamespace" for a in node.names))
        ):
            yield node.lineno


def test_no_simple_namespace_stands_in_for_a_part() -> None:
    """A stand-in implements the protocol the part declares (``tests/fakes.py``), so that the type
    checker and a changed protocol both catch it."""
    users = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in unit_test_modules()
        for line in _namespaces(_tree(path))
    ]
    assert not users


def test_the_layout_checks_can_fail() -> None:
    """The checks above see what they look for (else they would pass on anything)."""
    sample = ast.parse("obj._state = 1\nself._mine\ncls._ours\nobj.__dict__\nmodule._Private.X\n")
    assert [name for _, name in _private_reads(sample)] == ["_state", "_Private"]
    namespaces = (
        "from types import SimpleNamespace\nimport types\nSimpleNamespace()\ntypes.SimpleNamespace()\n"
    )
    assert sorted(_namespaces(ast.parse(namespaces))) == [1, 3, 4]
    assert "connector._lastseen" in modules_with_classes()
    assert "tests/test_lastseen.py" in _credit()["connector._lastseen"]
