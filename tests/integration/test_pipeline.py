"""End to end against the real broker and the sandbox: the foundation's acceptance."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
from aiokafka.errors import KafkaError

from connector.samples import make_stream
from connector.sandbox import Sandbox
from tests.helpers import (
    committed_offsets,
    create_topics,
    end_offsets,
    produce,
    read_topic,
    running,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration

NOT_JSON = (b"poison-json", b"\x00this is not JSON {")
NO_EXTERNAL_ID = (b"poison-id", b'{"event_type": "order.updated", "order": {"name": "#1"}}')


async def test_thousand_events_end_at_latest_state_with_offsets_committed_and_poison_dead_lettered(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """1,000 events over 200 ids on 4 partitions: the sandbox holds exactly the latest of each order,
    committed offsets equal the log end, and both poison events are on the DLQ, bytes and headers intact."""
    stream = make_stream(1000 - 2, 200, seed=11)
    events = [*stream.events[:300], NOT_JSON, *stream.events[300:700], NO_EXTERNAL_ID, *stream.events[700:]]
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    placed = dict(
        zip((k for k, _ in events), await produce(kafka_bootstrap, topic_name, events), strict=False)
    )
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)

    with structlog.testing.capture_logs() as logged:
        async with running(settings):
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=60)
            ends = await end_offsets(kafka_bootstrap, topic_name)
            group = settings.kafka.group_id

            async def all_committed() -> bool:
                return await committed_offsets(kafka_bootstrap, group, topic_name) == ends

            await wait_until(all_committed, timeout=10)

    assert sum(ends.values()) == 1000
    assert await committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic_name) == ends
    assert len(sandbox.store.orders) == 200
    for key, body in stream.latest.items():
        held = sandbox.store.get_external(key)
        assert held is not None
        assert {k: v for k, v in held.items() if k != "id"} == body
    statuses = {r.status for r in sandbox.store.requests}
    assert statuses == {200}, "no 429 or error answers"

    dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2)
    assert sorted((r.key, r.value) for r in dead) == sorted([NOT_JSON, NO_EXTERNAL_ID])
    for rec in dead:
        headers = dict(rec.headers)
        assert headers["__connect.errors.topic"] == topic_name.encode()
        partition, offset = placed[rec.key]
        assert (headers["__connect.errors.partition"], headers["__connect.errors.offset"]) == (
            str(partition).encode(),
            str(offset).encode(),
        )
        assert headers["__connector.attempts"] == b"0"
        if rec.key == NOT_JSON[0]:
            assert headers["__connector.stage"] == b"decode"
            assert b"not JSON" in headers["__connect.errors.exception.message"]
        else:
            assert headers["__connector.stage"] == b"validate"
            assert b"order.external_id: Field required" in headers["__connect.errors.exception.message"]

    rejected = [e for e in logged if e["event"] == "event_rejected"]
    assert {e["stage"] for e in rejected} == {"decode", "validate"}
    for entry in rejected:
        assert entry["reason"]
        assert entry["topic"] == topic_name
        assert {"partition", "offset"} <= entry.keys()


async def test_original_headers_survive_on_the_dead_letter_topic(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """A dead-lettered record keeps its own headers beside the error headers."""
    from aiokafka import AIOKafkaProducer

    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(topic_name, b"[1, 2]", key=b"k", headers=[("trace-id", b"abc123")])
    await producer.stop()
    async with running(settings_for(kafka_bootstrap, topic_name, sandbox.url)):
        dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=20)
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers[0] == ("trace-id", b"abc123")
    assert dict(headers)["__connect.errors.exception.message"] == b"value is JSON list, expected an object"


async def test_tombstone_deletes_the_order(kafka_bootstrap: str, topic_name: str, sandbox: Sandbox) -> None:
    """A null value with the key set deletes the order by external id."""
    stream = make_stream(3, 1, prefix="gone")
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, [stream.events[0], (b"gone-00000", None)])
    async with running(settings_for(kafka_bootstrap, topic_name, sandbox.url)):
        await wait_until(lambda: any(r.method == "DELETE" for r in sandbox.store.requests), timeout=30)
    assert sandbox.store.get_external("gone-00000") is None
    assert json.dumps([r.path for r in sandbox.store.requests]).count("/orders/external/gone-00000") == 1


async def test_an_invalid_event_replaced_before_it_is_sent_costs_nothing(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Events are validated when they are about to be sent: an invalid one that a newer event of its
    order replaced is never validated nor dead-lettered; an invalid one that is the newest is
    dead-lettered at send time (stage validate, the field and rule named) and nothing is sent."""
    good = {"external_id": "V-1", "status": "active", "updated_at": "2026-01-01T00:00:03Z"}
    bad_then_good = [
        (b"V-1", json.dumps({**good, "status": "sideways", "updated_at": "2026-01-01T00:00:01Z"}).encode()),
        (b"V-1", json.dumps(good).encode()),
    ]
    bad_last = (b"V-2", json.dumps({"external_id": "V-2", "total_price": {"amount": 1.5}}).encode())
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    placed = await produce(kafka_bootstrap, topic_name, [*bad_then_good, bad_last])
    async with running(settings_for(kafka_bootstrap, topic_name, sandbox.url)):
        dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=30)
        await wait_until(lambda: sandbox.store.get_external("V-1") is not None, timeout=30)
    assert sandbox.store.get_external("V-1")["status"] == "active"  # type: ignore[index]
    assert sandbox.store.get_external("V-2") is None
    assert [r.external_id for r in sandbox.store.requests] == ["V-1"]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["__connector.stage"] == b"validate"
    assert headers["__connect.errors.offset"] == str(placed[2][1]).encode()
    assert b"order.total_price.amount" in headers["__connect.errors.exception.message"]
    assert await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2, timeout=3) == dead


