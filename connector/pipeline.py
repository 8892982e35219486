"""The pipeline: fetch → decode → coalesce → deliver, and the commit watermark behind it.

Every record read is tracked by its partition's watermark until it is resolved: delivered, skipped as
stale or identical, replaced by a newer event for its key, or acknowledged on the dead-letter topic.
Commits are periodic, on revoke and on shutdown, never pass an unresolved offset, and carry the fence's
settle-by time (``fence.py``) so that the next owner of a partition never sends before our requests
for it can no longer land. Everything runs on one event loop; the record handler is synchronous, so a
rebalance callback never interleaves with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from connector.clock import Clock
from connector.coalesce import Coalescer, Resolution
from connector.config import Settings
from connector.gauges import Gauges
from connector.health import Health
from connector.instruments import Backlog, ReadHooks, RecordsRead
from connector.ledger import Ledger
from connector.logs import debug_enabled, get_logger
from connector.membership import Membership, PauseReason
from connector.ownership import Assignment, OwnedPartition, PartitionStatus
from connector.park import Parking
from connector.reader import Reader
from connector.source import Source
from connector.structs import Record, TopicPartition

log = get_logger("connector.pipeline")
_HANDLE_CHUNK = 16
"""Records handled between two yields to the event loop: about half a millisecond of work. A granted
tick must still be fresh (``pacing.LATE``, 5 ms) when its request leaves, two loop turns later: with 64
records (2 ms) a backlog read at full speed made ticks stale, and at 1,000 requests a second each read
of the read-ahead's refill cost 60 to 130 ticks (bench/cost.py M: 97.9%)."""

SUMMARY_INTERVAL_S = 10.0


class Drain(Protocol):
    """Stops every delivery of some partitions (``connector.tenancy.Tenancy``: every shop's)."""

    async def drain(self, partitions: set[TopicPartition], timeout: float) -> None: ...


