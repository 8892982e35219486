"""Group membership: what happens when partitions are assigned and revoked, the member's pauses, the
horizon, and when each partition's watermark, settle-by, read position and parking state is committed.

:class:`Membership` owns the :class:`~connector.ownership.Assignment` (every owned partition's
state) and, with the parts it owns, is the only one that moves partitions through their statuses:
taking a partition over from its last commit and re-reading it is its
:class:`~connector.takeover.Takeover`, writing the commits its :class:`~connector.committer.Committer`.
The record path (``pipeline.py``) reads that state; the source calls :meth:`Membership.on_revoked` and
:meth:`Membership.on_assigned` around each rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
from enum import StrEnum

from connector.clock import Clock
from connector.coalesce import Coalescer
from connector.committer import Committer
from connector.config import Settings
from connector.fence import Fence
from connector.instruments import PartitionHooks, PartitionsPaused, Released
from connector.logs import get_logger
from connector.ownership import Assignment, OwnedPartition, PartitionStatus
from connector.park import Parking
from connector.source import Source
from connector.structs import TopicPartition
from connector.takeover import Takeover
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
        hooks: PartitionHooks,
        assignment: Assignment,
        *,
        clock: Clock,
        fence: Fence,
        coalescer: Coalescer,
        tenancy: Tenancy,
        park: Parking,
    ) -> None:
        self.settings = settings
        self._hooks = hooks
        self.clock = clock
        self.fence = fence
        self.coalescer = coalescer
        self.tenancy = tenancy
        self.park = park
        self.assignment = assignment
        self.source: Source | None = None
        self.commit_soon = asyncio.Event()
        self._paused: set[PauseReason] = set()
        self._lingering: dict[TopicPartition, asyncio.Event] = {}  # set once the partition caught up
        self.takeover = Takeover(settings, hooks, assignment, clock=clock, fence=fence, park=park)
        self.committer = Committer(settings, hooks, assignment, clock=clock, fence=fence, park=park)

    def attach(self, source: Source) -> None:
        """The group member this membership is of (it calls back :meth:`on_assigned` etc.)."""
        self.source = source
        self.takeover.attach(source)
        self.committer.attach(source)

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
        self.read_progressed()

    def _apply_pauses(self) -> None:
        if self.source is None:
            return
        owned = self.assignment.partitions()
        reading = {p.tp for p in self.assignment if p.reading and not p.at_horizon}
        if self._paused:
            self.source.pause(owned)
            self._hooks.reading_paused(PartitionsPaused(len(owned)))
        else:
            self.source.pause(owned - reading)
            self.source.resume(reading)
            self._hooks.reading_paused(PartitionsPaused(len(owned - reading)))

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
                current = self.coalescer.current(key)  # the only change its key has left
                if current is not None:
                    self.tenancy.submit(current)
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
                self.takeover.forget(tp)
                self._hooks.partition_released(Released(tp.topic, tp.partition))
            self.takeover.count_held()
            self.read_progressed()
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
        await self.takeover.read_last_commits(partitions)
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
        """Whether ``tp`` has records not yet read (more than ``delivery.linger_lag_records``, by default
        none) while reading goes on: a job of ``tp`` lingers then, as newer events of its key may be
        among them, and reading them takes less than the ticks the calls would use (a backlog is read
        in a fraction of a second per 10,000 records). Never while reading is paused (the read-ahead
        bound, stopping), so a lingering job can never be what holds reading back; never when caught
        up, so an event alone is sent at once."""
        part = self.assignment.get(tp)
        if self._paused or self.source is None or part is None or not part.sending:
            return False
        end, read = self.source.log_end(tp), part.offsets.next_offset
        return end is not None and read is not None and end - read > self.settings.delivery.linger_lag_records

    async def caught_up(self, tp: TopicPartition, timeout: float) -> None:
        """Return once ``tp`` is no longer :meth:`behind` (told by :meth:`read_progressed`), or after
        ``timeout`` seconds: the jobs lingering on it wait here, not in a poll."""
        if timeout <= 0 or not self.behind(tp):
            return
        event = self._lingering.get(tp)
        if event is None:
            event = self._lingering[tp] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: no task of its own per lingering job
                await event.wait()

    def read_progressed(self) -> None:
        """Reading moved on (a fetch came back and was handled, reading was paused or resumed, a
        partition was revoked): wake the jobs lingering on partitions no longer behind."""
        for tp in [tp for tp in self._lingering if not self.behind(tp)]:
            self._lingering.pop(tp).set()

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

    async def tick(self) -> None:
        """The commit loop's turn: partitions whose last commit could not be read are asked again,
        warm-ups whose records are gone (retention) end, then every owned partition is committed."""
        if self.source is None:
            return
        if self.assignment.partitions(PartitionStatus.ASSIGNING):
            await self.takeover.read_last_commits(self.assignment.partitions(PartitionStatus.ASSIGNING))
            self._apply_pauses()
        await self.commit()

    # -- the take-over's re-read (``connector.takeover``), as the read path and parking ask ----------
    def warmed(self, part: OwnedPartition) -> None:
        """The re-read of ``part`` is over: read it again, for real, from its committed offset."""
        self.takeover.warmed(part)

    def handling(self) -> contextlib.AbstractContextManager[None]:
        """A fetched batch is being handled (the consumer's positions say nothing of a warm-up then)."""
        return self.takeover.handling()

    async def warm_over(self, tp: TopicPartition) -> bool:
        """Whether the re-read of ``tp`` is over (``connector.park.Warmth``)."""
        return await self.takeover.warm_over(tp)

    async def warm_done(self, part: OwnedPartition) -> bool:
        """Whether the re-read of ``part`` is over (it ends it when its end was passed)."""
        return await self.takeover.warm_done(part)

    # -- commits ------------------------------------------------------------------------------
    async def hand_over(self) -> None:
        """Stopping, once drained (:meth:`stop_all`): commit the hand-over of every owned partition,
        then send nothing more for any of them. The hand-over's settle-by lets the next owners send
        at once, so a request started after it (an audit's read or a resync's resend on a tick the
        fence still allowed) could share a tick with theirs: the fence forgets every partition."""
        try:
            await self.commit(handover=True)
        finally:
            for tp in self.fence.partitions():
                self.fence.drop(tp)

    async def commit(self, only: set[TopicPartition] | None = None, handover: bool = False) -> None:
        """Commit the watermark of every owned partition (``only`` those given), with its metadata
        (``connector.committer``); a partition paused at its horizon, moved on by it, reads again."""
        if await self.committer.commit(only, handover):
            self._apply_pauses()


__all__ = ["Membership", "PauseReason"]
