"""Records no topic can hold (issue 21): on a source topic that accepts values far past what the
dead-letter topic takes, one record of 1 MiB + 1, one of 3 MiB and one just under the limit whose
headers push it over it never block their partition: each is dead-lettered with its key, its source
offset and headers saying what it lacks, every other order is synced, and the partition commits past
them, on the real broker."""

from __future__ import annotations

import hashlib
import io

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector.deadletter import Filter, redrive
from connector.samples import make_stream
from connector.sandbox import Sandbox
from tests.helpers import committed_offsets, end_offsets, read_topic, running, settings_for, wait_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


async def test_records_past_every_limit_are_dead_lettered_and_their_partition_commits_past_them(
    kafka_bootstrap: str, topic_name: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic_name, 1, 1, topic_configs={"max.message.bytes": str(5 * MIB)}),
                NewTopic(f"{topic_name}.dlq", 1, 1),  # the broker's default: 1 MiB and 12 bytes
            ]
        )
    finally:
        await admin.close()
    stream = make_stream(90, 30, seed=21)
    big = {
        b"big-1": (b"x" * (MIB + 1), ()),
        b"big-3": (bytes(range(256)) * (3 * MIB // 256), ()),
        b"near": (b"{" + b" " * (MIB - 2_000), (("trace", b"t" * 8_000),)),  # not JSON; headers push it over
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=6 * MIB, linger_ms=5)
    await producer.start()
    offsets: dict[bytes, int] = {}
    try:
        for i, (key, value) in enumerate(stream.events):
            await producer.send_and_wait(topic_name, value=value, key=key)
            if i % 30 == 10:
                name = list(big)[i // 30]
                raw, headers = big[name]
                meta = await producer.send_and_wait(topic_name, value=raw, key=name, headers=list(headers))
                offsets[name] = meta.offset
    finally:
        await producer.stop()
    async with Sandbox(api_key="test-key", rate_per_minute=60_000) as sandbox:
        settings = settings_for(kafka_bootstrap, topic_name, sandbox.url)
        async with running(settings):
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=90)
            ends = await end_offsets(kafka_bootstrap, topic_name)
            group = settings.kafka.group_id

            async def committed_to_the_end() -> bool:
                return await committed_offsets(kafka_bootstrap, group, topic_name) == ends

            await wait_until(committed_to_the_end, timeout=60)
    dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=3, timeout=20)
    assert sorted(r.key for r in dead) == sorted(big)
    for r in dead:
        raw, own = big[r.key]
        headers = dict(r.headers)
        assert headers["__connect.errors.topic"] == topic_name.encode()
        assert headers["__connect.errors.offset"] == str(offsets[r.key]).encode()
        assert headers["__connector.stage"] == b"decode"
        assert headers["__connector.value.size"] == str(len(raw)).encode()
        assert headers["__connector.value.sha256"] == hashlib.sha256(raw).hexdigest().encode()
        kept = int(headers["__connector.value.truncated"])
        assert 0 < kept < len(raw)
        assert raw.startswith(r.value)
        assert len(r.value) == kept
        for name, value in own:
            assert headers[name] == value, "the original headers are kept"
        print(f"\n{r.key.decode()}: {len(raw)} bytes dead-lettered as {kept} + headers")
    before = await end_offsets(kafka_bootstrap, topic_name)
    result = await redrive(
        settings, f"{topic_name}.dlq", Filter(), to="source", out=io.StringIO(), err=io.StringIO()
    )
    assert (result.sent, len(result.failed)) == (0, 3), "a cut value is not the record: never redriven"
    assert all("no topic could hold it" in text for text in result.failed)
    assert await end_offsets(kafka_bootstrap, topic_name) == before
