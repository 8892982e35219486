"""Failures as production sees them: transient errors, outages, bad credentials, poison orders, an
unwritable dead-letter topic, redrive, and an authenticated broker."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from connector.config import KafkaSettings
from connector.deadletter import Filter, RedriveResult, inspect, redrive
from connector.health import Health
from connector.localkafka import LocalKafka
from connector.samples import make_stream
from connector.sandbox import Faults, Sandbox
from tests.helpers import (
    committed_offsets,
    create_topics,
    produce,
    read_topic,
    running,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_random_5xx_and_timeouts_deliver_everything_and_dead_letter_nothing(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """30% random 5xx and 5% hung calls: every order arrives, the DLQ stays empty."""
    stream = make_stream(400, 100, seed=31)
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    faults = Faults(error_rate=0.3, timeout_rate=0.05, hang_seconds=2.0)
    async with Sandbox(api_key="test-key", rate_per_minute=60_000, faults=faults) as sandbox:
        settings = settings_for(
            kafka_bootstrap,
            topic_name,
            sandbox.url,
            timeout_seconds=0.5,
            settle_seconds=2.5,  # a hung call is answered (504, not applied) after 2 s
            backoff_base_seconds=0.05,
            backoff_cap_seconds=1.0,
        )
        async with running(settings) as metrics:
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=120)
        await asyncio.sleep(faults.hang_seconds)  # hung calls answered after the stop land first
        assert sandbox.holds(stream.latest), "judged again once the connector stopped"
        failures = sum(1 for r in sandbox.store.requests if r.status >= 500)
        print(
            f"\n5xx/timeouts: {failures} failed of {len(sandbox.store.requests)} calls; retries {metrics.calls.retries._value.get():.0f}"
        )
        assert failures > 20
    assert await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=3) == []


async def test_outage_pauses_reports_not_ready_dead_letters_nothing_and_catches_up(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """A 15-second 503 outage: circuit open, /readyz not ready, nothing dead-lettered, reading goes
    on up to the read-ahead bound (so that the backlog coalesces); after it, every order arrives."""
    stream = make_stream(300, 150, seed=37)
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events[:50])
    async with Sandbox(api_key="test-key", rate_per_minute=60_000) as sandbox:
        settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, probe_interval_seconds=2.0)
        async with running(settings, health := Health()) as metrics:
            await wait_until(lambda: len(sandbox.store.orders) >= 25, timeout=30)
            sandbox.faults.update({"outage_seconds": 15})
            await produce(kafka_bootstrap, topic_name, stream.events[50:])
            await wait_until(lambda: metrics.calls.circuit_open._value.get() == 1, timeout=30)
            assert not health.ready
            await asyncio.sleep(1.0)  # calls already in flight when it opened come back
            calls_in_outage = len(sandbox.store.requests)
            await asyncio.sleep(10)
            probes = len(sandbox.store.requests) - calls_in_outage
            assert probes <= 6, "while open, one probe per 2 s interval goes out"
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=120)
            assert health.ready
            assert metrics.calls.circuit_open._value.get() == 0
        assert sandbox.holds(stream.latest), "judged again once the connector stopped"
    assert await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=3) == []


async def test_a_retry_after_beyond_the_ceiling_is_an_outage_not_an_hour_of_silence(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """Found by review (Retry-After: 3600 stopped every call for an hour, /readyz still ready, no
    metric): beyond delivery.max_retry_after_seconds the circuit opens at once, /readyz says not ready
    within one probe interval, a metric counts it and one api_outage line says why; nothing is
    dead-lettered, and once the vendor accepts again every order arrives."""
    stream = make_stream(60, 30, seed=59)
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    faults = Faults(retry_after=3600)
    async with Sandbox(api_key="test-key", rate_per_minute=60, faults=faults) as sandbox:
        settings = settings_for(
            kafka_bootstrap, topic_name, sandbox.url, rate_limit_per_second=5.0, probe_interval_seconds=2.0
        )
        with structlog.testing.capture_logs() as logged:
            async with running(settings, health := Health()) as metrics:
                await wait_until(lambda: any(r.status == 429 for r in sandbox.store.requests), timeout=30)
                first_429 = min(r.ts for r in sandbox.store.requests if r.status == 429)
                await wait_until(lambda: not health.ready, timeout=2.0)
                not_ready_after = time.time() - first_429
                assert metrics.calls.retry_after_exceeded._value.get() >= 1
                sandbox.faults.update({"retry_after": None})
                sandbox.set_rate(60_000)
                await wait_until(lambda: sandbox.holds(stream.latest), timeout=60)
        assert sandbox.holds(stream.latest), "judged again once the connector stopped"
    assert not_ready_after < 2.0
    said = [e for e in logged if e["event"] == "api_outage" and "Retry-After" in e["reason"]]
    assert len(said) == 1
    assert await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=3) == []


async def test_wrong_api_key_dead_letters_and_commits_nothing_and_restart_delivers(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """401s: no dead letter, no commit past the first unsent event; with the key fixed, a restart
    delivers everything."""
    stream = make_stream(100, 40, seed=41)
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    placed = await produce(kafka_bootstrap, topic_name, stream.events)
    latest_at = {key.decode(): where for (key, _), where in zip(stream.events, placed, strict=True)}
    wrong = settings_for(
        kafka_bootstrap, topic_name, sandbox.url, api_key="not-the-key", probe_interval_seconds=1.0
    )
    async with running(wrong, health := Health()) as metrics:
        await wait_until(lambda: metrics.calls.circuit_open._value.get() == 1, timeout=30)
        await asyncio.sleep(3)
        assert not health.ready
    assert {r.status for r in sandbox.store.requests} == {401}
    committed = await committed_offsets(kafka_bootstrap, wrong.kafka.group_id, topic_name)
    # Older events replaced by newer ones of their key may be committed past; no key's latest may.
    assert all(offset >= committed.get(partition, 0) for partition, offset in latest_at.values())
    async with running(settings_for(kafka_bootstrap, topic_name, sandbox.url)):
        await wait_until(lambda: sandbox.holds(stream.latest), timeout=60)
    assert sandbox.holds(stream.latest), "judged again once the connector stopped"
    assert await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=3) == []


async def test_422_dead_letters_that_event_alone_with_status_and_body(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """The API refusing one order: that event is on the DLQ with status and body; the others flow."""
    stream = make_stream(120, 60, seed=43)
    bad = "order-00007"
    events = [e for e in stream.events if e[0] != bad.encode()] + [
        e for e in stream.events if e[0] == bad.encode()
    ][-1:]
    await create_topics(kafka_bootstrap, {topic_name: 3, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    sandbox.faults.update({"reject_external_ids": {bad: 422}})
    async with running(settings_for(kafka_bootstrap, topic_name, sandbox.url)):
        dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=2, timeout=20)
        await wait_until(
            lambda: sandbox.holds({k: v for k, v in stream.latest.items() if k != bad}), timeout=30
        )
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["__connector.stage"] == b"deliver"
    assert headers["__connector.http.status"] == b"422"
    assert b"reject_external_ids" in headers["__connector.http.body"]
    assert headers["__connector.attempts"] == b"1"
    assert headers["__connector.external_id"] == bad.encode()


async def _set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(value)})]
        )
    finally:
        await admin.close()


async def test_unwritable_dead_letter_topic_holds_the_watermark_and_loses_nothing(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """While the DLQ refuses writes, the committed offset stays at the poison event even as later
    events are delivered; once writable, the poison lands on the DLQ and the offsets reach the end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics(
        [
            NewTopic(topic_name, 1, 1),
            NewTopic(f"{topic_name}.dlq", 1, 1, topic_configs={"max.message.bytes": "64"}),
        ]
    )
    await admin.close()
    stream = make_stream(40, 40, seed=47)
    placed = await produce(
        kafka_bootstrap, topic_name, [*stream.events[:20], (b"poison", b"not json"), *stream.events[20:]]
    )
    poison_offset = placed[20][1]
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
    async with running(settings) as metrics:
        await wait_until(lambda: sandbox.holds(stream.latest), timeout=30)
        await wait_until(lambda: metrics.read.dead_letter_failures._value.get() >= 2, timeout=30)
        await asyncio.sleep(1.0)
        assert await committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic_name) == {
            0: poison_offset
        }
        await _set_max_message_bytes(kafka_bootstrap, f"{topic_name}.dlq", 1_000_000)
        dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=30)

        async def at_end() -> bool:
            return await committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic_name) == {
                0: len(placed)
            }

        await wait_until(at_end, timeout=30)
    assert [(r.key, r.value) for r in dead] == [(b"poison", b"not json")]


