"""Connector processes for the tests that need real process boundaries (kill -9, SIGTERM, rebalances)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from connector.localkafka import free_port


def connector_env(bootstrap: str, topic: str, base_url: str, **settings: str | float | int) -> dict[str, str]:
    """CONNECTOR_* variables for a connector reading ``topic`` into the sandbox at ``base_url``;
    ``settings`` are extra names without the prefix, e.g. ``SINK__RATE_LIMIT_PER_SECOND=5``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNECTOR_")}
    env.update({
        "CONNECTOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CONNECTOR_KAFKA__TOPICS": topic,
        "CONNECTOR_KAFKA__GROUP_ID": f"{topic}-group",
        "CONNECTOR_KAFKA__COMMIT_INTERVAL_SECONDS": "0.2",
        "CONNECTOR_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "CONNECTOR_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "CONNECTOR_KAFKA__LEASE_SECONDS": "3",
        "CONNECTOR_SINK__TIMEOUT_SECONDS": "2",
        # kafka.settle_seconds by its old name, which both this release and the previous one read
        # (tests/integration/test_upgrade.py starts both with this environment)
        "CONNECTOR_SINK__SETTLE_SECONDS": "3",
        "CONNECTOR_DLQ__TOPIC": f"{topic}.dlq",
        "CONNECTOR_SINK__BASE_URL": base_url,
        "CONNECTOR_SINK__API_KEY": "test-key",
        "CONNECTOR_METRICS__PORT": "0",
        "CONNECTOR_LOG_LEVEL": "INFO",
    })  # fmt: skip
    env.update({f"CONNECTOR_{k}": str(v) for k, v in settings.items()})
    return env


class ConnectorProcess:
    """``python -m connector run`` in a child process, its output in ``log``; ``argv`` (and ``cwd``)
    run another installation instead, e.g. a previous release's interpreter."""

    def __init__(
        self, env: dict[str, str], log: Path, argv: list[str] | None = None, cwd: Path | None = None
    ) -> None:
        self.env = env
        self.log = log
        self.argv = argv or [sys.executable, "-m", "connector", "run"]
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConnectorProcess:
        """Start the process (output appended to the log file)."""
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                     cwd=self.cwd)  # fmt: skip
        handle.close()
        return self

    def kill9(self) -> None:
        """SIGKILL: no drain, no commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM: drain, commit, exit 0."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_lines(self) -> list[str]:
        """What the process printed so far."""
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []


def wait_for_log(proc: ConnectorProcess, fragment: str, timeout: float) -> None:
    """Block until the process logged ``fragment``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(fragment in line for line in proc.log_lines()):
            return
        time.sleep(0.1)
    raise AssertionError(f"{fragment!r} not logged within {timeout}s; log tail: {proc.log_lines()[-10:]}")


class SandboxProcess:
    """The sandbox in a process of its own, so that its request times are not skewed by the test's
    own event loop; controlled over its ``/_sandbox`` routes."""

    def __init__(self, log: Path, **options: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._options = {"port": self.port, **options}
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SandboxProcess:
        handle = self._log.open("ab")
        code = (
            "import asyncio, json, sys\n"
            "from connector.sandbox import Sandbox, Faults\n"
            "opts = json.loads(sys.argv[1])\n"
            "async def main():\n"
            "    faults = Faults(**opts.pop('faults', {}))\n"
            "    tenants = {n: Sandbox(**o) for n, o in opts.pop('tenants', {}).items()}\n"
            "    async with Sandbox(faults=faults, tenants=tenants, **opts):\n"
            "        print('ready', flush=True)\n"
            "        await asyncio.Event().wait()\n"
            "asyncio.run(main())\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(self._options)], stdout=handle,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        handle.close()
        deadline = time.monotonic() + 30
        while "ready" not in self._log.read_text(errors="replace"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"sandbox did not start: {self._log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    async def faults(self, **values: object) -> None:
        """Change the faults (``outage_seconds`` starts an outage window now)."""
        async with httpx.AsyncClient(base_url=self.url) as client:
            (await client.post("/_sandbox/faults", json=values)).raise_for_status()

    async def requests(self) -> list[dict[str, Any]]:
        """Every request the sandbox received."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            return (await client.get("/_sandbox/requests")).json()["requests"]  # type: ignore[no-any-return]

    async def orders(self) -> dict[str, dict[str, Any]]:
        """The orders held, by external id."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            held = (await client.get("/_sandbox/orders")).json()["orders"]
        return {o["external_id"]: o for o in held if o.get("external_id")}


def sent_times(procs: list[ConnectorProcess], tenant: str | None = None) -> list[float]:
    """When each request (of ``tenant``, if given) left its process (wall clock), from the
    ``api_request_tick`` lines they log at DEBUG: the tick it used plus how late it was used."""
    out = []
    for proc in procs:
        for line in proc.log_lines():
            if '"api_request_tick"' in line:
                entry = json.loads(line)
                if tenant is None or entry.get("tenant") == tenant:
                    out.append(entry["tick"] + entry["late_ms"] / 1000)
    return sorted(out)


def sent_by_tenant(procs: list[ConnectorProcess]) -> dict[str, list[float]]:
    """:func:`sent_times` of every tenant at once, by tenant."""
    out: dict[str, list[float]] = {}
    for proc in procs:
        for line in proc.log_lines():
            if '"api_request_tick"' in line:
                entry = json.loads(line)
                out.setdefault(entry.get("tenant", ""), []).append(entry["tick"] + entry["late_ms"] / 1000)
    return {t: sorted(times) for t, times in out.items()}
