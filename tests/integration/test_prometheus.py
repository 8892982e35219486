"""Monitoring proven live: a real Prometheus server scrapes a running connector, every expression of the
Grafana dashboard returns data, and the alert rules fire when their condition is produced and resolve
after it ends.

The alert rules Prometheus loads are ``deploy/prometheus/alerts.yaml`` with only the ``for:`` durations
scaled (minutes become seconds) so that the test runs in seconds; expressions and thresholds are the real
ones. The stalled partition's event is produced with a Kafka timestamp 16 minutes in the past, so the
real 15-minute threshold is crossed without waiting 15 minutes: the connector ages an event from its
record timestamp, as it would an event that waited in the topic.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from connector.localkafka import free_port
from connector.samples import envelope, make_stream, order_body
from connector.sandbox import Sandbox
from tests.helpers import create_topics, produce, running, settings_for, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
CIRCUIT = "OrdersConnectorCircuitOpen"
OLDEST = "OrdersConnectorOldestUnsyncedEvent"
TIME_SCALE = 60  # a rule's `for: 5m` becomes `for: 5s`
INTERVAL = "1s"  # scrape and rule evaluation
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


# -- the Prometheus server -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    """The `prometheus` binary; installed from Debian's package as .ci/run does when it is missing."""
    found = shutil.which("prometheus")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                       check=False, capture_output=True, env=env)  # fmt: skip
        found = shutil.which("prometheus")
    if found is None:
        pytest.skip("no prometheus binary, and it could not be installed (apt-get install prometheus)")
    return found


def seconds(duration: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``, ``90s``) in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(n) * UNITS[u] for n, u in parts)


def scaled_rules(source: Path, target: Path) -> dict[str, float]:
    """Copy the alert rules with every ``for:`` divided by TIME_SCALE (at least 1s), nothing else
    changed; returns each alert's scaled ``for`` in seconds."""
    doc = yaml.safe_load(source.read_text())
    scaled = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["for"] = f"{max(1, round(seconds(rule['for']) / TIME_SCALE))}s"
            scaled[rule["alert"]] = seconds(rule["for"])
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    original = yaml.safe_load(source.read_text())
    copied = yaml.safe_load(target.read_text())
    for old, new in zip(original["groups"], copied["groups"], strict=True):
        for a, b in zip(old["rules"], new["rules"], strict=True):
            assert {**a, "for": None} == {**b, "for": None}, "only `for:` may differ from the real rules"
    return scaled


@dataclass
class Prometheus:
    """A running Prometheus server and a client for its HTTP API."""

    url: str
    client: httpx.AsyncClient
    log: Path

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now."""
        answer = (await self.client.get(f"{self.url}/api/v1/query", params={"query": expr})).json()
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["resultType"] == "vector", (expr, answer["data"]["resultType"])
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    async def alert_rules(self) -> dict[str, dict[str, Any]]:
        """Every alerting rule by name, with its state (inactive, pending, firing) and alerts."""
        answer = (await self.client.get(f"{self.url}/api/v1/rules", params={"type": "alert"})).json()
        return {r["name"]: r for g in answer["data"]["groups"] for r in g["rules"]}

    async def scraped(self) -> bool:
        """The connector's target was scraped successfully at least once."""
        return [s["value"][1] for s in await self.query('up{job="orders-connector"}')] == ["1"]


