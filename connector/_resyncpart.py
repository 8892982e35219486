"""One partition's part of a resync (:mod:`connector.resync`): two reads of its records in range, and
its newest states handed to the shops, a batch at a time, with its progress written after each.

The range is ``[from, until)``, ``until`` the log end when the partition's resync began: the orders
resynced are those with a record in it. The first read finds, for each, its newest record up to the
log's end now (the live traffic may have sent one past the range): newest by version, as the
coalescer judges (a late event with an older ``updated_at`` is not its order's newest, whatever its
offset). The second read, from ``at``, hands each order's newest record to its shop
(:meth:`~connector.audit.Auditor.resend`), but only once the live traffic has read past it: a resync
must never send ahead of the live traffic, which, working through a backlog, would then send its
older records after the resync's newer state (found by the simulation: seed 36 with a resync). Read,
the record is known to the coalescer and the jobs: a resend of an order whose change is on its way
waits for it or gives way to it (:mod:`connector._resends`). Nor while the order's shop is parked on
the partition: its replay would then send older parked records after the resync's newer state
(many-shop seed 170 with a resync); such orders are deferred to the end of the partition's resync,
and handed over once their shop is sent directly again (without holding other shops' orders back:
many-shop seed 187). A change is skipped when the coalescer has
seen a newer state of its order with another body (the live traffic sends that); not for a newer
one with the same body, which the live traffic skips as identical to what it last sent, although
the vendor lost it. Once every change of a batch is told sent, skipped or failed, ``at`` moves past
the batch and the progress is written, so that a new owner (after a rebalance or a restart) goes on
from there. A read right after a seek may come back empty: it is read again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Protocol

from connector._resends import Resent
from connector.config import ResyncSettings
from connector.instruments import NO_HOOKS, Resynced, ResyncHooks
from connector.logs import get_logger
from connector.resynclog import Progress, Request, encode
from connector.structs import OrderChange, Record, TopicPartition, Version

log = get_logger("connector.resync")

EMPTY_WAIT = 0.2
"""Seconds before reading again after a read that came back empty short of the end, and between two
looks at whether the live traffic has read past the next change to hand over."""


class SourceLog(Protocol):
    """The source topic, read outside the group (a partition at a time)."""

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """The first offset still held, and the log end."""
        ...

    async def offset_at(self, tp: TopicPartition, since: float) -> int | None:
        """The first offset of a record at or after ``since`` (wall seconds); None: none."""
        ...

    async def read(self, tp: TopicPartition, offset: int) -> list[Record]:
        """Records from ``offset`` on (perhaps none, right after a seek)."""
        ...


class Publisher(Protocol):
    async def publish(self, key: bytes, value: bytes) -> None: ...


class Reads(Protocol):
    def peek(self, record: Record) -> OrderChange | None:
        """What ``record`` stands for, without acting on it (None: it does not decode)."""
        ...


class Newer(Protocol):
    def supersedes(self, change: OrderChange) -> bool:
        """Whether a newer state of ``change``'s order was seen than ``change``."""
        ...


class Resending(Protocol):
    def resend(self, change: OrderChange, told: PartitionResync) -> None: ...

    def withdraw(self, told: PartitionResync) -> None:
        """Drop what ``told`` handed over and is still in line (the resync was cancelled)."""
        ...


class Live(Protocol):
    def read_below(self, tp: TopicPartition, assignment: object) -> int | None:
        """The offset below which every record of ``tp`` was handed to the live traffic; None unless
        ``tp`` is still owned in ``assignment``."""
        ...

    def parked(self, tp: TopicPartition, tenant: str) -> bool:
        """Whether ``tenant``'s records of ``tp`` wait on the parking topic (or are being replayed)."""
        ...


class Shops(Protocol):
    def resending(self, tenant: str) -> Resending | None:
        """Where ``tenant``'s changes are sent again (None: not served here)."""
        ...


