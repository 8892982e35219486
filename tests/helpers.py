"""Helpers for the integration tests: topics, producing, reading, running the connector."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from connector import app
from connector._kafka import topic_partitions
from connector.config import (
    DeliverySettings,
    DlqSettings,
    KafkaSettings,
    MetricsSettings,
    Settings,
    SinkSettings,
)
from connector.demo import create_topics, produce, read_topic, stop_quietly
from connector.health import Health
from connector.localkafka import LocalKafka, free_port
from connector.metrics import Metrics
from connector.pipeline import Pipeline

__all__ = [
    "committed_offsets",
    "create_topics",
    "end_offsets",
    "produce",
    "read_topic",
    "running",
    "settings_for",
    "wait_until",
]


@contextmanager
def kafka_broker() -> Iterator[str]:
    """The brokers' bootstrap servers: ``TEST_KAFKA_BOOTSTRAP_SERVERS`` when given, else a broker of
    our own (``connector.localkafka``), stopped after (the suite's session broker, the benchmarks')."""
    given = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers


def settings_for(
    bootstrap: str, topic: str, base_url: str, kafka: dict[str, Any] | None = None, **sink: Any
) -> Settings:
    """Settings reading ``topic`` into the sandbox at ``base_url``, DLQ ``<topic>.dlq``; ``sink``
    and ``kafka`` override those sections (``sink`` also names settings of ``delivery``, and the
    fence's ``settle_seconds``, as they were named before they moved)."""
    delivery = {name: sink.pop(name) for name in list(sink) if name in DeliverySettings.model_fields}
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=f"{topic}-group",
            commit_interval_seconds=0.2,
            start_timeout_seconds=10,
            lease_seconds=3,
            **{"settle_seconds": sink.pop("settle_seconds", 3.0), **(kafka or {})},
        ),
        dlq=DlqSettings(topic=f"{topic}.dlq"),
        sink=SinkSettings(
            base_url=base_url,
            api_key=sink.pop("api_key", "test-key"),
            **{
                "rate_limit_per_second": 200.0,
                "max_in_flight": 8,
                "timeout_seconds": 2.0,
                **sink,
            },
        ),
        delivery=DeliverySettings(**delivery),
        metrics=MetricsSettings(host="127.0.0.1", port=free_port()),
        shutdown_grace_seconds=10,
    )


@asynccontextmanager
async def running(settings: Settings, health: Health | None = None) -> AsyncIterator[Metrics]:
    """Run the connector in this event loop; stop it (SIGTERM path) on exit. ``health``: the member's
    health, for a test that asks whether it is ready."""
    metrics = Metrics()
    stop = asyncio.Event()
    parts = app.Parts(metrics=metrics, health=health)
    task: asyncio.Task[Pipeline] = asyncio.create_task(app.serve(settings, stop, parts))
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, interval: float = 0.1
) -> None:
    """Poll ``predicate`` (plain or async) until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await _truth(predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def _truth(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Log end offset of every partition of ``topic``."""
    parts = await topic_partitions({"bootstrap_servers": bootstrap}, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await stop_quietly(consumer)


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset of every partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        await admin.close()