@asynccontextmanager
async def prometheus(binary: str, workdir: Path, metrics_port: int, rules: Path) -> AsyncIterator[Prometheus]:
    """Start ``binary`` scraping 127.0.0.1:``metrics_port`` and evaluating ``rules`` every second."""
    config = {
        "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "orders-connector", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            server = Prometheus(f"http://127.0.0.1:{port}", client, log)

            async def ready() -> bool:
                assert proc.returncode is None, f"prometheus exited: {log.read_text()[-2000:]}"
                with suppress(httpx.TransportError):
                    return (await client.get(f"{server.url}/-/ready")).status_code == 200
                return False

            await wait_until(ready, timeout=20)
            yield server
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- what the alerts did ---------------------------------------------------------------------------
@dataclass
class AlertLog:
    """Each alerting rule's state changes as seen by polling /api/v1/rules, with seconds since ``t0``."""

    t0: float = field(default_factory=time.monotonic)
    state: dict[str, str] = field(default_factory=dict)
    changes: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, alert, state, value)
    clock: list[str] = field(default_factory=list)  # UTC time of each change

    def note(self, rules: dict[str, dict[str, Any]]) -> None:
        for name, rule in rules.items():
            state = rule["state"]
            if self.state.get(name, "inactive") != state:
                value = f"value {float(rule['alerts'][0]['value']):g}" if rule["alerts"] else ""
                self.changes.append((round(time.monotonic() - self.t0, 2), name, state, value))
                self.clock.append(time.strftime("%H:%M:%S", time.gmtime()))
            self.state[name] = state

    def states_of(self, alert: str) -> list[str]:
        return [state for _, name, state, _ in self.changes if name == alert]

    def since(self, mark: int) -> set[str]:
        """Alerts that left inactive after change number ``mark``."""
        return {name for _, name, state, _ in self.changes[mark:] if state != "inactive"}

    def table(self) -> str:
        return "\n".join(
            f"  {t:6.2f}s ({clock} UTC)  {name:<36} {state:<8} {value}"
            for (t, name, state, value), clock in zip(self.changes, self.clock, strict=True)
        )


@asynccontextmanager
async def watching(server: Prometheus) -> AsyncIterator[AlertLog]:
    """Poll the alert rules every 0.2 s in the background while the block runs."""
    log = AlertLog()

    async def poll() -> None:
        while True:
            log.note(await server.alert_rules())
            await asyncio.sleep(0.2)

    task = asyncio.create_task(poll())
    try:
        yield log
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        print(f"alert state changes (seconds since the connector started):\n{log.table()}")


async def until_state(log: AlertLog, alert: str, state: str, timeout: float) -> float:
    """Wait for ``alert`` to reach ``state``; returns when (seconds since ``log.t0``)."""
    try:
        await wait_until(lambda: log.state.get(alert) == state, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"{alert} not {state} within {timeout}s; changes:\n{log.table()}") from None
    return next(t for t, name, s, _ in reversed(log.changes) if name == alert and s == state)


# -- the dashboard ---------------------------------------------------------------------------------
def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel type, panel title, expression) of every target of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["type"], p["title"], t["expr"]) for p in panels for t in p["targets"]]


async def without_data(server: Prometheus, targets: list[tuple[str, str, str]]) -> list[str]:
    """The targets whose expression returns no series, or only NaN (what Grafana shows as No data)."""
    empty = []
    for _, title, expr in targets:
        values = [float(s["value"][1]) for s in await server.query(expr)]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr} -> {values}")
    return empty