async def test_redrive_after_the_fix_delivers_and_a_second_run_is_a_no_op(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Orders refused by the API are dead-lettered; after the fix, redrive to the API delivers them;
    the same redrive again sends nothing; a dry run lists without sending; inspect groups them."""
    stream = make_stream(30, 30, seed=53)
    refused = {f"order-{i:05d}": 422 for i in range(3)}
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    sandbox.faults.update({"reject_external_ids": refused})
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
    async with running(settings):
        await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=3, timeout=30)
        await wait_until(lambda: len(sandbox.store.orders) == 27, timeout=30)
    summary = io.StringIO()
    groups = await inspect(settings, f"{topic_name}.dlq", out=summary)
    assert [(k[0], k[1], g["count"]) for k, g in groups.items()] == [("deliver", "422", 3)]
    assert "order-00000" in summary.getvalue()

    sandbox.faults.update({"reject_external_ids": {}})
    listing = io.StringIO()
    dry = await redrive(
        settings, f"{topic_name}.dlq", Filter(stages={"deliver"}), to="api", dry_run=True, out=listing
    )
    assert (dry.matched, dry.sent) == (3, 0)
    assert listing.getvalue().count("would redrive") == 3
    assert len(sandbox.store.orders) == 27

    async def same_redrive() -> RedriveResult:
        return await redrive(
            settings,
            f"{topic_name}.dlq",
            Filter(stages={"deliver"}),
            to="api",
            out=io.StringIO(),
            err=io.StringIO(),
        )

    first = await same_redrive()
    assert (first.matched, first.sent, first.failed) == (3, 3, [])
    assert sandbox.holds(stream.latest)
    second = await same_redrive()
    assert (second.scanned, second.sent) == (0, 0)


async def test_redrive_to_the_api_never_moves_an_order_back_and_retries_what_failed_again(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Found by review: redrive --to api sent without a staleness check and committed its progress
    past records that failed again. Now: a dead letter older than what the API holds is skipped (the
    order stays at its newer state); one that fails again is retried by the next run of the same
    redrive, and only then is the progress committed past it."""
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    old = {"external_id": "A", "status": "active", "updated_at": "2026-01-01T00:00:01Z"}
    new = {**old, "status": "archived", "updated_at": "2026-01-01T00:00:09Z"}
    b = {"external_id": "B", "status": "active", "updated_at": "2026-01-01T00:00:01Z"}
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
    dlq = f"{topic_name}.dlq"
    sandbox.faults.update({"reject_external_ids": {"A": 422, "B": 422}})
    async with running(settings):
        await produce(
            kafka_bootstrap, topic_name, [(b"A", json.dumps(old).encode()), (b"B", json.dumps(b).encode())]
        )
        await read_topic(kafka_bootstrap, dlq, expect=2, timeout=30)
        sandbox.faults.update({"reject_external_ids": {"B": 422}})
        await produce(kafka_bootstrap, topic_name, [(b"A", json.dumps(new).encode())])
        await wait_until(lambda: sandbox.store.get_external("A") is not None, timeout=30)

    async def again() -> RedriveResult:
        return await redrive(settings, dlq, Filter(), to="api", out=io.StringIO(), err=io.StringIO())

    first = await again()
    assert (first.matched, first.stale, first.sent, len(first.failed)) == (2, 1, 0, 1)
    assert sandbox.store.get_external("A")["status"] == "archived"  # type: ignore[index]
    sandbox.faults.update({"reject_external_ids": {}})
    second = await again()
    # B is retried; A comes again only if it sits after B on the dead-letter topic (the two writes race),
    # and is then skipped as stale again.
    assert (second.sent, second.failed, second.stale) == (1, [], second.matched - 1)
    assert sandbox.store.get_external("B") is not None
    assert sandbox.store.get_external("A")["status"] == "archived"  # type: ignore[index]
    third = await again()
    assert third.scanned == 0


async def test_redrive_to_the_source_topic_replays_through_the_pipeline(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """Redriven to its source topic, a dead letter is consumed again (original key, value, headers)."""
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    body = {"external_id": "R-1", "status": "active"}
    await produce(kafka_bootstrap, topic_name, [(b"R-1", json.dumps(body).encode())])
    sandbox.faults.update({"reject_external_ids": {"R-1": 422}})
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
    async with running(settings):
        await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=30)
        sandbox.faults.update({"reject_external_ids": {}})
        result = await redrive(
            settings,
            f"{topic_name}.dlq",
            Filter(external_ids={"R-1"}),
            to="source",
            out=io.StringIO(),
            err=io.StringIO(),
        )
        assert result.sent == 1
        await wait_until(lambda: sandbox.store.get_external("R-1") is not None, timeout=30)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_sasl_authenticated_broker(
    sasl_kafka: LocalKafka, topic_name: str, sandbox: Sandbox, mechanism: str
) -> None:
    """Consumer and dead-letter producer authenticate with SASL; events flow, poison is dead-lettered."""
    await create_topics(sasl_kafka.bootstrap_servers, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(
        sasl_kafka.bootstrap_servers, topic_name, [(b"S-1", b'{"external_id": "S-1"}'), (b"bad", b"{")]
    )
    auth = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism, "sasl_username": "alice",
            "sasl_password": "alice-sasl-Secret-42"}  # fmt: skip
    settings = settings_for(sasl_kafka.sasl_bootstrap_servers, topic_name, sandbox.url, kafka=auth)
    async with running(settings):
        await wait_until(lambda: sandbox.store.get_external("S-1") is not None, timeout=30)
        dead = await read_topic(sasl_kafka.bootstrap_servers, f"{topic_name}.dlq", expect=1, timeout=30)
    assert [r.key for r in dead] == [b"bad"]


async def test_wrong_sasl_password_is_refused(
    sasl_kafka: LocalKafka, topic_name: str, sandbox: Sandbox
) -> None:
    """A wrong SASL password never gets in: the start-up wait ends in BrokerUnavailable."""
    from connector.app import serve
    from connector.errors import BrokerUnavailable

    auth = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "alice",
            "sasl_password": "wrong-password", "start_timeout_seconds": 2}  # fmt: skip
    settings = settings_for(sasl_kafka.sasl_bootstrap_servers, topic_name, sandbox.url)
    settings = settings.model_copy(update={"kafka": KafkaSettings(**{**settings.kafka.model_dump(), **auth})})
    with pytest.raises(BrokerUnavailable):
        await serve(settings, asyncio.Event())


