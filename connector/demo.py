"""`connector demo`: a local broker, the sandbox, the connector and sample events, end to end.

Produces a few hundred order events (with duplicates, a non-JSON message and an order missing its
``external_id``), runs the connector until every order reached the sandbox, prints what the API holds
and what went to the dead-letter topic, and stops everything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector import app, logs
from connector.config import DlqSettings, KafkaSettings, MetricsSettings, Settings, SinkSettings
from connector.localkafka import LocalKafka
from connector.samples import make_stream
from connector.sandbox import Sandbox

TOPIC, DLQ, PARTITIONS = "orders", "orders.dlq", 4
POISON = [
    (b"poison-1", b"this is not JSON {"),
    (b"poison-2", b'{"event_type": "order.updated", "order": {"name": "#no-external-id"}}'),
]


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create ``topics`` (name → partitions) on the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, events: list[tuple[bytes, bytes | None]]
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` events to ``topic`` in order; returns each one's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value=value, key=key) for key, value in events]
        return [(meta.partition, meta.offset) for meta in [await future for future in sent]]
    finally:
        await producer.stop()


async def stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a group-less consumer. aiokafka 0.14 re-raises the CancelledError of its own internal task
    when such a consumer stops right after starting; only a cancellation of *this* task propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 10.0) -> list[Any]:
    """Read up to ``expect`` records of ``topic`` from the beginning (no group)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await stop_quietly(consumer)
    return out


async def _demo(bootstrap: str, events: int, orders: int) -> int:
    stream = make_stream(events - len(POISON), orders)
    await create_topics(bootstrap, {TOPIC: PARTITIONS, DLQ: 1})
    await produce(bootstrap, TOPIC, stream.events[:50] + POISON + stream.events[50:])
    print(
        f"produced {events} events for {len(stream.latest)} orders to '{TOPIC}' "
        f"({PARTITIONS} partitions), including {stream.duplicates} duplicates and {len(POISON)} bad ones"
    )
    async with Sandbox(api_key="demo-key", rate_per_minute=300) as sandbox:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=[TOPIC], group_id="demo"),
            dlq=DlqSettings(topic=DLQ),
            sink=SinkSettings(base_url=sandbox.url, api_key="demo-key", rate_limit_per_second=5),
            metrics=MetricsSettings(port=0),
            log_level="WARNING",
            shutdown_grace_seconds=10,
        )
        print(f"sandbox at {sandbox.url} (300 requests/minute); connector running, budget 5 requests/s")
        stop = asyncio.Event()
        task = asyncio.create_task(app.serve(settings, stop))
        started = time.monotonic()
        while time.monotonic() - started < 180 and not task.done():
            held = len(sandbox.in_sync(stream.latest))
            print(
                f"  {time.monotonic() - started:5.1f}s  orders in sync {held}/{len(stream.latest)}  "
                f"API calls {len(sandbox.store.requests)}",
                flush=True,
            )
            if held == len(stream.latest):
                break
            await asyncio.sleep(2)
        await asyncio.sleep(1.5)
        stop.set()
        await task
        return _report(stream, sandbox, await read_topic(bootstrap, DLQ, len(POISON)), events)


def _report(stream: Any, sandbox: Sandbox, dead: list[Any], events: int) -> int:
    stats = sandbox.stats()
    in_sync = sandbox.in_sync(stream.latest)
    print("\nwhat reached the API:")
    print(f"  {stats['orders']} orders held; {len(in_sync)}/{len(stream.latest)} equal to their latest event")
    print(f"  {stats['requests']} API calls for {events} events; responses by status {stats['by_status']}")
    print("what went to the dead-letter topic:")
    for rec in dead:
        headers = {k: v.decode() for k, v in rec.headers}
        print(
            f"  key={rec.key.decode()} stage={headers.get('__connector.stage')} "
            f"reason={headers.get('__connect.errors.exception.message')}"
        )
    ok = len(in_sync) == len(stream.latest) and len(dead) == len(POISON)
    print("\ndemo " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def run_demo(events: int = 400, orders: int = 100) -> int:
    """Run the whole demo; returns the process exit code."""
    logs.configure("WARNING")
    print("starting a local Kafka broker (KRaft, single node) ...", flush=True)
    with LocalKafka() as kafka:
        return asyncio.run(_demo(kafka.bootstrap_servers, events, orders))
