"""The examples of examples/ end to end, on the real broker and the sandbox: events in their own schema
(a Shopify webhook, a Debezium change) mapped to Loop orders, deletes included, a map-stage dead letter
carrying the original bytes. Judged once the connector has stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import MappingSettings
from connector.demo_example import load_example
from connector.sandbox import Sandbox
from tests.helpers import (
    committed_offsets,
    create_topics,
    end_offsets,
    read_topic,
    running,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _produce_records(bootstrap: str, topic: str, name: str) -> list[tuple[bytes | None, bytes | None]]:
    from aiokafka import AIOKafkaProducer

    example = load_example(str(ROOT / "examples" / name))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for r in example.records:
            await producer.send_and_wait(topic, value=r.value, key=r.key, headers=list(r.headers))
    finally:
        await producer.stop()
    return [(r.key, r.value) for r in example.records]


async def _run(bootstrap: str, topic: str, sandbox: Sandbox, mapping: MappingSettings, done: object) -> None:
    settings = settings_for(bootstrap, topic, sandbox.url)
    settings = settings.model_copy(update={"mapping": mapping})
    async with running(settings):
        await wait_until(done, timeout=60)  # type: ignore[arg-type]
        ends = await end_offsets(bootstrap, topic)

        async def all_committed() -> bool:
            return await committed_offsets(bootstrap, settings.kafka.group_id, topic) == ends

        await wait_until(all_committed, timeout=15)


@pytest.mark.parametrize("how", ["file", "function"])
async def test_shopify_webhooks_end_as_loop_orders(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox, how: str
) -> None:
    """Creates, an update, a cancellation, a delete, a late (stale) update and an unmappable price:
    Loop ends with the newest state of two orders, the third deleted, and the bad event on the DLQ
    with stage map, its original key and value, and the failing expression or function."""
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    sent = await _produce_records(kafka_bootstrap, topic_name, "shopify")
    if how == "file":
        mapping = MappingSettings(file=str(ROOT / "examples/shopify/mapping.toml"))
    else:
        mapping = MappingSettings(function="examples.shopify.mapping:to_loop")
    a, b, c = "820982911946154508", "820982911946154600", "820982911946154700"

    def done() -> bool:
        held_a, held_b = sandbox.store.get_external(a), sandbox.store.get_external(b)
        return (
            held_a is not None
            and held_a.get("updated_at") == "2026-11-01T12:10:00-05:00"
            and held_b is not None
            and held_b.get("status") == "cancelled"
            and any(r.method == "DELETE" and c in r.path for r in sandbox.store.requests)
        )

    await _run(kafka_bootstrap, topic_name, sandbox, mapping, done)

    held_a, held_b = sandbox.store.get_external(a), sandbox.store.get_external(b)
    assert held_a is not None
    assert held_b is not None
    assert held_a["updated_at"] == "2026-11-01T12:10:00-05:00", "the late 12:05 update was stale"
    assert held_a["tags"] == ["vip", "gift wrap"]
    assert held_a["total_price"] == {"amount": 19900, "currency_code": "USD"}
    assert held_a["line_items"][0]["external_id"] == "820982911946154509"
    assert (held_b["status"], held_b["cancelled_at"], held_b["cancel_reason"]) == (
        "cancelled",
        "2026-11-01T12:20:00-05:00",
        "customer",
    )
    assert sandbox.store.get_external(c) is None
    assert len(sandbox.store.orders) == 2

    dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2, timeout=5)
    assert [(r.key, r.value) for r in dead] == [sent[-1]]
    headers = dict(dead[0].headers)
    assert headers["__connector.stage"] == b"map"
    if how == "file":  # the expressions before the failing one gave the key; a function gave nothing
        assert headers["__connector.external_id"] == b"820982911946154515"
    message = headers["__connect.errors.exception.message"].decode()
    assert "not a decimal amount" in message or "ConversionSyntax" in message
    assert (
        ("mapping.toml: order = " in message)
        if how == "file"
        else ("examples.shopify.mapping:to_loop" in message)
    )
    assert headers["x-shopify-topic"] == b"orders/updated", "the original headers are kept"


async def test_a_debezium_table_ends_as_loop_orders(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Snapshot reads, a create with schemas, updates, a cancellation, a delete and its tombstone, rows
    without updated_at: the sandbox holds the three live rows at their newest state, not the deleted one."""
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    sent = await _produce_records(kafka_bootstrap, topic_name, "debezium")
    mapping = MappingSettings(envelope="debezium", file=str(ROOT / "examples/debezium/mapping.toml"))

    def done() -> bool:
        held = sandbox.store.get_external("pg-1004")
        return held is not None and held.get("total_price", {}).get("amount") == 1234

    await _run(kafka_bootstrap, topic_name, sandbox, mapping, done)

    assert sorted(o["external_id"] for o in sandbox.store.orders.values()) == [
        "pg-1001",
        "pg-1003",
        "pg-1004",
    ]
    held = {k: sandbox.store.get_external(k) or {} for k in ("pg-1001", "pg-1003", "pg-1004")}
    assert held["pg-1001"]["total_price"] == {"amount": 5999, "currency_code": "EUR"}
    assert held["pg-1001"]["updated_at"] == "2026-11-01T12:02:00.000000Z"
    assert (held["pg-1003"]["status"], held["pg-1003"]["cancelled_at"]) == (
        "cancelled",
        "2026-11-01T12:03:00Z",
    )
    assert "updated_at" not in held["pg-1004"], "source.ts_ms orders a row without one; it is not sent"
    assert sandbox.store.get_external("pg-1002") is None

    dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2, timeout=5)
    assert [(r.key, r.value) for r in dead] == [sent[-1]]
    assert dict(dead[0].headers)["__connector.stage"] == b"map"
