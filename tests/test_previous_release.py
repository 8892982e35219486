"""scripts/previous-release: the commit it installs by default, and a commit it cannot find."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "previous-release"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_the_default_commit_is_the_pinned_one_and_in_the_history() -> None:
    pinned = (ROOT / "tests" / "integration" / "previous_release.txt").read_text().split()[0]
    assert _run("commit").stdout.strip() == pinned
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{pinned}^{{commit}}"], check=False)
    assert found.returncode == 0, f"{pinned} is not in this repository's history"


def test_a_commit_missing_from_the_history_fails_in_one_line() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    missing = _run("build", "0123456789abcdef0123456789abcdef01234567")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        "previous-release: commit 0123456789abcdef0123456789abcdef01234567 is not in this repository's "
        "history (a shallow clone? git fetch --unshallow)"
    )
