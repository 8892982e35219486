"""Group membership of a pipeline: what happens when partitions are assigned and revoked, and the
commits that carry each partition's watermark, settle-by and parking state.

Kept apart from the record path (``pipeline.py``) so that each reads on its own; :class:`Pipeline`
is the one class built from both, and these methods use its state (declared below).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from enum import StrEnum

from connector.clock import Clock
from connector.coalesce import Coalescer
from connector.config import Settings
from connector.constants import CommitMeta, commit_metadata, parse_commit_metadata
from connector.fence import Fence
from connector.logs import get_logger
from connector.metrics import Metrics
from connector.offsets import OffsetTracker
from connector.park import Parking
from connector.source import Committed, Source
from connector.structs import TopicPartition
from connector.tenancy import Tenancy

log = get_logger("connector.pipeline")


class PauseReason(StrEnum):
    """Why consumption is paused (every owned partition at once)."""

    READ_AHEAD = "read_ahead"  # the read-ahead bound is reached: resumed when half drained
    STOPPING = "stopping"  # shutting down: what was read is being drained


class Membership:
    """Assignment, revocation and commits (see the module docstring)."""

    settings: Settings
    metrics: Metrics
    clock: Clock
    tracker: OffsetTracker
    coalescer: Coalescer
    fence: Fence
    tenancy: Tenancy
    park: Parking
    _source: Source | None
    _revoking: set[TopicPartition]
    _assigning: set[TopicPartition]
    _paused: set[PauseReason]
    _warm_until: dict[TopicPartition, int]
    _dlq_tasks: defaultdict[TopicPartition, dict[asyncio.Task[None], None]]
    _commit_lock: asyncio.Lock
    _commit_soon: asyncio.Event

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
        self._revoking |= partitions
        self.park.freeze(partitions)
        try:
            await self.park.interrupt()
            await self.tenancy.drain(partitions, timeout=bound)
            for key in self.coalescer.drop_partitions(partitions):
                current = self.coalescer.current(key)
                if current is not None:
                    self.tenancy.submit(key, current.tp, current.tenant)
            tasks = [t for tp in sorted(partitions) for t in self._dlq_tasks.get(tp, ())]
            if tasks:
                left = max(0.1, bound - (self.clock.monotonic() - started))
                _, late = await asyncio.wait(tasks, timeout=left)
                for task in late:
                    task.cancel()
            for tp in sorted(partitions):
                await self.park.settle(tp, max(0.1, bound - (self.clock.monotonic() - started)))
            await self.commit(only=partitions, handover=True)
        finally:
            self._revoking -= partitions
            for tp in partitions:
                self.tracker.drop(tp)
                self.fence.drop(tp)
                self.park.revoke(tp)
                self._warm_until.pop(tp, None)
                self._dlq_tasks.pop(tp, None)
                for gauge in (self.metrics.lag, self.metrics.committed):
                    with contextlib.suppress(KeyError):
                        gauge.remove(tp.topic, str(tp.partition))
        log.info(
            "partitions_revoked",
            partitions=sorted(str(t) for t in partitions),
            took_s=round(self.clock.monotonic() - started, 3),
        )

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Own ``partitions``: hold them until the previous owner's requests can no longer land, take
        a lease by committing at once, and re-apply the pause."""
        if self._source is None:
            return
        # Paused before the first await: the consumer starts fetching from the committed offset at
        # once, and records fetched before the warm-up seek below would come first, then again.
        self._assigning |= partitions
        self._source.pause(partitions)
        self.tenancy.undrain(partitions)
        layout = self._source.partition_counts()
        self.tenancy.set_layout(layout)
        self.park.set_layout(layout)
        now = self.clock.wall()
        lookup_ok = True
        try:
            committed = await self._source.committed(partitions)
        except Exception:  # unknown: assume the previous owner may still be sending for a full lease
            lookup_ok = False
            committed = {}
            worst = now + self.fence.lease_seconds + self.fence.settle_seconds
            metas = dict.fromkeys(partitions, CommitMeta(worst))
        else:
            metas = {tp: _meta(committed, tp) for tp in partitions}
        holds = {tp: meta.settle_by for tp, meta in metas.items()}
        warmup = self.settings.kafka.warmup_records
        for tp in sorted(partitions):
            self.fence.assign(tp, holds[tp])
            await self.park.assign(tp, metas[tp])
            if tp in committed:
                offset = committed[tp][0]
                self.tracker.partition(tp).start_at(offset)
                if warmup and offset > 0:
                    self._warm_until[tp] = offset
                    self._source.seek(tp, max(0, offset - warmup))
        if lookup_ok:
            await self._start_uncommitted(partitions - committed.keys())
        else:
            self.park.blind(partitions)
        self._assigning -= partitions
        if not self._paused:
            self._source.resume(partitions)
        self.metrics.ready = True
        self._commit_soon.set()
        held = {str(tp): round(until - now, 1) for tp, until in sorted(holds.items()) if until > now}
        log.info(
            "partitions_assigned",
            partitions=sorted(str(t) for t in partitions),
            held_s=held or None,
            budget_share_per_second=round(self.tenancy.rate, 3),
        )

    async def _start_uncommitted(self, partitions: set[TopicPartition]) -> None:
        """Partitions the group never committed start at the consumer's position, so the commit that
        follows the assignment covers them too: each partition's lease (and its share of the budget
        ticks) comes only from a commit of its own, with its settle-by, and a partition not yet read
        would otherwise leave its ticks unused until its first record (a quarter of the budget, with
        four partitions and a backlog read one partition at a time)."""
        if not partitions or self._source is None:
            return
        ordered = sorted(partitions)
        positions = await asyncio.gather(*(self._source.position(tp) for tp in ordered))
        for tp, position in zip(ordered, positions, strict=True):
            if position is not None:
                self.tracker.partition(tp).start_at(position)

    # -- commits and back-pressure ------------------------------------------------------------
    async def commit(self, only: set[TopicPartition] | None = None, handover: bool = False) -> None:
        """Commit the watermark of every owned partition (``only`` those given), with the settle-by
        metadata; a periodic commit also renews the send lease, a hand-over ends it."""
        if self._source is None:
            return
        async with self._commit_lock:
            owned = (self._source.assignment() if only is None else only) - (
                set() if handover else self._revoking
            )
            owned -= self.park.blinded
            offsets = self.tracker.to_commit(owned)
            if not offsets:
                return
            lease_until = None if handover else self.clock.wall() + self.fence.lease_seconds
            with_meta = {
                tp: (offset, self._metadata(tp, lease_until, offset)) for tp, offset in offsets.items()
            }
            if not await self._source.commit(with_meta):
                return
            self.tracker.mark_committed(offsets)
            for tp, offset in offsets.items():
                self.metrics.committed.labels(tp.topic, str(tp.partition)).set(offset)
                if lease_until is not None:
                    self.fence.renew(tp, lease_until)

    def _metadata(self, tp: TopicPartition, lease_until: float | None, offset: int) -> str:
        """What a commit of ``tp`` at ``offset`` carries: its settle-by and its parking state."""
        return commit_metadata(self.park.meta(tp, self.fence.settle_by(tp, lease_until), offset))

    async def _read_park_state(self) -> None:
        """Read again the commit metadata an assignment could not read (see ``Parking.blind``)."""
        assert self._source is not None
        blind = self.park.blinded & self._source.assignment()
        try:
            committed = await self._source.committed(blind)
        except Exception:
            return
        for tp in sorted(blind & self.park.blinded):
            await self.park.assign(tp, _meta(committed, tp))
            self.park.reassess(tp)


def _meta(committed: Committed, tp: TopicPartition) -> CommitMeta:
    """What the last commit of ``tp`` carried (nothing: never committed)."""
    return parse_commit_metadata(committed[tp][1]) if tp in committed else CommitMeta()


__all__ = ["Membership", "PauseReason"]
