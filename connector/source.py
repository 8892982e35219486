"""The Kafka source: a consumer-group member with auto-commit off and rebalance callbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP
from aiokafka.errors import KafkaError

from connector._kafka import client_options, start_within
from connector.config import KafkaSettings
from connector.decode import Record
from connector.logs import get_logger
from connector.offsets import TopicPartition

log = get_logger("connector.source")

PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, revoked: PartitionsCallback, assigned: PartitionsCallback) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[KafkaTP]) -> None:
        await self._revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[KafkaTP]) -> None:
        await self._assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned})


class Source:
    """Reads records from the configured topics; commits only what the pipeline says is resolved."""

    def __init__(
        self,
        settings: KafkaSettings,
        on_revoked: PartitionsCallback,
        on_assigned: PartitionsCallback,
        **kafka: Any,
    ) -> None:
        self._settings = settings
        self._listener = _Listener(on_revoked, on_assigned)
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=settings.group_id,
            client_id=settings.client_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + 1024),
            group_instance_id=settings.group_instance_id,
            **kafka,
        )

    async def __aenter__(self) -> Self:
        await start_within(
            self._consumer, self._settings.bootstrap_servers, self._settings.start_timeout_seconds
        )
        self._consumer.subscribe(self._settings.topics, listener=self._listener)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def fetch(self, timeout_ms: int) -> list[Record]:
        """The next records of every assigned, unpaused partition (possibly none)."""
        batches = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=self._settings.max_poll_records
        )
        out = []
        for tp, records in batches.items():
            for r in records:
                out.append(
                    Record(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.key,
                        r.value,
                        tuple((k, v) for k, v in (r.headers or ())),
                        r.timestamp,
                    )
                )
        return out

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now."""
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def log_end(self, tp: TopicPartition) -> int | None:
        """The partition's log end offset as of the last fetch (None before the first)."""
        end: int | None = self._consumer.highwater(KafkaTP(tp.topic, tp.partition))
        return end

    def total_partitions(self) -> int:
        """Partitions of every subscribed topic, across the whole group (from the cluster metadata)."""
        return sum(len(self._consumer.partitions_for_topic(t) or ()) for t in self._settings.topics)

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop fetching ``partitions`` (read-ahead bound reached, or shutting down)."""
        self._consumer.pause(*(KafkaTP(tp.topic, tp.partition) for tp in partitions))

    def resume(self, partitions: set[TopicPartition]) -> None:
        """Fetch ``partitions`` again."""
        self._consumer.resume(*(KafkaTP(tp.topic, tp.partition) for tp in partitions))

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit ``offsets``; False (logged) when the group is rebalancing and refused it."""
        if not offsets:
            return True
        try:
            await self._consumer.commit({KafkaTP(tp.topic, tp.partition): o for tp, o in offsets.items()})
        except KafkaError as exc:
            log.warning("commit_failed", error=f"{type(exc).__name__}: {exc}", partitions=len(offsets))
            return False
        return True
