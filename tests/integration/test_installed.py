"""The installed package on its own: `pip install` into a fresh virtualenv outside the repository, then
`connector sandbox` and `connector demo` run from a directory that has nothing of the checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from connector.localkafka import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What a fresh clone does not have: local environments, caches and build output.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", ".hypothesis", ".local",
)  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the venv's bin folder, an empty working folder, the environment): the project installed with
    plain `pip install` from a copy of the repository into a new virtualenv, both outside it."""
    base = tmp_path_factory.mktemp("installed")
    source, venv, elsewhere = base / "src", base / "venv", base / "elsewhere"
    shutil.copytree(ROOT, source, ignore=NOT_IN_A_CLONE)
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith("CONNECTOR_")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", str(source)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = install.stdout + install.stderr
    assert install.returncode == 0, output
    warnings = [line for line in output.splitlines() if re.search(r"warning|deprecat", line, re.I)]
    assert warnings == [], output
    shutil.rmtree(source)  # nothing of the repository is left to lean on
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import connector.broker, os; print(os.path.dirname(connector.__file__))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where
    return venv / "bin", elsewhere, env


def test_installed_sandbox_serves_the_orders_api(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """`connector sandbox` starts, answers an authenticated upsert, and stops on SIGINT with 0."""
    bin_dir, elsewhere, env = installed
    port = free_port()
    proc = subprocess.Popen(
        [bin_dir / "connector", "sandbox", "--port", str(port), "--api-key", "k-123"],
        cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"sandbox listening on http://127.0.0.1:{port}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/orders",
            data=json.dumps({"external_id": "E-1", "name": "#1001"}).encode(),
            headers={"X-Authorization": "k-123", "Content-Type": "application/json"},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert json.load(response)["order"]["external_id"] == "E-1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/orders", timeout=10) as response:
            assert "E-1" in response.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_installed_demo_syncs_every_order(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """`connector demo` starts its broker from the package, syncs every order, dead-letters the two bad
    events, and logs no error but those two rejections (nothing of aiokafka's group start-up)."""
    bin_dir, elsewhere, env = installed
    started = time.monotonic()
    result = subprocess.run(
        [bin_dir / "connector", "demo", "--events", "120", "--orders", "30"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "demo OK" in out
    held = re.search(r"(\d+) orders held; (\d+)/(\d+) equal to their latest event", out)
    assert held is not None, out
    assert int(held.group(2)) == int(held.group(3)) > 0
    assert "key=poison-1 stage=decode" in out
    assert "key=poison-2 stage=validate" in out
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    errors = [line for line in logged if line["level"] in ("error", "critical")]
    assert [line["event"] for line in errors] == ["event_rejected", "event_rejected"], errors
    coordinator = [line for line in logged if line.get("logger") == "aiokafka.consumer.group_coordinator"]
    assert coordinator == []
    assert time.monotonic() - started < 400