class TooManyOrders(Exception):
    """The partition has more orders in range than ``resync.max_orders_per_partition``."""


class Revoked(Exception):
    """The partition is no longer owned in the assignment the resync began in: the next owner (or
    this member, assigned it again) goes on from the last progress written."""


class PartitionResync:
    """A partition's part of one request (told how each change it handed over ended)."""

    def __init__(
        self,
        request: Request,
        tp: TopicPartition,
        progress: Progress | None,
        assignment: object,
        *,
        source: SourceLog,
        out: Publisher,
        reader: Reads,
        newer: Newer,
        shops: Shops,
        live: Live,
        settings: ResyncSettings,
        member: str,
        wall: Callable[[], float],
        hooks: ResyncHooks = NO_HOOKS,
    ) -> None:
        self.request = request
        self.tp = tp
        self.progress = progress
        self._assignment = assignment
        self._source = source
        self._out = out
        self._reader = reader
        self._newer = newer
        self._shops_served = shops
        self._live = live
        self._settings = settings
        self._member = member
        self._wall = wall
        self._hooks = hooks
        self._open = 0
        self._counts = {how: 0 for how in Resent}
        self._batch_over = asyncio.Event()
        self._shops: list[Resending] = []  # those handed something, to withdraw it on cancel

    @property
    def share(self) -> float:
        return self.request.share

    @property
    def asked_at(self) -> float:
        return self.request.at

    def ended(self, change: OrderChange, how: Resent) -> None:
        """A change handed over ended (:class:`~connector._resends.Told`)."""
        self._counts[how] += 1
        self._hooks.order_resynced(Resynced(str(how)))
        self._open -= 1
        if self._open <= 0:
            self._batch_over.set()

    async def run(self) -> Progress:
        """Resync the partition from its progress on; returns the last progress written."""
        try:
            progress = self.progress or await self._begin()
            if not progress.done:
                newest, end = await self._newest(progress)
                progress = await self._write(dataclasses.replace(progress, orders=len(newest)))
                progress = await self._hand_over(progress, newest, end)
            return progress
        finally:
            for shop in self._shops:
                shop.withdraw(self)

    async def _begin(self) -> Progress:
        earliest, end = await self._source.bounds(self.tp)
        start = earliest
        if self.request.since is not None:
            found = await self._source.offset_at(self.tp, self.request.since)
            start = end if found is None else max(earliest, found)
        r = self.request
        first = Progress(r.group, r.id, self.tp.topic, self.tp.partition, start, end, start)
        log.info("resync_partition_started", id=r.id, partition=str(self.tp), start=start, until=end)
        return await self._write(first)

    async def _records(self, start: int, end: int) -> list[Record]:
        """Records of ``[start, end)`` (from the first still held), a batch at a time."""
        while start < end:
            batch = [r for r in await self._source.read(self.tp, start) if start <= r.offset < end]
            if batch:
                return batch
            earliest, _ = await self._source.bounds(self.tp)
            if earliest > start:  # retention deleted them meanwhile
                start = earliest
            else:
                await asyncio.sleep(EMPTY_WAIT)
        return []

    async def _newest(self, progress: Progress) -> tuple[dict[str, int], int]:
        """For each order with a record in range, the offset of its newest record up to the log's
        end now (the live traffic may have sent a newer one than the range holds, before the vendor
        lost it, and may have forgotten it since: a partition assigned again re-reads only
        ``kafka.warmup_records``; found by the simulation, seed 46 with a resync); and that end."""
        newest: dict[str, int] = {}
        versions: dict[str, Version] = {}
        at = progress.start
        _, end = await self._source.bounds(self.tp)
        while at < end:
            batch = await self._records(at, end)
            if not batch:
                break
            at = batch[-1].offset + 1
            for record in batch:
                change = self._reader.peek(record)
                if change is None or not self.request.covers(change.tenant):
                    continue
                key, known = change.key, versions.get(change.key)
                if known is None and record.offset >= progress.until:
                    continue  # an order with no record in range: the live traffic's alone
                if known is None or not change.version.older_than(known):
                    newest[key], versions[key] = record.offset, change.version
            if len(newest) > self._settings.max_orders_per_partition:
                raise TooManyOrders(
                    f"{self.tp}: more than resync.max_orders_per_partition "
                    f"({self._settings.max_orders_per_partition:,}) orders in range"
                )
        return newest, max(end, progress.until)

    async def _hand_over(self, progress: Progress, newest: dict[str, int], end: int) -> Progress:
        """Hand each order's newest record over, a batch at a time; an order whose shop is parked on
        the partition is deferred to the end (its replay could send older parked records after the
        resync's newer state), without holding the other shops' orders back; ``at`` never passes the
        first deferred one."""
        at = progress.at
        deferred: list[tuple[int, OrderChange]] = []
        while at < end:
            batch = await self._records(at, end)
            if not batch:
                break
            handed = 0
            for record in batch:
                change = self._reader.peek(record)
                if change is None or newest.get(change.key) != record.offset:
                    continue  # not its order's newest record in range
                await self._read_past(record.offset)
                if self._live.parked(self.tp, change.tenant):
                    deferred.append((record.offset, change))
                    continue
                handed += self._hand(change)
                if handed >= self._settings.batch:
                    at = record.offset + 1
                    break
            else:
                at = batch[-1].offset + 1
            await self._ended()
            progress = await self._write(
                dataclasses.replace(progress, at=min([at, *(o for o, _ in deferred[:1])]))
            )
        for offset, change in deferred:  # their shops' turn: once each is sent directly again
            while self._live.parked(self.tp, change.tenant):
                await self._read_past(offset)
                await asyncio.sleep(EMPTY_WAIT)
            self._hand(change)
        await self._ended()
        return await self._write(dataclasses.replace(progress, at=max(at, progress.until), done=True))

    async def _read_past(self, offset: int) -> None:
        """Wait until the live traffic has read past ``offset``; :class:`Revoked` once the partition
        is no longer owned in this resync's assignment (what the coalescer knew of it is gone)."""
        while True:
            below = self._live.read_below(self.tp, self._assignment)
            if below is None:
                raise Revoked(str(self.tp))
            if below > offset:
                return
            await asyncio.sleep(EMPTY_WAIT)

    def _hand(self, change: OrderChange) -> int:
        """Hand ``change`` to its shop (1), or skip it (0): its shop is not served here, or a newer
        state of its order with another body was seen."""
        shop = self._shops_served.resending(change.tenant)
        if shop is None or self._newer.supersedes(change):
            self._counts[Resent.SKIPPED] += 1
            self._hooks.order_resynced(Resynced(str(Resent.SKIPPED)))
            return 0
        self._open += 1
        if shop not in self._shops:
            self._shops.append(shop)
        shop.resend(change, self)
        return 1

    async def _ended(self) -> None:
        """Wait until every change handed over has ended."""
        while self._open > 0:
            self._batch_over.clear()
            await self._batch_over.wait()

    async def _write(self, progress: Progress) -> Progress:
        progress = dataclasses.replace(
            progress,
            sent=(self.progress.sent if self.progress else 0) + self._counts[Resent.SENT],
            skipped=(self.progress.skipped if self.progress else 0) + self._counts[Resent.SKIPPED],
            failed=(self.progress.failed if self.progress else 0) + self._counts[Resent.FAILED],
            by=self._member,
            written=self._wall(),
        )
        await self._out.publish(*encode(progress))
        if progress.done:
            log.info("resync_partition_done", id=progress.id, partition=str(self.tp), orders=progress.orders,
                     sent=progress.sent, skipped=progress.skipped, failed=progress.failed)  # fmt: skip
        return progress


__all__ = [
    "EMPTY_WAIT", "Live", "PartitionResync", "Resending", "Revoked", "Shops", "SourceLog", "TooManyOrders",
]  # fmt: skip
