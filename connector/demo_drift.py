"""`connector demo --drift`: the read-back audits at work, end to end.

A local broker, the sandbox and the connector at Loop's budget (5 requests a second). Forty orders
are delivered twice (a first version, then a newer one), so the sandbox has an older version of each
to go back to. Then the sandbox, by itself, loses some orders, reverts some to their older version and
has some edited "in its admin", while live traffic goes on. The connector's audits read the orders
back on the ticks live traffic leaves unused, send the lost and reverted ones again and report the
edits without overwriting them; last, ``connector trace`` tells one repaired order's story.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from connector import app, logs
from connector.config import (
    AuditSettings,
    DlqSettings,
    KafkaSettings,
    MetricsSettings,
    Settings,
    SinkSettings,
)
from connector.demo import create_topics, produce
from connector.localkafka import LocalKafka
from connector.metrics import Metrics
from connector.samples import envelope, order_body
from connector.sandbox import Sandbox
from connector.trace import render, trace

TOPIC, DLQ, PARTITIONS = "orders-drift", "orders-drift.dlq", 2
ORDERS = [f"DRIFT-{i:03d}" for i in range(40)]
LOST, REVERTED, EDITED = ORDERS[:3], ORDERS[3:6], ORDERS[6:8]
LIVE = [f"LIVE-{i:03d}" for i in range(10)]
BOUND_S = 120.0
"""Seconds the demo waits for the repairs (the README's bound for 40 orders, 2.5 reads a second and
the reads' 10 s interval is 16 s; the rest is margin for a busy machine)."""


def _events(orders: list[str], version: int) -> list[tuple[bytes, bytes | None]]:
    return [(o.encode(), envelope(order_body(o, version), version)) for o in orders]


def _count(metrics: Metrics, name: str, **labels: str) -> int:
    return int(metrics.registry.get_sample_value(name, labels) or 0)


async def _wait(condition: Callable[[], bool], seconds: float, say: Callable[[float], None]) -> bool:
    """Wait until ``condition`` holds (True), or ``seconds`` passed (False); ``say`` the progress."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return True
        say(time.monotonic() - started)
        await asyncio.sleep(2)
    return condition()


async def drift_demo(bootstrap: str) -> int:
    """The demo against the broker at ``bootstrap``; returns the process exit code."""
    await create_topics(bootstrap, {TOPIC: PARTITIONS, DLQ: 1})
    async with Sandbox(api_key="demo-key", rate_per_minute=300) as sandbox:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=[TOPIC], group_id="demo-drift"),
            dlq=DlqSettings(topic=DLQ),
            sink=SinkSettings(base_url=sandbox.url, api_key="demo-key", rate_limit_per_second=5),
            audit=AuditSettings(enabled=True, min_interval_seconds=10.0),
            metrics=MetricsSettings(port=0),
            log_level="WARNING",
            shutdown_grace_seconds=10,
        )
        metrics = Metrics()
        stop = asyncio.Event()
        task = asyncio.create_task(app.serve(settings, stop, app.Parts(metrics=metrics)))
        first = {o: order_body(o, 1) for o in ORDERS}
        newest = {o: order_body(o, 2) for o in ORDERS}

        def progress(what: str, latest: dict[str, dict[str, Any]]) -> Callable[[float], None]:
            return lambda s: print(
                f"  {s:5.1f}s  {what}: {len(sandbox.in_sync(latest))}/{len(latest)}", flush=True
            )

        await produce(bootstrap, TOPIC, _events(ORDERS, 1))
        print(f"produced the first version of {len(ORDERS)} orders; connector running, budget 5 requests/s")
        await _wait(lambda: sandbox.holds(first), 60, progress("in sync", first))
        await produce(bootstrap, TOPIC, _events(ORDERS, 2))
        print("produced their second version")
        await _wait(lambda: sandbox.holds(newest), 60, progress("in sync", newest))
        done = sandbox.store.tamper(LOST, REVERTED, {o: {"name": "#edited in the admin"} for o in EDITED})
        print(
            f"\nthe vendor, by itself: lost {', '.join(done['lose'])}; reverted {', '.join(done['revert'])} "
            f"to their first version; {', '.join(done['alter'])} edited in its admin"
        )
        await produce(bootstrap, TOPIC, _events(LIVE, 1))
        print(f"live traffic meanwhile: {len(LIVE)} new orders")
        expected = newest | {o: order_body(o, 1) for o in LIVE}
        started = time.monotonic()

        def repaired() -> bool:
            return sandbox.holds(expected) and _count(
                metrics, "connector_audit_reads_total", result="differs"
            ) >= len(EDITED)

        ok = await _wait(repaired, BOUND_S, progress("in sync", expected))
        took = time.monotonic() - started
        stop.set()
        await task
        edits_kept = all(
            (held := sandbox.store.get_external(o)) is not None and held.get("name") == "#edited in the admin"
            for o in EDITED
        )
        reads = {
            r: _count(metrics, "connector_audit_reads_total", result=r)
            for r in ("in_sync", "missing", "older", "differs", "ahead", "failed")
        }
        repairs = sum(
            _count(metrics, "connector_audit_repairs_total", drift=d, outcome="delivered")
            for d in ("missing", "older")
        )
        limited = _count(metrics, "connector_api_rate_limited_total")
        print(f"\nwhat the audits did in {took:.0f} s after the tampering (read back on spare ticks only):")
        print(f"  orders read back, by result: {reads}")
        print(
            f"  drifts repaired: {repairs} (missing and older); edits reported, not overwritten: {edits_kept}"
        )
        print(f"  429s: {limited}")
        story = await trace(settings, LOST[0])
        print(f"\nconnector trace {LOST[0]}:")
        print(render(story))
        ok = ok and edits_kept and repairs >= len(LOST) + len(REVERTED) and limited == 0
        print("\ndemo " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1


def run_drift_demo() -> int:
    """Run the drift demo; returns the process exit code."""
    logs.configure("WARNING")
    print("starting a local Kafka broker (KRaft, single node) ...", flush=True)
    with LocalKafka() as kafka:
        return asyncio.run(drift_demo(kafka.bootstrap_servers))


__all__ = ["drift_demo", "run_drift_demo"]
