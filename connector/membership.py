"""Group membership: what happens when partitions are assigned and revoked, the member's pauses, and
the commits that carry each partition's watermark, settle-by, read position and parking state.

:class:`Membership` owns the :class:`~connector.ownership.Assignment` (every owned partition's
state) and is the only part that moves partitions through their statuses. The record path
(``pipeline.py``) reads that state; the source calls :meth:`Membership.on_revoked` and
:meth:`Membership.on_assigned` around each rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from enum import StrEnum

from connector import metadata as wire
from connector.clock import Clock
from connector.coalesce import Coalescer
from connector.config import Settings
from connector.fence import Fence
from connector.logs import get_logger
from connector.lookahead import Lookahead
from connector.metrics import Metrics
from connector.ownership import Assignment, OwnedPartition, PartitionStatus
from connector.park import Parking
from connector.source import Committed, Source
from connector.structs import TopicPartition
from connector.tenancy import Tenancy

log = get_logger("connector.membership")


class PauseReason(StrEnum):
    """Why consumption is paused (every owned partition at once)."""

    READ_AHEAD = "read_ahead"  # the read-ahead bound is reached: resumed when half drained
    STOPPING = "stopping"  # shutting down: what was read is being drained


class Membership:
    """This member's partitions: assignment, revocation, pauses and commits (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        assignment: Assignment,
        *,
        clock: Clock,
        fence: Fence,
        coalescer: Coalescer,
        tenancy: Tenancy,
        park: Parking,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.fence = fence
        self.coalescer = coalescer
        self.tenancy = tenancy
        self.park = park
        self.assignment = assignment
        self.source: Source | None = None
        self.commit_soon = asyncio.Event()
        self._paused: set[PauseReason] = set()
        self._commit_lock = asyncio.Lock()
        self._held_logged: set[TopicPartition] = set()
        self._handling = False  # a fetched batch is being handled (positions are ahead of it)

    def attach(self, source: Source) -> None:
        """The group member this membership is of (it calls back :meth:`on_assigned` etc.)."""
        self.source = source

    # -- pauses -------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        """Consumption is paused (read-ahead bound reached, or stopping)."""
        return bool(self._paused)

    def set_paused(self, reason: PauseReason, on: bool) -> None:
        """Pause (or resume) every owned partition for ``reason``; partitions that are not reading
        (assigning, held) stay paused whatever the reasons."""
        if on:
            self._paused.add(reason)
        else:
            self._paused.discard(reason)
        self._apply_pauses()

    def _apply_pauses(self) -> None:
        if self.source is None:
            return
        owned = self.assignment.partitions()
        reading = {p.tp for p in self.assignment if p.reading and not p.at_horizon}
        if self._paused:
            self.source.pause(owned)
            self.metrics.paused.set(len(owned))
        else:
            self.source.pause(owned - reading)
            self.source.resume(reading)
            self.metrics.paused.set(len(owned - reading))

    # -- rebalance ----------------------------------------------------------------------------
    @property
    def revoke_bound(self) -> float:
        """How long a revoke waits for calls in flight: they end within the call timeout anyway, and
        the whole callback must finish well within the rebalance timeout."""
        k, s = self.settings.kafka, self.settings.sink
        return min(
            self.settings.shutdown_grace_seconds, s.timeout_seconds + 1.0, k.rebalance_timeout_ms / 2000
        )

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Stop work on ``partitions``, let calls in flight finish (bounded), commit a hand-over,
        forget them."""
        if not partitions:
            return
        started = self.clock.monotonic()
        bound = self.revoke_bound
        for tp in partitions:
            part = self.assignment.get(tp)
            if part is not None:
                part.status = PartitionStatus.REVOKING
        try:
            await self.park.interrupt()
            await self.tenancy.drain(partitions, timeout=bound)
            for key in self.coalescer.drop_partitions(partitions):
                current = self.coalescer.current(key)
                if current is not None:
                    self.tenancy.submit(key, current.tp, current.tenant)
            tasks = [t for tp in sorted(partitions) if (p := self.assignment.get(tp)) for t in p.dead_letters]
            if tasks:
                left = max(0.1, bound - (self.clock.monotonic() - started))
                _, late = await asyncio.wait(tasks, timeout=left)
                for task in late:
                    task.cancel()
            for tp in sorted(partitions):
                await self.park.flush(tp, max(0.1, bound - (self.clock.monotonic() - started)))
            await self.commit(only=partitions, handover=True)
        finally:
            for tp in partitions:
                gone = self.assignment.drop(tp)
                self.fence.drop(tp)
                self.park.revoke(tp, gone.park if gone is not None else None)
                self._held_logged.discard(tp)
                for gauge in (self.metrics.lag, self.metrics.committed):
                    with contextlib.suppress(KeyError):
                        gauge.remove(tp.topic, str(tp.partition))
            self._held_gauge()
        log.info(
            "partitions_revoked",
            partitions=sorted(str(t) for t in partitions),
            took_s=round(self.clock.monotonic() - started, 3),
        )

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Own ``partitions``: read what their last commit said, hold them until the previous owner's
        requests can no longer land, re-read before sending (warm-up and lookahead), take a lease by
        committing at once, and re-apply the pause."""
        if self.source is None:
            return
        # Paused before the first await: the consumer starts fetching from the committed offset at
        # once, and records fetched before the warm-up seek below would come first, then again.
        self.source.pause(partitions)
        for tp in partitions:
            self.assignment.add(tp)
        self.tenancy.undrain(partitions)
        layout = self.source.partition_counts()
        self.tenancy.set_layout(layout)
        self.park.set_layout(layout)
        await self._read_metadata(partitions)
        self._apply_pauses()
        self.commit_soon.set()
        now = self.clock.wall()
        held = {
            str(tp): round(window[0] - now, 1)
            for tp in sorted(partitions)
            if (window := self.fence.window(tp)) is not None and window[0] > now
        }
        log.info(
            "partitions_assigned",
            partitions=sorted(str(t) for t in partitions),
            held_s=held or None,
            budget_share_per_second=round(self.tenancy.rate, 3),
        )

    async def _read_metadata(self, partitions: set[TopicPartition]) -> None:
        """Read the last commit of ``partitions`` and start them; those whose commit could not be read
        stay ASSIGNING (paused, held by a worst-case fence) and are tried again by :meth:`tick`."""
        assert self.source is not None
        waiting = {
            tp for tp in partitions if (p := self.assignment.get(tp)) is not None and not p.committable
        }
        if not waiting:
            return
        try:
            committed = await self.source.committed(waiting)
        except Exception as exc:  # unknown: the previous owner may still be sending for a full lease
            worst = self.clock.wall() + self.fence.lease_seconds + self.fence.settle_seconds
            for tp in sorted(waiting):
                if self.fence.window(tp) is None:
                    self.fence.assign(tp, worst)
            log.warning(
                "commit_metadata_lookup_failed",
                partitions=sorted(str(tp) for tp in waiting),
                error=f"{type(exc).__name__}: {exc}",
                action="not read, sent for or committed until their last commit is known",
            )
            return
        never = set()
        for tp in sorted(waiting):
            part = self.assignment.get(tp)
            if part is None or part.status is not PartitionStatus.ASSIGNING:
                continue  # revoked meanwhile
            offset, text = committed.get(tp, (None, ""))
            read = wire.decode(text)
            await self._start(part, offset, read)
            if offset is None and part.committable:  # started, at the consumer's position
                never.add(tp)
        await self._start_uncommitted(never)

    async def _start(self, part: OwnedPartition, offset: int | None, read: wire.Read) -> None:
        tp = part.tp
        now = self.clock.wall()
        worst = now + self.fence.lease_seconds + self.fence.settle_seconds
        part.origin = read.origin
        if read.origin is wire.Origin.UNREADABLE:
            part.status, part.problem = PartitionStatus.HELD, read.problem
            self.fence.assign(tp, worst)
            self._held(part)
            return
        hold = read.meta.settle_by
        if read.origin is wire.Origin.FOREIGN:  # someone else committed: assume the worst hold
            hold = worst
            log.warning("commit_metadata_foreign", partition=str(tp), note=read.problem)
        if not await self.park.assign(tp, read.meta, offset):
            if self.fence.window(tp) is None:
                self.fence.assign(tp, worst)
            return  # its parking state cannot be taken up yet: it waits, asked again by tick()
        if self.assignment.get(tp) is not part:
            return  # revoked meanwhile
        part.inherited = read.meta
        self.fence.assign(tp, hold)
        part.status = PartitionStatus.OWNED
        if offset is None:
            return
        part.start = offset
        part.offsets.start_at(offset)
        self._warm_up(part, offset, read)

    def _warm_up(self, part: OwnedPartition, offset: int, read: wire.Read) -> None:
        """Start the re-read of ``part``: from ``warmup_records`` before ``offset`` (marks of what was
        delivered) to where the previous owner may have read (the lookahead: its last commit's
        ``read_to`` and ``kafka.lookahead_records`` beyond; a v1 member announced no ``read_to``, so
        ``kafka.lookahead_records`` past the committed offset is the best guess)."""
        assert self.source is not None
        k = self.settings.kafka
        until = offset
        if read.origin is wire.Origin.OURS:  # else no member of ours held a lease on it
            if read.meta.version >= 2 and read.meta.read_to is not None:
                until = max(offset, read.meta.read_to) + k.lookahead_records
            else:  # 0.1.0 announced nothing and kept to no horizon: as far as either bound reaches
                until = offset + max(k.lookahead_records, k.warmup_records)
        end = self.source.log_end(part.tp)
        if end is not None:
            until = min(until, end)
        first = max(0, offset - k.warmup_records)
        if until > offset:
            part.lookahead = Lookahead(offset, until, self.settings.kafka.remember_keys or 1)
        if until <= first:
            return
        part.status = PartitionStatus.WARMING
        part.warm_until = until
        self.source.seek(part.tp, first)

    def warmed(self, part: OwnedPartition) -> None:
        """The re-read of ``part`` is over: read it again, for real, from its committed offset."""
        if part.status is not PartitionStatus.WARMING or self.source is None:
            return
        part.status = PartitionStatus.OWNED
        part.warm_until = None
        if part.start is not None:
            self.source.seek(part.tp, part.start)
        if part.lookahead is not None and part.lookahead.truncated:
            self.metrics.lookahead_truncated.inc(part.lookahead.truncated)
            log.warning(
                "lookahead_truncated",
                partition=str(part.tp),
                orders=len(part.lookahead),
                events_not_noted=part.lookahead.truncated,
                action="raise kafka.remember_keys: orders past it may be sent an older state first",
            )

    # -- the horizon: how far ahead of its last commit a member reads ---------------------------
    def horizon(self, part: OwnedPartition) -> int | float:
        """The first offset of ``part`` this member may not handle yet: ``kafka.lookahead_records``
        past the read position its last successful commit announced (none yet: it holds no lease,
        sends nothing, and its first commit announces everything it read). So whatever it sends, its
        successor re-reads first (the lookahead)."""
        if part.announced is None:
            return float("inf")
        return part.announced + self.settings.kafka.lookahead_records

    def near_horizon(self, part: OwnedPartition, offset: int) -> bool:
        """Whether reading reached half-way to the horizon: time to commit (and move it on)."""
        return (
            part.announced is not None
            and offset >= part.announced + self.settings.kafka.lookahead_records // 2
        )

    def at_horizon(self, part: OwnedPartition) -> None:
        """``part`` reached its horizon: paused until the next commit moves it on."""
        part.at_horizon = True
        if self.source is not None:
            self.source.pause({part.tp})
        self.commit_soon.set()

    def behind(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is still more than ``delivery.linger_lag_records`` records behind its log end
        while reading goes on: a job of ``tp`` lingers then, as newer events of its key are likely yet
        to be read. Never while reading is paused (the read-ahead bound, stopping), so a lingering job
        can never be what holds reading back."""
        part = self.assignment.get(tp)
        if self._paused or self.source is None or part is None or not part.sending:
            return False
        end, read = self.source.log_end(tp), part.offsets.next_offset
        return end is not None and read is not None and end - read > self.settings.delivery.linger_lag_records

    def need_lease(self, tp: TopicPartition) -> None:
        """``tp`` has an order to send: when it has no send lease yet (a previous owner's requests
        may still land), commit soon, as the commit takes the lease."""
        if not self.fence.may_send(tp) and self.fence.window(tp) is not None:
            self.commit_soon.set()

    def paused_for(self, reason: PauseReason) -> bool:
        """Whether consumption is paused for ``reason``."""
        return reason in self._paused

    def stop_all(self) -> set[TopicPartition]:
        """Shutting down: every owned partition is being handed over (returned)."""
        for part in self.assignment:
            if part.status is not PartitionStatus.HELD:
                part.status = PartitionStatus.REVOKING
        return self.assignment.partitions()

    async def _start_uncommitted(self, partitions: set[TopicPartition]) -> None:
        """Partitions the group never committed start at the consumer's position, so the commit that
        follows the assignment covers them too: each partition's lease (and its share of the budget
        ticks) comes only from a commit of its own, with its settle-by, and a partition not yet read
        would otherwise leave its ticks unused until its first record (a quarter of the budget, with
        four partitions and a backlog read one partition at a time)."""
        if not partitions or self.source is None:
            return
        ordered = sorted(partitions)
        positions = await asyncio.gather(*(self.source.position(tp) for tp in ordered))
        for tp, position in zip(ordered, positions, strict=True):
            part = self.assignment.get(tp)
            if position is not None and part is not None:
                part.start = position
                part.offsets.start_at(position)

    def _held(self, part: OwnedPartition) -> None:
        if part.tp not in self._held_logged:
            self._held_logged.add(part.tp)
            log.error(
                "partition_held",
                partition=str(part.tp),
                reason=part.problem,
                action="neither read, sent for nor committed: its last commit was written by a newer "
                "release (or damaged); upgrade this member, see README 'Upgrading'",
            )
        self._held_gauge()

    def _held_gauge(self) -> None:
        self.metrics.partitions_held.set(len(self.assignment.partitions(PartitionStatus.HELD)))

    async def tick(self) -> None:
        """The commit loop's turn: partitions whose last commit could not be read are asked again,
        warm-ups whose records are gone (retention) end, then every owned partition is committed."""
        if self.source is None:
            return
        if self.assignment.partitions(PartitionStatus.ASSIGNING):
            await self._read_metadata(self.assignment.partitions(PartitionStatus.ASSIGNING))
            self._apply_pauses()
        await self.commit()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """A fetched batch is being handled: the consumer's positions are ahead of what was handled,
        so they say nothing yet about a warm-up being over."""
        self._handling = True
        try:
            yield
        finally:
            self._handling = False

    async def warm_over(self, tp: TopicPartition) -> bool:
        """Whether the re-read of ``tp`` is over (what it remembers decides whether a replayed event
        is stale)."""
        part = self.assignment.get(tp)
        return part is not None and await self.warm_done(part)

    async def warm_done(self, part: OwnedPartition) -> bool:
        """Whether the re-read of ``part`` is over: its last record was handled, or (its records gone
        by retention, or fewer than announced) the consumer's position passed its end with no batch
        in hand."""
        if part.status is not PartitionStatus.WARMING:
            return part.status is PartitionStatus.OWNED
        until = part.warm_until
        if self._handling or self.source is None or until is None:
            return False
        position = await self.source.position(part.tp)
        if part.warm_until != until:  # handled meanwhile
            return part.sending
        end = self.source.log_end(part.tp)
        bound = until if end is None else min(until, end)
        if position is not None and position >= bound:
            self.warmed(part)
            return True
        return False

    # -- commits ------------------------------------------------------------------------------
    async def commit(self, only: set[TopicPartition] | None = None, handover: bool = False) -> None:
        """Commit the watermark of every owned partition (``only`` those given), with its metadata; a
        periodic commit also renews the send lease, a hand-over ends it. A commit the broker refuses
        for one partition (its metadata too large, say) is made again partition by partition, so
        that one partition never blocks the others' leases."""
        if self.source is None:
            return
        async with self._commit_lock:
            lease_until = None if handover else self.clock.wall() + self.fence.lease_seconds
            owned = self.assignment.partitions() if only is None else only
            settle = {tp: self.fence.settle_by(tp, lease_until) for tp in owned}
            plan = self.assignment.commit_plan(settle, self.park.commit_state(owned), only, handover)
            texts: Committed = {}
            for tp, (offset, meta) in plan.offsets.items():
                text = self._encode(tp, meta)
                if text is not None:
                    texts[tp] = (offset, text)
            if not texts:
                return
            done = [texts] if await self.source.commit(texts) else []
            if not done and len(texts) > 1:  # one partition's refusal must not cost the others
                done = [{tp: v} for tp, v in sorted(texts.items()) if await self.source.commit({tp: v})]
            for batch in done:
                for tp, (offset, _) in batch.items():
                    self._committed(tp, offset, plan.offsets[tp][1], lease_until)

    def _committed(
        self, tp: TopicPartition, offset: int, meta: wire.CommitMeta, lease_until: float | None
    ) -> None:
        part = self.assignment.get(tp)
        if part is None:
            return
        part.committed = offset
        part.announced = meta.read_to
        self.metrics.committed.labels(tp.topic, str(tp.partition)).set(offset)
        if lease_until is not None:
            self.fence.renew(tp, lease_until)
        if part.at_horizon:
            part.at_horizon = False
            self._apply_pauses()

    def _encode(self, tp: TopicPartition, meta: wire.CommitMeta) -> str | None:
        try:
            return wire.encode(meta, self.settings.kafka.metadata_max_bytes)
        except ValueError as exc:  # bounded by parking before it is written: never expected
            log.error("commit_metadata_too_large", partition=str(tp), error=str(exc))
            return None


__all__ = ["Membership", "PauseReason"]
