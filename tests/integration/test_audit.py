"""Read-back audits on the real broker, against the sandbox: after every order is delivered, the
vendor loses some, reverts some to an older version and has some edited in its admin, while live
traffic goes on; the audits find each on spare ticks, send the lost and reverted ones again (their
newest state) and report the edits without overwriting them, with no 429."""

from __future__ import annotations

import asyncio

import pytest

from connector.config import AuditSettings
from connector.samples import envelope, order_body
from connector.sandbox import Sandbox
from tests.helpers import create_topics, produce, running, settings_for, wait_until

pytestmark = pytest.mark.integration


def events(orders: list[str], version: int) -> list[tuple[bytes, bytes]]:
    return [(o.encode(), envelope(order_body(o, version), version)) for o in orders]


async def test_drifts_are_found_on_spare_ticks_and_missing_and_older_are_repaired(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    orders = [f"A-{i}" for i in range(40)]
    await produce(kafka_bootstrap, topic_name, events(orders, 1))
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, rate_limit_per_second=20.0)
    settings = settings.model_copy(update={"audit": AuditSettings(enabled=True, min_interval_seconds=2.0)})
    newest = {o: order_body(o, 2) for o in orders}
    lost, reverted, edited = orders[:4], orders[4:8], orders[8:12]

    async with running(settings) as metrics:
        await wait_until(lambda: sandbox.holds({o: order_body(o, 1) for o in orders}), timeout=60)
        await produce(kafka_bootstrap, topic_name, events(orders, 2))  # the vendor keeps v1 to revert to
        await wait_until(lambda: sandbox.holds(newest), timeout=60)
        done = sandbox.store.tamper(lost, reverted, {o: {"name": "#edited in the admin"} for o in edited})
        assert done["skipped"] == []
        assert not sandbox.holds(newest)
        live = [f"L-{i}" for i in range(10)]
        await produce(kafka_bootstrap, topic_name, events(live, 1))  # live traffic meanwhile

        def read(result: str) -> float:
            return metrics.registry.get_sample_value("connector_audit_reads_total", {"result": result}) or 0

        await wait_until(
            lambda: (
                sandbox.holds(newest | {o: order_body(o, 1) for o in live}) and read("differs") >= len(edited)
            ),
            timeout=60,
        )
        assert read("missing") >= len(lost)
        assert read("older") >= len(reverted)
        for o in edited:
            held = sandbox.store.get_external(o)
            assert held is not None
            assert held["name"] == "#edited in the admin", "an edit is reported, not overwritten"
        repaired = metrics.registry.get_sample_value(
            "connector_audit_repairs_total", {"drift": "missing", "outcome": "delivered"}
        )
        assert repaired == len(lost)
        await asyncio.sleep(1.0)
        assert (metrics.registry.get_sample_value("connector_api_rate_limited_total") or 0) == 0
