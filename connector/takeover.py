"""Taking a partition over from its previous owner: what its last commit says, and the re-read that
comes before anything of it is sent.

A partition just assigned may still have requests of its previous owner in flight, and that owner may
have sent orders past the committed offset. So before the new owner sends for it, :class:`Takeover`
reads the partition's last commit (its settle-by, read position and parking state), holds the
partition (a hold the fence keeps; the worst case when the commit cannot be read or was written by
someone else; indefinitely when it was written by a newer release), and re-reads it: from
``kafka.warmup_records`` before the committed offset (marks of what was delivered) to as far as the
previous owner may have read (the lookahead). It is a part of :class:`~connector.membership.Membership`,
which calls it on assignment and on each commit loop turn; it has one job and its own state (which held
partitions were logged, whether a fetched batch is being handled), so the rebalance callbacks, pauses
and commits stay readable on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from connector import metadata as wire
from connector.clock import Clock
from connector.config import Settings
from connector.fence import Fence
from connector.instruments import LookaheadTruncated, PartitionHooks, PartitionsHeld
from connector.logs import get_logger
from connector.lookahead import Lookahead
from connector.ownership import Assignment, OwnedPartition, PartitionStatus
from connector.park import Parking
from connector.source import Source
from connector.structs import TopicPartition

log = get_logger("connector.membership")  # its events are logged as the membership's, as before


class Takeover:
    """Starts newly owned partitions from their last commit and runs their re-read (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        hooks: PartitionHooks,
        assignment: Assignment,
        *,
        clock: Clock,
        fence: Fence,
        park: Parking,
    ) -> None:
        self.settings = settings
        self._hooks = hooks
        self.assignment = assignment
        self.clock = clock
        self.fence = fence
        self.park = park
        self.source: Source | None = None
        self._held_logged: set[TopicPartition] = set()
        self._handling = False  # a fetched batch is being handled (positions are ahead of it)
        self._reading = asyncio.Lock()  # one read of last commits at a time (see read_last_commits)

    def attach(self, source: Source) -> None:
        """The group member whose partitions are taken over."""
        self.source = source

    async def read_last_commits(self, partitions: set[TopicPartition]) -> None:
        """Read the last commit of ``partitions`` and start them; those whose commit could not be read
        stay ASSIGNING (paused, held by a worst-case fence) and are asked again on a later call.
        One call at a time: the commit loop asks again for partitions still ASSIGNING while an
        assignment's own call may be under way for them, and two starts of one partition would
        take up its parking state twice (two writer tokens: what was parked under the first would
        be dropped, its offset never resolved)."""
        async with self._reading:
            await self._read_last_commits(partitions)

    async def _read_last_commits(self, partitions: set[TopicPartition]) -> None:
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
            return  # its parking state cannot be taken up yet: it waits, asked again on a later call
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
            self._hooks.lookahead_overflowed(LookaheadTruncated(part.lookahead.truncated))
            log.warning(
                "lookahead_truncated",
                partition=str(part.tp),
                orders=len(part.lookahead),
                events_not_noted=part.lookahead.truncated,
                action="raise kafka.remember_keys: orders past it may be sent an older state first",
            )

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
        self.count_held()

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` is no longer owned: should it be held again later, that is logged again."""
        self._held_logged.discard(tp)

    def count_held(self) -> None:
        """Set the gauge of partitions held (their last commit unreadable to this release)."""
        held = len(self.assignment.partitions(PartitionStatus.HELD))
        self._hooks.held_partitions_counted(PartitionsHeld(held))

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


__all__ = ["Takeover"]
