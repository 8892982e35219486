"""Resync: the running fleet sends the newest state of every order with an event since a time again.

``connector resync --since T | --all [--tenant T] [--share S]`` writes a request to the resync topic
(:mod:`connector.resynclog`: the wire format). Every member follows that topic
(:class:`Resyncer`): while a request is active, it resyncs each partition it owns and whose progress is
not done, a :class:`~connector._resyncpart.PartitionResync` each, and stops one when the partition is
revoked (its next owner goes on from the last progress written) or the request is cancelled or
replaced. The changes go to each shop's :class:`~connector.audit.Auditor`, which sends them through the
deliverer's repair lane: in the order's one job, under the fence, never beside a live request of the
order, on ticks live traffic leaves unused and, so that it always progresses, at least ``share`` of
the member's ticks. One call per order (its newest state in range); never an older state than the live
traffic sent (an order with a newer record, or a newer state the coalescer has seen, is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol, Self

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP

from connector._kafka import client_options, start_within
from connector._resyncpart import Live, Newer, PartitionResync, Publisher, Reads, Revoked, Shops, SourceLog
from connector.clock import Clock
from connector.config import KafkaSettings, ResyncSettings
from connector.instruments import NO_HOOKS, ResyncHooks
from connector.logs import get_logger
from connector.resynclog import Progress, Request, State, Unreadable, decode
from connector.structs import Record, TopicPartition

log = get_logger("connector.resync")

MISSING_LOOK = 30.0
"""Seconds between two looks for the resync topic while it does not exist (most deployments never
create it: a look is an admin client's round trip)."""


class ResyncLog(Publisher, Protocol):
    """The resync topic, as a member reads and writes it (:class:`connector.fleetpace.KafkaPaceLog`
    is one, for any compacted topic)."""

    async def partitions(self) -> int: ...

    async def read(self) -> list[bytes]: ...


class Owned(Live, Protocol):
    def owned(self) -> Mapping[TopicPartition, object]:
        """Partitions this member owns and sends for (not being assigned, warmed or revoked), each
        with a token of this assignment of it (revoked and assigned again: another token)."""
        ...


class Resyncer:
    """This member's side of the resync topic (an async context manager: it follows the topic while
    inside)."""

    def __init__(
        self,
        log_opener: AbstractAsyncContextManager[ResyncLog] | None,
        source: SourceLog,
        *,
        group: str,
        member: str,
        settings: ResyncSettings,
        clock: Clock,
        hooks: ResyncHooks = NO_HOOKS,
    ) -> None:
        self.group = group
        self._hooks = hooks
        self._opener = log_opener
        self._source = source
        self._member = member
        self._settings = settings
        self._clock = clock
        self._log: ResyncLog | None = None
        self._owned: Owned | None = None
        self._shops: Shops | None = None
        self._reader: Reads | None = None
        self._newer: Newer | None = None
        self.request: Request | None = None
        self.progress: dict[TopicPartition, Progress] = {}  # of the current request
        # Each partition's resync under way, and the assignment it runs in: one revoked (its shops'
        # lines forget what it handed them) and assigned again starts again from its progress.
        self._running: dict[TopicPartition, tuple[PartitionResync, object, asyncio.Task[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    def connect(self, *, owned: Owned, shops: Shops, reader: Reads, newer: Newer) -> None:
        """The parts it asks (built after it: the member's partitions, shops, reader, coalescer)."""
        self._owned, self._shops, self._reader, self._newer = owned, shops, reader, newer

    async def __aenter__(self) -> Self:
        if self._opener is not None:
            self._log = await self._stack.enter_async_context(self._opener)
            self._task = asyncio.create_task(self._follow(), name="resync")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [t for t in (self._task, *(task for _, _, task in self._running.values())) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        await self._stack.aclose()

    async def _follow(self) -> None:
        assert self._log is not None
        found = False
        while True:
            try:
                found = found or await self._log.partitions() > 0
                if not found:
                    await asyncio.sleep(MISSING_LOOK)  # created by the first `connector resync`
                    continue
                for value in await self._log.read():
                    self._take(value)
                self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a read that failed is tried again
                log.warning("resync_read_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._settings.look_seconds)

    def _take(self, value: bytes) -> None:
        try:
            record = decode(value)
        except Unreadable as exc:
            log.debug("resync_record_skipped", why=exc.kind)
            return
        if record.group != self.group:
            return
        if isinstance(record, Request):
            if self.request is None or record.id != self.request.id:
                self.progress = {}
                if record.state is State.ACTIVE:
                    log.info("resync_requested", id=record.id, since=record.since, tenant=record.tenant,
                             share=record.share)  # fmt: skip
            self.request = record
        elif self.request is not None and record.id == self.request.id:
            tp = TopicPartition(record.topic, record.partition)
            known = self.progress.get(tp)
            if known is None or record.written >= known.written:
                self.progress[tp] = record

    def _reconcile(self) -> None:
        """Run a partition's resync for each owned partition not done; stop those no longer owned,
        or of a request cancelled or replaced."""
        request = self.request
        owned = self._owned.owned() if self._owned is not None else {}
        active = request is not None and request.state is State.ACTIVE
        for tp, (part, token, task) in list(self._running.items()):
            current = request is not None and part.request.id == request.id
            if task.done() or not active or not current or owned.get(tp) is not token:
                task.cancel()
                del self._running[tp]
        if not active or request is None:
            return
        for tp in sorted(set(owned) - set(self._running)):
            progress = self.progress.get(tp)
            if progress is not None and progress.done:
                continue
            part = self._part(request, tp, progress, owned[tp])
            task = asyncio.create_task(self._run(part), name=f"resync-{tp}")
            self._running[tp] = (part, owned[tp], task)

    def _part(
        self, request: Request, tp: TopicPartition, progress: Progress | None, assignment: object
    ) -> PartitionResync:
        assert self._log is not None
        assert self._reader is not None
        assert self._newer is not None
        assert self._shops is not None
        assert self._owned is not None
        return PartitionResync(
            request, tp, progress, assignment, source=self._source, out=self._log, reader=self._reader,
            newer=self._newer, shops=self._shops, live=self._owned, settings=self._settings,
            member=self._member, wall=self._clock.wall, hooks=self._hooks,
        )  # fmt: skip

    async def _run(self, part: PartitionResync) -> None:
        try:
            self.progress[part.tp] = await part.run()
        except asyncio.CancelledError:
            raise
        except Revoked:
            return  # its next owner goes on from its progress
        except Exception as exc:  # given up here; tried again on the next look
            log.error("resync_partition_failed", id=part.request.id, partition=str(part.tp),
                      error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            await asyncio.sleep(self._settings.look_seconds * 10)


class KafkaSourceLog:
    """The source topic read outside the group, one partition at a time (a consumer's position is
    shared). Its consumer starts at the first read: most members never resync, and start no client
    for it."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None  # made at the first read (an unstarted one
        self._lock = asyncio.Lock()  # left unclosed is logged by aiokafka as an error)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _ready(self) -> AIOKafkaConsumer:
        async with self._lock:
            if self._consumer is None:
                k = self._kafka
                consumer = AIOKafkaConsumer(
                    group_id=None, enable_auto_commit=False, client_id=f"{k.client_id}-resync",
                    **client_options(k),
                )  # fmt: skip
                await start_within(consumer, k.bootstrap_servers, k.start_timeout_seconds)
                self._consumer = consumer
            return self._consumer

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        consumer = await self._ready()
        k = KafkaTP(tp.topic, tp.partition)
        first = await consumer.beginning_offsets([k])
        end = await consumer.end_offsets([k])
        return first[k], end[k]

    async def offset_at(self, tp: TopicPartition, since: float) -> int | None:
        consumer = await self._ready()
        k = KafkaTP(tp.topic, tp.partition)
        found = await consumer.offsets_for_times({k: int(since * 1000)})
        at = found.get(k)
        return at.offset if at is not None else None

    async def read(self, tp: TopicPartition, offset: int) -> list[Record]:
        consumer = await self._ready()
        k = KafkaTP(tp.topic, tp.partition)
        async with self._lock:
            consumer.assign([k])
            consumer.seek(k, offset)
            batch = await consumer.getmany(k, timeout_ms=1000, max_records=500)
        return [
            Record(tp.topic, tp.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
            for r in batch.get(k, [])
        ]


__all__ = ["KafkaSourceLog", "Owned", "ResyncLog", "Resyncer", "Shops", "SourceLog"]