async def test_a_backlog_is_read_before_it_is_sent(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """While a partition is more than ``delivery.linger_lag_records`` behind its log end, a new job
    lingers: a backlog of 20,000 events over 50 orders costs at most two calls an order (one when
    reading comes within the lag bound, one for what the last records changed; 50 to 72 measured),
    however many events each order had, and ends at the latest state."""
    stream = make_stream(20_000, 50, seed=5)
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    settings = settings_for(
        kafka_bootstrap,
        topic_name,
        sandbox.url,
        rate_limit_per_second=1000.0,
        linger_seconds=60.0,
        linger_lag_records=500,
    )
    async with running(settings):
        await wait_until(lambda: sandbox.holds(stream.latest), timeout=90)
    calls = len(sandbox.store.requests)
    assert 50 <= calls <= 100, f"{calls} calls for 50 orders (without the linger: 187 here)"
    assert sandbox.holds(stream.latest)


async def test_a_lingering_job_never_holds_reading_back(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Reading paused at the read-ahead bound ends every linger: 3,000 distinct orders behind a
    200-event bound, with a linger far longer than the test, are all delivered."""
    stream = make_stream(3_000, 3_000, seed=6, duplicate_rate=0.0)
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    settings = settings_for(
        kafka_bootstrap,
        topic_name,
        sandbox.url,
        kafka={"max_unresolved_events": 200},
        rate_limit_per_second=1000.0,
        linger_seconds=3600.0,
        linger_lag_records=10,
    )
    async with running(settings):
        await wait_until(lambda: sandbox.holds(stream.latest), timeout=90)
    assert len(sandbox.store.orders) == 3_000


async def test_every_assigned_partition_has_its_budget_share_before_its_first_record(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """A partition the group never committed starts at the consumer's position and is committed with
    the assignment, so its lease, and its ticks of the budget, do not wait for its first record. A
    backlog read one partition at a time used only the ticks of the partitions already read: 743 of
    990 requests a second with four partitions at a budget of 1,000 (bench/cost.py M)."""
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    stream = make_stream(1, 1, seed=7)
    [(partition, _)] = await produce(kafka_bootstrap, topic_name, stream.events)
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, rate_limit_per_second=100.0)
    async with running(settings) as metrics:
        group = settings.kafka.group_id
        await wait_until(
            lambda: _committed_count(kafka_bootstrap, group, topic_name, 4), timeout=30, interval=0.2
        )
        await asyncio.sleep(0.5)  # the next gauge refresh
        share = metrics.calls.budget_share._value.get()
    assert await committed_offsets(kafka_bootstrap, group, topic_name) == {
        p: int(p == partition) for p in range(4)
    }
    assert share == pytest.approx(100 / 1.01, rel=1e-3), f"{share}/s: partitions without a lease"


async def _committed_count(bootstrap: str, group: str, topic: str, want: int) -> bool:
    try:
        return len(await committed_offsets(bootstrap, group, topic)) >= want
    except KafkaError:  # the group's coordinator is not there yet
        return False
