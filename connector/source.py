"""The source: a consumer-group member with auto-commit off, rebalance callbacks, and commit metadata.

:class:`Source` is what the pipeline needs of it; :class:`KafkaSource` is the aiokafka member, and a
simulation provides its own. The source calls the pipeline's rebalance callbacks: ``on_revoked``
before its partitions go to another member (awaited: the group waits for it, up to
``kafka.rebalance_timeout_ms``), ``on_assigned`` once the new assignment is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, Self

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from connector._fetches import release_dropped_fetches
from connector._kafka import client_options, start_within
from connector.config import KafkaSettings
from connector.logs import get_logger
from connector.structs import Record, TopicPartition

log = get_logger("connector.source")
_POSITION_TIMEOUT_S = 5.0
"""How long an assignment waits to learn where a never-committed partition is read from."""

PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]
Committed = dict[TopicPartition, tuple[int, str]]
"""Offsets with their commit metadata."""


class Source(Protocol):
    """One member of the consumer group, as the pipeline uses it."""

    async def fetch(self, timeout_ms: int) -> list[Record]:
        """The next records of every assigned, unpaused partition (possibly none)."""
        ...

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now."""
        ...

    def log_end(self, tp: TopicPartition) -> int | None:
        """The partition's log end offset as of the last fetch (None before the first)."""
        ...

    def partition_counts(self) -> dict[str, int]:
        """Partitions of every subscribed topic, across the whole group."""
        ...

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop fetching ``partitions``."""
        ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next."""
        ...

    def resume(self, partitions: set[TopicPartition]) -> None:
        """Fetch ``partitions`` again."""
        ...

    async def commit(self, offsets: Committed) -> bool:
        """Commit offsets with metadata; False when the group refused (rebalancing, expelled)."""
        ...

    async def committed(self, partitions: set[TopicPartition]) -> Committed:
        """The group's committed offsets and metadata of ``partitions`` (absent: never committed)."""
        ...

    async def position(self, tp: TopicPartition) -> int | None:
        """The offset ``tp`` will be read from next (after the reset policy applied to a partition
        never committed); None when it cannot be learnt now."""
        ...


SourceFactory = Callable[[PartitionsCallback, PartitionsCallback], AbstractAsyncContextManager[Source]]
"""Makes the member, given the pipeline's ``on_revoked`` and ``on_assigned`` callbacks."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, revoked: PartitionsCallback, assigned: PartitionsCallback) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[KafkaTP]) -> None:
        await self._revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[KafkaTP]) -> None:
        await self._assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned})


class KafkaSource:
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
        release_dropped_fetches()  # the read-ahead bound pauses, the horizon seeks: see the module
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=settings.group_id,
            client_id=settings.client_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + 1024),
            group_instance_id=settings.group_instance_id,
            **kafka,
        )
        self._admin: Any = None

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
        if self._admin is not None:
            await self._admin.close()

    async def fetch(self, timeout_ms: int) -> list[Record]:
        """The next records of every assigned, unpaused partition (possibly none)."""
        batches = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=self._settings.max_poll_records
        )
        return [
            Record(tp.topic, tp.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
            for tp, records in batches.items()
            for r in records
        ]

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now."""
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def log_end(self, tp: TopicPartition) -> int | None:
        """The partition's log end offset as of the last fetch (None before the first)."""
        end: int | None = self._consumer.highwater(KafkaTP(tp.topic, tp.partition))
        return end

    def partition_counts(self) -> dict[str, int]:
        """Partitions of every subscribed topic (from the cluster metadata)."""
        return {t: len(self._consumer.partitions_for_topic(t) or ()) for t in self._settings.topics}

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop fetching ``partitions`` (read-ahead bound reached, or shutting down)."""
        self._consumer.pause(*(KafkaTP(tp.topic, tp.partition) for tp in partitions))

    def resume(self, partitions: set[TopicPartition]) -> None:
        """Fetch ``partitions`` again."""
        self._consumer.resume(*(KafkaTP(tp.topic, tp.partition) for tp in partitions))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next (below the log start: from the start)."""
        self._consumer.seek(KafkaTP(tp.topic, tp.partition), offset)

    async def commit(self, offsets: Committed) -> bool:
        """Commit ``offsets``; False (logged) when the group is rebalancing and refused it."""
        if not offsets:
            return True
        try:
            await self._consumer.commit(
                {KafkaTP(tp.topic, tp.partition): (o, meta) for tp, (o, meta) in offsets.items()}
            )
        except KafkaError as exc:
            log.warning("commit_failed", error=f"{type(exc).__name__}: {exc}", partitions=len(offsets))
            return False
        return True

    async def position(self, tp: TopicPartition) -> int | None:
        """The consumer's position in ``tp``: for a partition never committed, where the reset policy
        (``kafka.auto_offset_reset``) puts it; None when it is not known within the request timeout."""
        try:
            async with asyncio.timeout(_POSITION_TIMEOUT_S):  # aiokafka's own wait retries for ever
                return int(await self._consumer.position(KafkaTP(tp.topic, tp.partition)))
        except (KafkaError, TimeoutError) as exc:
            log.warning("position_lookup_failed", partition=str(tp), error=f"{type(exc).__name__}: {exc}")
            return None

    async def committed(self, partitions: set[TopicPartition]) -> Committed:
        """The group's committed offsets and metadata (admin API: the consumer exposes no metadata)."""
        if not partitions:
            return {}
        if self._admin is None:
            from aiokafka.admin import AIOKafkaAdminClient

            self._admin = AIOKafkaAdminClient(**client_options(self._settings))
            await self._admin.start()
        try:
            found: dict[KafkaTP, OffsetAndMetadata] = await self._admin.list_consumer_group_offsets(
                self._settings.group_id,
                partitions=[KafkaTP(tp.topic, tp.partition) for tp in sorted(partitions)],
            )
        except KafkaError as exc:
            # Without the previous owner's settle-by, assume the worst: the caller holds the full time.
            log.warning("committed_lookup_failed", error=f"{type(exc).__name__}: {exc}")
            raise
        return {
            TopicPartition(tp.topic, tp.partition): (meta.offset, meta.metadata or "")
            for tp, meta in found.items()
            if meta.offset >= 0
        }
