"""Read-back audits on the real broker, against the sandbox: after every order is delivered, the
vendor loses some, reverts some to an older version and has some edited in its admin, while live
traffic goes on; the audits find each on spare ticks, send the lost and reverted ones again (their
newest state) and report the edits without overwriting them, with no 429."""

from __future__ import annotations

import asyncio
import json

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


async def test_shoplazza_copies_are_judged_on_the_fields_sent_and_a_refused_repair_is_not_repeated(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Shoplazza keeps no updated_at of ours: a copy edited in its admin, or put back as it was before
    our update, differs (reported by field, not overwritten); an order the store lost cannot be
    updated (404), and is not tried again every interval."""
    for i in range(6):
        sandbox.shoplazza.seed(f"o-{i}", f"100{i}")
    events = [
        (
            f"o-{i}".encode(),
            json.dumps({"event_type": "order.updated", "order": {"id": f"o-{i}", "note": "ours"}}).encode(),
        )
        for i in range(6)
    ]
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    settings = settings_for(
        kafka_bootstrap, topic_name, sandbox.url, kind="shoplazza", rate_limit_per_second=20.0
    )
    settings = settings.model_copy(update={"audit": AuditSettings(min_interval_seconds=1.0)})
    async with running(settings) as metrics:
        await wait_until(
            lambda: all(o.get("note") == "ours" for o in sandbox.shoplazza.orders.values()), timeout=60
        )
        done = sandbox.shoplazza.tamper(["o-0"], ["o-2"], {"o-1": {"note": "from the admin"}})
        assert done["skipped"] == []

        def read(result: str) -> float:
            return metrics.registry.get_sample_value("connector_audit_reads_total", {"result": result}) or 0

        await wait_until(lambda: read("differs") >= 2 and read("missing") >= 3, timeout=60)
    assert sandbox.shoplazza.orders["o-1"]["note"] == "from the admin", "an edit is reported, not overwritten"
    assert "note" not in sandbox.shoplazza.orders["o-2"], "an older state reads as differs: not repaired"
    repairs = [r for r in sandbox.store.requests if r.method == "PUT" and r.path.endswith("/orders/o-0")]
    assert [r.status for r in repairs] == [200, 404], "the delivery, then one repair the store refused"
    assert read("in_sync") >= 3