async def test_redrive_to_the_source_skips_an_event_a_newer_one_of_its_order_follows(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """Issue 21: redriven to its source, a record lands at the partition's end, where an event ordered
    by offset (no updated_at) reads as its order's newest state. One whose source partition holds a
    newer event of its order after it is skipped as stale, and so is a timed one with a newer
    updated_at before it; the others are sent; --force sends them all."""
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    old = {"external_id": "A-1", "name": "old"}
    placed = await produce(
        kafka_bootstrap,
        topic_name,
        [
            (b"A-1", json.dumps(old).encode()),  # 0: dead-lettered (say, stage route)
            (b"B-1", json.dumps({"external_id": "B-1", "name": "only"}).encode()),  # 1: dead-lettered
            (b"A-1", json.dumps({"external_id": "A-1", "name": "new"}).encode()),  # 2: delivered
            (b"C-1", json.dumps({"external_id": "C-1", "updated_at": "2026-01-02T00:00:00Z"}).encode()),
            (b"C-1", json.dumps({"external_id": "C-1", "updated_at": "2026-01-01T00:00:00Z"}).encode()),
        ],
    )
    assert [o for _, o in placed] == [0, 1, 2, 3, 4]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for key, offset in ((b"A-1", 0), (b"B-1", 1), (b"C-1", 3), (b"C-1", 4)):
            headers = [
                ("__connect.errors.topic", topic_name.encode()),
                ("__connect.errors.partition", b"0"),
                ("__connect.errors.offset", str(offset).encode()),
                ("__connector.stage", b"route"),
            ]
            value = (await read_source(kafka_bootstrap, topic_name, offset)).value
            await producer.send_and_wait(f"{topic_name}.dlq", value=value, key=key, headers=headers)
    finally:
        await producer.stop()
    settings = settings_for(kafka_bootstrap, topic_name, "http://127.0.0.1:1")
    result = await redrive(
        settings, f"{topic_name}.dlq", Filter(), to="source", out=io.StringIO(), err=io.StringIO()
    )
    assert (result.sent, result.stale) == (2, 2), "A-1@0 has a newer event after it, C-1@4 before it"
    appended = await read_topic(kafka_bootstrap, topic_name, expect=7, timeout=5)
    assert [(r.key, json.loads(r.value).get("updated_at")) for r in appended[5:]] == [
        (b"B-1", None),
        (b"C-1", "2026-01-02T00:00:00Z"),  # C-1@4 after it is older by updated_at: C-1@3 is the newest
    ]
    forced = await redrive(
        settings,
        f"{topic_name}.dlq",
        Filter(),
        to="source",
        again=True,
        force=True,
        out=io.StringIO(),
        err=io.StringIO(),
    )
    assert (forced.sent, forced.stale) == (4, 0)


async def read_source(bootstrap: str, topic: str, offset: int) -> Any:
    """The record at ``offset`` of partition 0 of ``topic``."""
    records = await read_topic(bootstrap, topic, expect=offset + 1, timeout=5)
    return records[offset]