class Pipeline:
    """One consumer-group member's record path: fetch, decode, track, coalesce; and its loops (the
    commit loop, the drain on stop). What becomes of each record is the ledger's."""

    def __init__(
        self,
        settings: Settings,
        reader: Reader,
        ledger: Ledger,
        membership: Membership,
        park: Parking,
        assignment: Assignment,
        coalescer: Coalescer,
        gauges: Gauges,
        hooks: ReadHooks,
        health: Health,
        *,
        clock: Clock,
        drain: Drain,
    ) -> None:
        self._health = health
        self.settings = settings
        self._hooks = hooks
        self.clock = clock
        self._reader = reader
        self._ledger = ledger
        self.membership = membership
        self.park = park
        self.assignment = assignment
        self._coalescer = coalescer
        self._gauges = gauges
        self._drainer = drain
        self._source: Source | None = None
        self._reseek: set[TopicPartition] = set()  # sought back during this batch: its rest is stale
        self._consumed = 0
        self._consumed_unreported = 0

    # -- records in ---------------------------------------------------------------------------
    def handle(self, record: Record) -> None:
        """Track, decode and coalesce one record (never raises)."""
        tp = record.tp
        part = self.assignment.get(tp)
        if part is None or not part.reading or tp in self._reseek:
            return  # revoked, not started, or sought back meanwhile: read again later
        if part.status is PartitionStatus.WARMING:
            self._warm(part, record)
            return
        offsets = part.offsets
        if not offsets.follows(record.offset):
            log.warning(
                "record_out_of_order", note="already read in this assignment: skipped", **record.where()
            )
            return
        if record.offset >= self.membership.horizon(part):
            self._push_back(part, record)
            return
        offsets.track(record.offset, record.size, record.timestamp_ms / 1000.0)
        self._consumed += 1
        self._consumed_unreported += 1  # connector_events_consumed_total: added once per batch
        if self.membership.near_horizon(part, record.offset):
            self.membership.commit_soon.set()
        change = self._reader.accept(record)
        if change is None:
            return
        ahead = part.lookahead
        if ahead is not None:
            if record.offset >= ahead.end:
                part.lookahead = None
            elif ahead.superseded(change, record.offset):
                if debug_enabled():
                    log.debug("superseded_ahead", external_id=change.external_id, **record.where())
                self._ledger.resolve(record, Resolution.REPLACED)  # a newer event of its order follows
                return
        if change.tenant and self.park.parked(tp, change.tenant):
            self.park.park(record, change.tenant)  # resolved once the parking topic has it
            return
        self._ledger.offer(change)

    def _push_back(self, part: OwnedPartition, record: Record) -> None:
        """``record`` lies past what this member's last commit announced it may read: read it again
        after the next commit (the partition waits; see ``Membership.horizon``)."""
        assert self._source is not None
        self._source.seek(part.tp, record.offset)
        self._reseek.add(part.tp)
        self.membership.at_horizon(part)

    async def _handle_all(self, records: list[Record]) -> None:
        """Handle a fetched batch, yielding to the event loop every :data:`_HANDLE_CHUNK` records so
        that due budget ticks are used on time. A rebalance may run during a yield: records of a
        partition revoked meanwhile are left for its next owner (they are not committed)."""
        self._reseek.clear()
        try:
            with self.membership.handling():
                await self._reader.prefetch(records)  # Avro schemas from the registry, once per id
                for start in range(0, len(records), _HANDLE_CHUNK):
                    if start:
                        await asyncio.sleep(0)
                    for record in records[start : start + _HANDLE_CHUNK]:
                        self.handle(record)
        finally:
            self._hooks.records_read(RecordsRead(self._consumed_unreported))
            self._consumed_unreported = 0

    def _warm(self, part: OwnedPartition, record: Record) -> None:
        """A record of the re-read after an assignment. Below the committed offset it was resolved by a
        previous owner: its version is remembered, so that a late, older event is still recognised.
        From the committed offset on it may have been sent by the previous owner: its order's newest
        version there is noted (the lookahead), so that no older state of it is sent first."""
        start, until = part.start, part.warm_until
        assert start is not None
        assert until is not None
        if record.offset >= until - 1:
            self.membership.warmed(part)  # sought back to the committed offset
            self._reseek.add(part.tp)
        if record.offset >= until:
            return
        change = self._reader.peek(record)
        if change is None:  # it was, or will be, dead-lettered when read for real
            return
        if record.offset >= start:
            if part.lookahead is not None:
                part.lookahead.note(change)
            return
        # Only its version: an event before the committed offset may have been resolved without
        # being delivered (replaced, stale, dead-lettered, parked), so what the vendor holds is not
        # known, and no later event is skipped as identical to it; but it, or a newer state, was
        # the order's latest, so an older event is stale.
        self._coalescer.remember(change, delivered=False)

    def _backpressure(self) -> None:
        k = self.settings.kafka
        owned = self.assignment
        held, size, unresolved = owned.held, owned.unresolved_bytes, owned.unresolved
        self._hooks.backlog_measured(Backlog(unresolved, size, held))
        over = self.membership.paused_for(PauseReason.READ_AHEAD)
        bounds = (
            (unresolved, k.max_unresolved_events),
            (size, k.max_unresolved_bytes),
            (held, k.max_held_offsets),
        )
        if not over and any(value >= bound for value, bound in bounds):
            log.info("read_ahead_paused", unresolved=unresolved, unresolved_bytes=size, held=held)
            self.membership.set_paused(PauseReason.READ_AHEAD, True)
        elif over and all(value <= bound // 2 for value, bound in bounds):
            log.info("read_ahead_resumed", unresolved=unresolved, unresolved_bytes=size, held=held)
            self.membership.set_paused(PauseReason.READ_AHEAD, False)

    @property
    def paused(self) -> bool:
        """Consumption is paused (read-ahead bound reached, or stopping)."""
        return self.membership.paused

    # -- the commit loop ----------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        interval = self.settings.kafka.commit_interval_seconds
        last_summary = self.clock.monotonic()
        soon = self.membership.commit_soon
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that arrives
            # as the event is set, and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await soon.wait()
            soon.clear()
            await self.membership.tick()
            for part in list(self.assignment):
                if part.status is PartitionStatus.WARMING:
                    await self.membership.warm_done(part)
            self.park.check()
            self._gauges.refresh(self.clock.wall(), self._source)
            if self.clock.monotonic() - last_summary >= SUMMARY_INTERVAL_S:
                last_summary = self.clock.monotonic()
                self._summary()

    def _summary(self) -> None:
        counts = self._ledger.take_counts()
        if self._consumed:
            counts = {"consumed": self._consumed, **counts}
            self._consumed = 0
        if counts:
            log.info(
                "progress",
                **counts,
                unresolved=self.assignment.unresolved,
                active_keys=self._coalescer.active,
            )

    # -- the loop -----------------------------------------------------------------------------
    async def run(self, source: Source, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain within the grace period and commit."""
        self._source = source
        self.membership.attach(source)
        self._health.join()  # connected; assigned or waiting for an assignment
        committer = asyncio.create_task(self._commit_loop(), name="commit-loop")
        try:
            while not stop.is_set():
                records = await source.fetch(self.settings.kafka.poll_timeout_ms)
                self._health.beat()
                await self._handle_all(records)
                self._backpressure()
                self.membership.read_progressed()
            await self._drain()
        finally:
            committer.cancel()
            for part in self.assignment:
                for task in part.dead_letters:
                    task.cancel()  # still retrying an unwritable DLQ: its offset stays uncommitted
            with contextlib.suppress(asyncio.CancelledError):
                await committer
        await self.membership.hand_over()
        self._summary()
        log.info(
            "stopped",
            unresolved=self.assignment.unresolved,
            committed={str(tp): o for tp, o in self.assignment.committed().items()},
        )

    async def _drain(self) -> None:
        """Stop fetching and deliver what was read, within the grace period; then cancel what is
        still in flight (its requests count as ambiguous in the hand-over)."""
        assert self._source is not None
        self.membership.set_paused(PauseReason.STOPPING, True)
        self.park.stopping = True
        await self.park.interrupt()
        grace = self.settings.shutdown_grace_seconds
        deadline = self.clock.monotonic() + grace
        log.info("draining", unresolved=self.assignment.unresolved, grace_s=grace)
        while self.assignment.unresolved and self.clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self._health.beat()
        owned = self.membership.stop_all()
        await self._drainer.drain(owned, timeout=0.0)
