"""The parking topic as the parking stage uses it: append in order, read back from an offset.

:class:`ParkLog` is the seam (the simulation passes its own); :class:`KafkaParkLog` is the production
one: an idempotent ``acks=all`` producer, so that a parked event is on the topic before its offset is
resolved, and a group-less consumer that reads any partition of the parking topic from any offset
(each member reads back only what was parked from the partitions it owns: see ``connector.park``).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Protocol, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from connector._kafka import client_options, durable_producer, start_within
from connector.config import KafkaSettings
from connector.logs import get_logger
from connector.structs import Record

log = get_logger("connector.park.log")

_READ_WAIT_MS = 200


class RecordsGone(Exception):
    """The records asked for were deleted by the topic's retention; ``start`` is its first offset."""

    def __init__(self, start: int) -> None:
        super().__init__(f"records before offset {start} were deleted")
        self.start = start


class ParkLog(Protocol):
    """Appends to and reads the parking topic."""

    async def partitions(self) -> int:
        """The parking topic's partition count (0: the topic does not exist)."""
        ...

    async def append(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
    ) -> asyncio.Future[int]:
        """Queue one record; the future gives its offset once every in-sync replica has it, or the
        error. Records queued one after another for one partition are written in that order."""
        ...

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """Records of ``partition`` from ``offset`` on (none: nothing there yet, or a fetch slower
        than its wait); RecordsGone when ``offset`` was deleted by retention."""
        ...

    async def end(self, partition: int) -> int:
        """The partition's log end offset."""
        ...


class KafkaParkLog:
    """The parking topic on the real broker."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        consumer: AIOKafkaConsumer | None = None,
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        """``consumer`` and ``producer``: the reader and the writer, made from ``kafka`` when not
        given (tests pass them in)."""
        self.topic = topic
        self._kafka = kafka
        self._producer = producer or durable_producer(kafka, "park")
        self._consumer = consumer or AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{kafka.client_id}-park-reader",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            auto_offset_reset="none",  # never past parked records silently: RecordsGone instead
            **client_options(kafka),
        )
        self._assigned: set[int] = set()
        self._at: dict[int, int] = {}  # per partition, the consumer's position after our last read
        self._reading = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await start_within(self._producer, self._kafka.bootstrap_servers, self._kafka.start_timeout_seconds)
        try:
            await start_within(
                self._consumer, self._kafka.bootstrap_servers, self._kafka.start_timeout_seconds
            )
        except BaseException:
            await self._producer.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._producer.stop()

    async def partitions(self) -> int:
        """Partitions of the parking topic, from the broker's metadata (0 when it does not exist)."""
        try:
            found = await self._producer.partitions_for(self.topic)
        except KafkaError as exc:
            log.warning("park_topic_lookup_failed", topic=self.topic, error=f"{type(exc).__name__}: {exc}")
            return 0
        return len(found or ())

    async def append(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
    ) -> asyncio.Future[int]:
        """``send``: queued in the producer's batch for ``partition``, in call order."""
        sent = await self._producer.send(
            self.topic,
            value=value,
            key=key,
            partition=partition,
            headers=headers,
            timestamp_ms=timestamp_ms or None,
        )
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def landed(future: asyncio.Future[object]) -> None:
            if done.done():
                return
            if future.cancelled():
                done.cancel()
            elif (error := future.exception()) is not None:
                done.set_exception(error)
            else:
                done.set_result(int(future.result().offset))  # type: ignore[attr-defined]

        sent.add_done_callback(landed)
        return done

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """Fetch once from ``offset`` (one reader at a time: the consumer's position is shared).
        Seeks only when the consumer is not there already: a seek drops what was fetched for the
        partition, so a read that came back empty (its fetch queued behind a long poll of the other
        parking partitions) and is asked again at the same offset finds what arrived meanwhile,
        instead of dropping it and waiting behind the next long poll (which, at the replay's pace,
        can go on for minutes)."""
        tp = KafkaTP(self.topic, partition)
        async with self._reading:
            if partition not in self._assigned:
                self._assigned.add(partition)
                self._consumer.assign([KafkaTP(self.topic, p) for p in sorted(self._assigned)])
                self._at.clear()  # a new assignment: every position is reset
            if self._at.get(partition) != offset:
                self._consumer.seek(tp, offset)
            self._at.pop(partition, None)
            try:
                batches = await self._consumer.getmany(tp, timeout_ms=_READ_WAIT_MS, max_records=max_records)
            except OffsetOutOfRangeError:
                start = (await self._consumer.beginning_offsets([tp]))[tp]
                if offset >= start:
                    raise
                raise RecordsGone(int(start)) from None
            got = batches.get(tp, ())
            self._at[partition] = got[-1].offset + 1 if got else offset
        return [
            Record(self.topic, partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
            for r in got
        ]

    async def end(self, partition: int) -> int:
        """The log end offset, asked of the broker."""
        tp = KafkaTP(self.topic, partition)
        ends = await self._consumer.end_offsets([tp])
        return int(ends[tp])


__all__ = ["KafkaParkLog", "ParkLog", "RecordsGone"]
