"""The repository stands alone: no tracked file points at a path outside it, and the vendor examples the
models are checked against are data inside it, each naming the page and API version it came from."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "tests" / "fixtures" / "vendor"

# Folders that live beside a checkout on some machine, never inside it.
_NEIGHBOURS = re.compile(r"\bshared/(?:DESIGN\.md|api-docs|hooks)\b")
# Absolute paths into a particular machine's work area or home directories.
_ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|home|Users|root)/[\w.-]")
# A literal relative path climbing with ../ (resolved from the file's own folder).
_CLIMB = re.compile(r"(?<![\w./-])((?:\.\./)+)([\w.-]*)")
# Python reaching for a folder above its own file: Path(__file__).parent.parent / .parents[N].
_FILE_PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?((?:\.parent\b)*)(?:\.parents\[(\d+)\])?")


def outside_references(path: Path, text: str, root: Path) -> list[str]:
    """Every line of ``text`` (the file at ``path`` in the repository ``root``) naming a path outside
    ``root``, as ``"path:line: what"``."""
    found = []
    rel = path.relative_to(root)
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{rel}:{number}"
        for pattern in (_NEIGHBOURS, _ABSOLUTE):
            found += [f"{where}: {m.group(0)!r}" for m in pattern.finditer(line)]
        for m in _CLIMB.finditer(line):
            target = (path.parent / m.group(1) / m.group(2)).resolve()
            if not target.is_relative_to(root):
                found.append(f"{where}: {m.group(0)!r} resolves to {target}")
        for m in _FILE_PARENTS.finditer(line):
            ups = m.group(1).count(".parent")
            level = ups + int(m.group(2)) if m.group(2) is not None else ups - 1
            if level >= 0 and not path.parents[level].resolve().is_relative_to(root):
                found.append(f"{where}: {m.group(0)!r} is {path.parents[level]}, outside the repository")
    return found


def _tracked_files() -> list[Path]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    return [ROOT / name.decode() for name in names if name]


def test_no_tracked_file_refers_to_a_path_outside_the_repository() -> None:
    """README, docs, code, tests, scripts and config name only paths inside the repository."""
    files = _tracked_files()
    assert len(files) > 50
    assert ROOT / "README.md" in files
    found: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):  # binary, or deleted but not yet committed
            continue
        found += outside_references(path, text, ROOT)
    assert found == [], "paths outside the repository:\n" + "\n".join(found)


# The offending samples are assembled from pieces so that this file does not itself contain them.
UP, SHARED, FILE = "../", "shared/", "Path(__file__)"


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("README.md", f"per `{UP}{SHARED}DESIGN.md`"),
        ("tests/models/test_x.py", f'DOCS = {FILE}.resolve().parents[3] / "api-docs"'),
        ("tests/models/test_x.py", f"DOCS = {FILE}.parent.parent.parent.parent"),
        ("connector/x.py", f'"""From ``{SHARED}api-docs/loop-create-order.txt``."""'),
        ("scripts/x", "cat /" + "work/main/notes.txt"),
        ("docs/x.md", "jars in /" + "home/alice/kafka"),
        ("docs/x.md", f"see [the notes]({UP}{UP}elsewhere.md)"),
    ],
)
def test_the_check_catches_each_kind_of_outside_path(where: str, line: str) -> None:
    """Each kind of reference the check looks for is reported, with its file and line."""
    found = outside_references(ROOT / where, f"first line\n{line}\n", ROOT)
    assert found
    assert all(f.startswith(f"{where}:2: ") for f in found), found


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("tests/models/test_x.py", 'VENDOR = Path(__file__).resolve().parents[1] / "fixtures"'),
        ("tests/models/x.md", f"[fixture]({UP}fixtures/vendor/loop-create-order.json)"),
        ("README.md", "the jars are cached in `~/.cache/orders-connector`"),
        ("docker-compose.yml", "test: /opt/kafka/bin/kafka-broker-api-versions.sh"),
        ("README.md", "a shared budget; see `docs/design.md`"),
    ],
)
def test_the_check_passes_paths_inside_the_repository(where: str, line: str) -> None:
    """Paths inside the repository, caches the project creates and paths inside images are fine."""
    assert outside_references(ROOT / where, line, ROOT) == []


def _fixtures() -> list[Path]:
    return sorted(VENDOR.glob("*.json"))


def test_vendor_examples_are_in_the_repository() -> None:
    """The four pages the model tests use are there."""
    names = {p.name for p in _fixtures()}
    assert {
        "loop-create-order.json",
        "loop-update-order.json",
        "loop-upsert-order.json",
        "shoplazza-update-order.json",
    } <= names


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.name)
def test_each_vendor_example_names_its_page_and_version(path: Path) -> None:
    """Every fixture says which vendor page (title and address) and API version it was copied from,
    holds the example itself, and is read by a test."""
    fixture: dict[str, Any] = json.loads(path.read_text())
    source = fixture["source"]
    for field in ("vendor", "page", "api_version"):
        assert source[field], field
    assert source["url"].startswith("https://")
    assert fixture.keys() & {"body", "field_examples", "body_parameters"}
    tests = "".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name
    )
    assert path.name in tests, f"no test reads {path.name}"
