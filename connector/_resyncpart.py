"""One partition's part of a resync (:mod:`connector.resync`): two reads of its records in range, and
its newest states handed to the shops, a batch at a time, with its progress written after each.

The first read finds, for every order of the request's shops, the offset of its newest record in
``[from, until)``; it reads on to the log's end, and an order with a record at or past ``until`` is
left to the live traffic, which sends that newer state (or has). The second read, from ``at``, hands
each order's newest record in range to its shop (:meth:`~connector.audit.Auditor.resend`) unless the
coalescer has seen a newer state of it meanwhile; once every change of a batch is told sent, skipped
or failed, ``at`` moves past the batch and the progress is written, so that a new owner (after a
rebalance or a restart) goes on from there. A read right after a seek may come back empty: it is
read again.
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
from connector.structs import OrderChange, Record, TopicPartition

log = get_logger("connector.resync")

EMPTY_WAIT = 0.2
"""Seconds before reading again after a read that came back empty short of the end."""


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


class Shops(Protocol):
    def resending(self, tenant: str) -> Resending | None:
        """Where ``tenant``'s changes are sent again (None: not served here)."""
        ...


class TooManyOrders(Exception):
    """The partition has more orders in range than ``resync.max_orders_per_partition``."""


class PartitionResync:
    """A partition's part of one request (told how each change it handed over ended)."""

    def __init__(
        self,
        request: Request,
        tp: TopicPartition,
        progress: Progress | None,
        *,
        source: SourceLog,
        out: Publisher,
        reader: Reads,
        newer: Newer,
        shops: Shops,
        settings: ResyncSettings,
        member: str,
        wall: Callable[[], float],
        hooks: ResyncHooks = NO_HOOKS,
    ) -> None:
        self.request = request
        self.tp = tp
        self.progress = progress
        self._source = source
        self._out = out
        self._reader = reader
        self._newer = newer
        self._shops_served = shops
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
                newest, beyond = await self._newest(progress)
                progress = await self._write(dataclasses.replace(progress, orders=len(newest)))
                progress = await self._hand_over(progress, newest, beyond)
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

    async def _newest(self, progress: Progress) -> tuple[dict[str, int], set[str]]:
        """Each order's newest offset in range, and the orders with a record past it."""
        _, end = await self._source.bounds(self.tp)
        newest: dict[str, int] = {}
        beyond: set[str] = set()
        at = progress.start
        while at < end:
            batch = await self._records(at, end)
            if not batch:
                break
            at = batch[-1].offset + 1
            for record in batch:
                change = self._reader.peek(record)
                if change is None or not self.request.covers(change.tenant):
                    continue
                if record.offset < progress.until:
                    newest[change.key] = record.offset
                else:
                    beyond.add(change.key)
            if len(newest) > self._settings.max_orders_per_partition:
                raise TooManyOrders(
                    f"{self.tp}: more than resync.max_orders_per_partition "
                    f"({self._settings.max_orders_per_partition:,}) orders in range"
                )
        return newest, beyond

    async def _hand_over(self, progress: Progress, newest: dict[str, int], beyond: set[str]) -> Progress:
        at = progress.at
        while at < progress.until:
            batch = await self._records(at, progress.until)
            if not batch:
                break
            handed = 0
            self._batch_over.clear()
            for record in batch:
                change = self._reader.peek(record)
                if change is None or newest.get(change.key) != record.offset:
                    continue  # not its order's newest record in range
                shop = self._shops_served.resending(change.tenant)
                if shop is None or change.key in beyond or self._newer.supersedes(change):
                    self._counts[Resent.SKIPPED] += 1
                    self._hooks.order_resynced(Resynced(str(Resent.SKIPPED)))
                    continue
                self._open += 1
                handed += 1
                if shop not in self._shops:
                    self._shops.append(shop)
                shop.resend(change, self)
                if handed >= self._settings.batch:
                    at = record.offset + 1
                    break
            else:
                at = batch[-1].offset + 1
            if self._open > 0:
                await self._batch_over.wait()
            progress = await self._write(dataclasses.replace(progress, at=at))
        return await self._write(dataclasses.replace(progress, at=progress.until, done=True))

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


__all__ = ["EMPTY_WAIT", "PartitionResync", "Resending", "Shops", "SourceLog", "TooManyOrders"]
