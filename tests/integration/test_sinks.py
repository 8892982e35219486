"""Each sink kind end to end: valid events reach the sandbox, invalid ones the DLQ with the field path,
and tombstones delete."""

from __future__ import annotations

import json

import pytest

from connector.sandbox import Sandbox
from tests.helpers import create_topics, produce, read_topic, running, settings_for, wait_until

pytestmark = pytest.mark.integration


def _env(order: dict[str, object], version: int = 1) -> bytes:
    return json.dumps({"event_id": f"e{version}", "event_type": "order.updated", "order": order}).encode()


async def test_loop_invalid_order_is_dead_lettered_at_validate_with_the_field_path(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """An order breaking a documented rule never costs a call; the DLQ names the field and rule."""
    good = {"external_id": "L-1", "status": "active", "updated_at": "2026-01-01T00:00:00Z"}
    bad = {"external_id": "L-2", "line_items": [{"quantity": "two"}]}
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, [(b"L-2", _env(bad)), (b"L-1", _env(good))])
    async with running(settings_for(kafka_bootstrap, topic_name, sandbox.url)):
        dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=30)
        await wait_until(lambda: sandbox.store.get_external("L-1") is not None, timeout=30)
    headers = dict(dead[0].headers)
    assert headers["__connector.stage"] == b"validate"
    assert headers["__connector.external_id"] == b"L-2"
    assert (
        b'order.line_items[0].quantity: Input should be a valid integer (value: "two")'
        in headers["__connect.errors.exception.message"]
    )
    assert all(r.external_id != "L-2" for r in sandbox.store.requests)


async def test_shoplazza_sink_end_to_end(kafka_bootstrap: str, topic_name: str, sandbox: Sandbox) -> None:
    """Shoplazza: updates by id and by number reach the store, an invalid change about to be sent is
    dead-lettered, an invalid one superseded by a tombstone is not (it is never sent), and the
    tombstone deletes the order."""
    for oid, number in (("o-1", "1001"), ("o-2", "1002"), ("o-3", "1003"), ("o-4", "1004")):
        sandbox.shoplazza.seed(oid, number)
    events = [
        (b"o-1", _env({"id": "o-1", "note": "first", "updated_at": "2026-01-01T00:00:00Z"}, 1)),
        (b"o-1", _env({"id": "o-1", "note": "second", "updated_at": "2026-01-01T00:00:01Z"}, 2)),
        (
            b"1002",
            _env(
                {
                    "number": "1002",
                    "tags": {"values": ["vip"]},
                    "shipping_line": {"shipping_name": "Std", "shipping_price": "5.00"},
                }
            ),
        ),
        (b"o-3", _env({"id": "o-3", "shipping_line": {"shipping_name": "Std"}})),
        (b"o-3", None),
        (b"o-4", _env({"id": "o-4", "shipping_line": {"shipping_name": "Std"}})),
    ]
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, kind="shoplazza")
    async with running(settings):
        await wait_until(lambda: "o-3" not in sandbox.shoplazza.orders, timeout=30)
        await wait_until(lambda: sandbox.shoplazza.orders["o-1"].get("note") == "second", timeout=30)
        await wait_until(
            lambda: sandbox.shoplazza.orders["o-2"].get("tags") == {"values": ["vip"]}, timeout=30
        )
        await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=30)
    dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2, timeout=2)
    assert [r.key for r in dead] == [b"o-4"], "the superseded invalid o-3 event was never sent"
    headers = dict(dead[0].headers)
    assert headers["__connector.stage"] == b"validate"
    assert headers["__connector.external_id"] == b"o-4"
    assert (
        b"order.shipping_line.shipping_price: Field required" in headers["__connect.errors.exception.message"]
    )
    assert sandbox.shoplazza.orders["o-2"]["shipping_line"] == {
        "shipping_name": "Std",
        "shipping_price": "5.00",
    }
    assert {r.status for r in sandbox.store.requests} == {200}


async def test_deletes_can_be_ignored_and_counted(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """delivery.on_delete=ignore: a tombstone costs no call and is counted as ignored."""
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(
        kafka_bootstrap, topic_name, [(b"keep-me", _env({"external_id": "keep-me"})), (b"keep-me", None)]
    )
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, on_delete="ignore")
    async with running(settings) as metrics:
        await wait_until(lambda: metrics.read.resolved.labels("ignored")._value.get() == 1, timeout=30)
    assert sandbox.store.get_external("keep-me") is not None
    assert [r.method for r in sandbox.store.requests] == ["PUT"]


async def test_shoplazza_number_lookups_take_budget_ticks_too(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Found by review (one token per apply, and an apply was a lookup plus a PUT: twice the budget
    with a cold cache): every request takes its own tick, so 12 orders named by number cost 24
    requests at 2/s, at least 0.51 s apart at the sender, and no 429 from the store's bucket."""
    for i in range(12):
        sandbox.shoplazza.seed(f"o-{i}", f"20{i:02d}")
    events = [(f"n{i}".encode(), _env({"number": f"20{i:02d}", "note": "x"})) for i in range(12)]
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    settings = settings_for(
        kafka_bootstrap, topic_name, sandbox.url, kind="shoplazza", rate_limit_per_second=2.0
    )

    def lookups_and_writes() -> list[float]:  # not the audits' reads, which may follow on spare ticks
        return [r.ts for r in sandbox.store.requests if r.method == "PUT" or "/orders/number/" in r.path]

    async with running(settings):
        await wait_until(lambda: len(lookups_and_writes()) >= 24, timeout=60)
    times = sorted(lookups_and_writes())
    assert sum(1 for r in sandbox.store.requests if "/orders/number/" in r.path) == 12
    assert len(times) == 24
    assert times[-1] - times[0] >= 23 * 0.505 - 0.05  # ticks 1.01/2 s apart, a little arrival jitter
    assert {r.status for r in sandbox.store.requests} == {200}