async def settled_without_data(
    server: Prometheus, targets: list[tuple[str, str, str]], timeout: float = 10.0
) -> list[str]:
    """:func:`without_data` once it is empty, or after ``timeout`` seconds (rates need two scrapes)."""
    deadline = time.monotonic() + timeout
    while (missing := await without_data(server, targets)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return missing


async def produce_at(bootstrap: str, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> int:
    """Send one event with the record timestamp ``timestamp_ms``; returns its partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value=value, key=key, timestamp_ms=timestamp_ms)
        return int(meta.partition)
    finally:
        await producer.stop()


@contextmanager
def timed(label: str, took: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    yield
    took[label] = round(time.monotonic() - started, 1)


async def test_dashboard_has_data_and_alerts_fire_and_resolve(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox, tmp_path: Path, prometheus_bin: str
) -> None:
    """Prometheus scraping a running connector: the dashboard's stat panels show a value on a healthy
    connector and every expression returns data once events were dead-lettered and unknown fields seen;
    an API outage fires the circuit alert (pending, then firing) and only it, recovery resolves it; a
    stalled partition fires the oldest-unsynced alert and only it, delivering the event resolves it;
    no other alert leaves inactive over the run."""
    for_s = scaled_rules(ALERTS, tmp_path / "alerts.yaml")
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    settings = settings_for(
        kafka_bootstrap, topic_name, sandbox.url,
        probe_interval_seconds=1.0, backoff_cap_seconds=1.0, max_attempts=1000,
    )  # fmt: skip
    assert settings.metrics.port
    took: dict[str, float] = {}
    async with (
        prometheus(prometheus_bin, tmp_path, settings.metrics.port, tmp_path / "alerts.yaml") as server,
        running(settings),
        watching(server) as alerts,
    ):
        # 1. Healthy traffic, then poison and an unknown field: the dashboard's expressions have data.
        with timed("dashboard", took):
            await wait_until(server.scraped, timeout=20, interval=0.2)
            assert set(await server.alert_rules()) == set(for_s), "Prometheus did not load every rule"
            healthy = make_stream(60, 30, seed=81, prefix="healthy")
            await produce(kafka_bootstrap, topic_name, healthy.events)
            await wait_until(lambda: sandbox.holds(healthy.latest), timeout=30)
            stats = [t for t in dashboard_targets() if t[0] == "stat"]
            assert len(stats) >= 4
            missing = await settled_without_data(server, stats)
            assert missing == [], f"stat panels with no data on a healthy connector: {missing}"
            extra = {**order_body("unknown-1", 1), "gift_wrap": {"paper": "red"}}
            await produce(kafka_bootstrap, topic_name, [
                (b"poison-1", b"{"), (b"unknown-1", envelope(extra, 1)),
            ])  # fmt: skip
            await wait_until(lambda: sandbox.store.get_external("unknown-1") is not None, timeout=20)
            targets = dashboard_targets()
            assert len(targets) >= 15
            missing = await settled_without_data(server, targets)
            assert missing == [], f"dashboard expressions with no data: {missing}"

        # 2. The API goes down: the circuit opens; its alert goes pending, then firing; recovery resolves it.
        with timed("circuit", took):
            mark = len(alerts.changes)
            sandbox.faults.update({"outage_seconds": 600})
            outage = make_stream(80, 40, seed=83, prefix="outage")
            await produce(kafka_bootstrap, topic_name, outage.events)
            circuit_firing = await until_state(alerts, CIRCUIT, "firing", timeout=30)
            sandbox.faults.update({"outage_until": 0.0})
            await until_state(alerts, CIRCUIT, "inactive", timeout=20)
            await wait_until(lambda: sandbox.holds(outage.latest), timeout=30)
            circuit_alerts = alerts.since(mark)

        # 3. A partition stalls on an event the API keeps refusing (503), produced 16 minutes ago:
        #    the oldest-unsynced alert goes pending, then firing; delivering the event resolves it.
        with timed("stall", took):
            mark = len(alerts.changes)
            sandbox.faults.update({"reject_external_ids": {"stalled-1": 503}})
            stalled = order_body("stalled-1", 1)
            partition = await produce_at(kafka_bootstrap, topic_name, b"stalled-1", envelope(stalled, 1),
                                         int((time.time() - 16 * 60) * 1000))  # fmt: skip
            oldest_firing = await until_state(alerts, OLDEST, "firing", timeout=30)
            lag = await server.query(f'connector_consumer_lag{{partition="{partition}"}}')
            sandbox.faults.update({"reject_external_ids": {}})
            await until_state(alerts, OLDEST, "inactive", timeout=20)
            assert sandbox.store.get_external("stalled-1") is not None
            stall_alerts = alerts.since(mark)

    print(f"phases took {took}")
    assert alerts.since(0) == {CIRCUIT, OLDEST}, f"alerts set off over the run:\n{alerts.table()}"
    assert circuit_alerts == {CIRCUIT}, f"the outage set off {circuit_alerts}:\n{alerts.table()}"
    assert stall_alerts == {OLDEST}, f"the stall set off {stall_alerts}:\n{alerts.table()}"
    assert alerts.states_of(CIRCUIT) == ["pending", "firing", "inactive"], alerts.table()
    assert alerts.states_of(OLDEST) == ["pending", "firing", "inactive"], alerts.table()
    for alert, fired in ((CIRCUIT, circuit_firing), (OLDEST, oldest_firing)):
        pending = next(t for t, name, s, _ in alerts.changes if name == alert and s == "pending")
        assert fired - pending >= for_s[alert] - 0.5, f"{alert} fired before its `for:`\n{alerts.table()}"
    held = [float(s["value"][1]) for s in lag]
    assert min(held, default=0) >= 1, f"partition {partition} was not held back while the alert fired: {lag}"
