"""``connector resync`` on the real broker, against the sandbox: every order is delivered, the vendor
then loses every one, and a resync is asked while live traffic goes on. The running member sends each
order's newest state again, one call per order, below the live traffic and never an older state after
a newer one; ``connector resync status`` reads done; no 429."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from connector import resynccmd
from connector.samples import envelope, order_body
from connector.sandbox import Sandbox
from tests.helpers import create_topics, produce, running, settings_for, wait_until

pytestmark = pytest.mark.integration


def events(orders: list[str], version: int) -> list[tuple[bytes, bytes]]:
    return [(o.encode(), envelope(order_body(o, version), version)) for o in orders]


def backwards(sandbox: Sandbox) -> list[str]:
    """Writes of an older state of an order after a newer one, in the order the vendor applied them."""
    newest: dict[str, float] = {}
    found = []
    for write in sandbox.store.writes:
        if write.external_id is None or write.updated_at is None:
            continue
        at = datetime.fromisoformat(write.updated_at).timestamp()
        if at < newest.get(write.external_id, -1.0):
            found.append(f"{write.external_id} {write.updated_at}")
        newest[write.external_id] = max(at, newest.get(write.external_id, -1.0))
    return found


async def test_a_resync_after_the_vendor_lost_everything_sends_each_order_once_under_live_traffic(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    await create_topics(kafka_bootstrap, {topic_name: 3, f"{topic_name}.dlq": 1})
    orders = [f"R-{i:03d}" for i in range(120)]
    await produce(kafka_bootstrap, topic_name, events(orders, 1) + events(orders, 2))
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, rate_limit_per_second=20.0)
    newest = {o: order_body(o, 2) for o in orders}
    await resynccmd.ensure_topic(settings)  # else the member looks for it every 30 s (MISSING_LOOK)

    async with running(settings) as metrics:
        await wait_until(lambda: sandbox.holds(newest), timeout=90)
        done = sandbox.store.tamper(orders, [], {})
        assert sorted(done["lose"]) == orders
        writes_before = len(sandbox.store.writes)

        request = resynccmd.new_request(settings, None, None, 0.2)
        await resynccmd.publish(settings, request)
        # Live traffic meanwhile: newer versions of some orders (the resync must skip or precede them).
        live = orders[:10]
        await asyncio.sleep(1.0)
        await produce(kafka_bootstrap, topic_name, events(live, 3))
        newest |= {o: order_body(o, 3) for o in live}

        await wait_until(lambda: sandbox.holds(newest), timeout=120)

        async def finished() -> bool:
            return (await resynccmd.status(settings)).done

        await wait_until(finished, timeout=60)
        state = await resynccmd.status(settings)
        writes = sandbox.store.writes[writes_before:]
        per_order: dict[str, int] = {}
        for write in writes:
            per_order[write.external_id or ""] = per_order.get(write.external_id or "", 0) + 1
        orders_found, sent, skipped, failed = state.totals()
        print(f"\nresync: {len(writes)} writes for {len(orders)} orders lost; status {state.totals()}")
        assert orders_found == len(orders)
        assert failed == 0
        assert sent + skipped == len(orders)
        assert all(n <= 2 for n in per_order.values()), "at most the resync's call and the live one"
        assert len(writes) <= len(orders) + len(live), "one call per order, and the live traffic's"
        assert not backwards(sandbox), "never an older state after a newer one"
        assert (metrics.registry.get_sample_value("connector_api_rate_limited_total") or 0) == 0
        resynced = metrics.registry.get_sample_value("connector_resync_orders_total", {"result": "sent"})
        assert resynced == sent
        assert "done" in resynccmd.render(state, 20.0)
