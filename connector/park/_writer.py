"""The parking writer: appends what parking decided to park to the parking topic, one record at a
time in the order it was handed over, and settles each once the broker acknowledged it.

A part of its own because an append outlives the decision that asked for it: it is queued, tried
again until the topic takes it (a record is never dropped: its partition holds until it is written),
and only resolved (``parked``) when it landed, while the partition may be revoked in between. Its
state is that traffic: the queue, and per partition the appends still on their way (which a hand-over
waits for, :meth:`ParkWriter.flush`)."""

from __future__ import annotations

import asyncio
import functools
from typing import Protocol

from connector.clock import Clock
from connector.coalesce import Resolution
from connector.constants import Stage
from connector.deadletter.publish import Failure, too_large
from connector.instruments import ParkAppended, ParkHooks, ParkWriteFailed
from connector.logs import debug_enabled, get_logger
from connector.ownership import Assignment, PartitionStatus
from connector.park._ports import ParkLedger
from connector.park.log import ParkLog
from connector.parked import ParkState, park_headers
from connector.structs import Record, TopicPartition, Version

log = get_logger("connector.park")

_Item = tuple[Record, str, float, Version | None, ParkState]


class Wakes(Protocol):
    """What is told when an append landed (the replay: there is more to read)."""

    def wake(self) -> None: ...


class ParkWriter:
    """Appends parked records to the parking topic and resolves each once it is acknowledged; a
    record the topic refuses for its size is dead-lettered (stage ``park``)."""

    def __init__(
        self,
        park_log: ParkLog | None,
        assignment: Assignment,
        hooks: ParkHooks,
        clock: Clock,
        landed: Wakes | None,
    ) -> None:
        self._log = park_log
        self._assignment = assignment
        self._hooks = hooks
        self._clock = clock
        self._wakes = landed
        self._ledger: ParkLedger | None = None
        self._writes: asyncio.Queue[_Item] = asyncio.Queue()
        self._pending: dict[TopicPartition, set[asyncio.Future[int]]] = {}

    def connect(self, ledger: ParkLedger) -> None:
        """Where an appended record is resolved, and one refused for its size dead-lettered."""
        self._ledger = ledger

    def _state(self, tp: TopicPartition) -> ParkState | None:
        part = self._assignment.get(tp)
        return part.park if part is not None and part.status is not PartitionStatus.REVOKING else None

    def put(
        self, record: Record, tenant: str, hold_until: float, as_of: Version | None, part: ParkState
    ) -> None:
        """Queue ``record`` (of ``tenant``, read from a partition whose parking state is ``part``)
        for the parking topic; it counts as being written until it landed or was dead-lettered."""
        part.writing[tenant] += 1
        self._writes.put_nowait((record, tenant, hold_until, as_of, part))

    async def flush(self, tp: TopicPartition, timeout: float) -> None:
        """Wait (bounded) for the appends of ``tp`` still on their way: a hand-over commits them."""
        pending = self._pending.get(tp)
        if pending:
            await asyncio.wait(set(pending), timeout=timeout)

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` is no longer ours: its appends still on their way are no longer waited for."""
        self._pending.pop(tp, None)

    async def run(self) -> None:
        """The write loop: each queued record appended in turn, its landing settled when it is."""
        while True:
            record, tenant, hold, as_of, part = item = await self._writes.get()
            if self._state(record.tp) is not part:  # revoked meanwhile: the next owner reads it
                continue
            headers = park_headers(record, tenant, part.token, hold, as_of)
            landed = await self._append(record, tenant, headers, part)
            if landed is None:
                continue
            self._pending.setdefault(record.tp, set()).add(landed)
            landed.add_done_callback(functools.partial(self._landed, item=item))

    async def _append(
        self, record: Record, tenant: str, headers: list[tuple[str, bytes]], part: ParkState
    ) -> asyncio.Future[int] | None:
        """Queue one append, trying again until the topic takes it (never dropped: the partition
        holds until it is written); None when the partition was revoked meanwhile."""
        assert self._log is not None
        attempt = 0
        while self._state(record.tp) is part:
            try:
                if tenant not in part.starts:  # its first append: its replay starts where it lands
                    end = await self._log.end(part.q)
                    part.starts[tenant] = end
                    part.begin(end)
                return await self._log.append(part.q, record.key, record.value, headers, record.timestamp_ms)
            except Exception as exc:
                if too_large(exc):
                    self._too_large(record, tenant, part, exc)
                    return None
                attempt += 1
                self._hooks.park_write_failed(ParkWriteFailed(tenant))
                log.error("park_write_failed", error=f"{type(exc).__name__}: {exc}", attempt=attempt)
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
        return None

    def _landed(self, done: asyncio.Future[int], item: _Item) -> None:
        record, tenant, _, _, part = item
        self._pending.get(record.tp, set()).discard(done)
        if self._state(record.tp) is not part:  # revoked meanwhile: unresolved, read again
            return
        if not done.cancelled() and too_large(error := done.exception()):
            assert error is not None
            self._too_large(record, tenant, part, error)
            return
        if done.cancelled() or done.exception() is not None:
            self._hooks.park_write_failed(ParkWriteFailed(tenant))
            self._writes.put_nowait(item)  # again: the replay orders it by its offset
            return
        part.writing[tenant] -= 1
        offset = done.result()
        if debug_enabled():
            log.debug(
                "parked",
                tenant=tenant,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                parked_at=offset,
            )
        part.last_written = max(part.last_written, offset)
        self._hooks.event_parked(ParkAppended(tenant))
        assert self._ledger is not None
        self._ledger.resolve(record, Resolution.PARKED)
        if self._wakes is not None:
            self._wakes.wake()

    def _too_large(self, record: Record, tenant: str, part: ParkState, error: BaseException) -> None:
        """The parking topic refuses ``record`` for its size (the producer's limit, derived from
        ``kafka.max_message_bytes``, or the topic's ``max.message.bytes``): it can never be parked, so
        it is dead-lettered (stage ``park``) rather than tried again for ever, which would hold its
        partition back for good."""
        part.writing[tenant] -= 1
        self._hooks.park_write_failed(ParkWriteFailed(tenant))
        log.error(
            "park_refused_too_large",
            tenant=tenant,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            size=record.size,
            error=f"{type(error).__name__}: {error}",
            action="dead-lettered (stage park): redrive it once the shop is served again",
        )
        assert self._ledger is not None
        now = self._clock.wall()
        self._ledger.dead_letter(record, Failure(error, Stage.PARK, None, 0, now, now, tenant))


__all__ = ["ParkWriter", "Wakes"]
