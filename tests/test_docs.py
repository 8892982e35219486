"""The documents hold together: every link between the README and ``docs/`` reaches a file and a heading
that exist, every repository path they name in backticks exists, and the README stays an operator's
guide of well under 350 lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.MULTILINE)
# A path into the repository, as the documents write it in backticks: `connector/deliver.py`.
_PATH = re.compile(r"`((?:connector|tests|scripts|bench|deploy|docs|examples|config|\.ci)/[\w./-]*)`")


def _prose(path: Path) -> str:
    """The document without its fenced code blocks (examples may name files that do not exist)."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_prose(path)):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_matches_github() -> None:
    """The anchors written in the documents are GitHub's."""
    assert slug("Stopping, crashes and rebalances") == "stopping-crashes-and-rebalances"
    assert slug("The budget's metrics") == "the-budgets-metrics"
    assert slug("O: the mapping stage") == "o-the-mapping-stage"
    assert slug("Many shops: 1,000 accounts in one process") == "many-shops-1000-accounts-in-one-process"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path: Path) -> None:
    """Each relative link names a file in the repository and, when it has one, a heading of it."""
    broken = []
    for target in _LINK.findall(_prose(path)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        name, _, anchor = target.partition("#")
        dest = (path.parent / name).resolve() if name else path
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist(path: Path) -> None:
    """Each repository path written in backticks exists (placeholders like ``<commit>`` aside)."""
    missing = [
        name
        for name in _PATH.findall(_prose(path))
        if not any(c in name for c in "<*{") and not (ROOT / name.rstrip("/")).exists()
    ]
    assert missing == []


def test_readme_is_a_guide_not_a_manual() -> None:
    """The README stays the operator's guide; the rest lives in ``docs/`` (issue 22)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 350, f"README.md has {lines} lines: move reference material to docs/"
