"""The commits of a member's partitions: each one's watermark with its metadata (settle-by, read
position, parking state), under a send lease that a periodic commit renews and a hand-over ends.

:class:`Committer` is a part of :class:`~connector.membership.Membership`, which decides when to commit
(each commit loop turn, a revoke's hand-over, shutting down). It holds what one commit needs on its own:
the lock that keeps two commits from interleaving, the encoding of the metadata within its size budget,
and the fallback that commits partition by partition when the broker refuses a whole request for one
partition's sake (its metadata too large, say), so that one partition never blocks the others' leases.
What a commit that landed moves on (the committed offset, the announced read position, the lease) is
written to the partition's state; a partition paused at its horizon is released, and the caller told so
(it owns the pauses).
"""

from __future__ import annotations

import asyncio

from connector import metadata as wire
from connector.clock import Clock
from connector.config import Settings
from connector.fence import Fence
from connector.instruments import OffsetCommitted, PartitionHooks
from connector.logs import get_logger
from connector.ownership import Assignment
from connector.park import Parking
from connector.source import Committed, Source
from connector.structs import TopicPartition

log = get_logger("connector.membership")  # its events are logged as the membership's, as before


class Committer:
    """Commits owned partitions' watermarks with their metadata (module docstring)."""

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
        self._lock = asyncio.Lock()

    def attach(self, source: Source) -> None:
        """The group member the commits are made through."""
        self.source = source

    async def commit(self, only: set[TopicPartition] | None = None, handover: bool = False) -> bool:
        """Commit the watermark of every owned partition (``only`` those given), with its metadata; a
        periodic commit also renews the send lease, a hand-over ends it. A commit the broker refuses
        for one partition is made again partition by partition. True when a partition paused at its
        horizon was released by it (its pause is to be applied again)."""
        if self.source is None:
            return False
        released = False
        async with self._lock:
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
                return False
            done = [texts] if await self.source.commit(texts) else []
            if not done and len(texts) > 1:  # one partition's refusal must not cost the others
                done = [{tp: v} for tp, v in sorted(texts.items()) if await self.source.commit({tp: v})]
            for batch in done:
                for tp, (offset, _) in batch.items():
                    released |= self._committed(tp, offset, plan.offsets[tp][1], lease_until)
        return released

    def _committed(
        self, tp: TopicPartition, offset: int, meta: wire.CommitMeta, lease_until: float | None
    ) -> bool:
        part = self.assignment.get(tp)
        if part is None:
            return False
        part.committed = offset
        part.announced = meta.read_to
        self._hooks.offset_committed(OffsetCommitted(tp.topic, tp.partition, offset))
        if lease_until is not None:
            self.fence.renew(tp, lease_until)
        if part.at_horizon:
            part.at_horizon = False
            return True
        return False

    def _encode(self, tp: TopicPartition, meta: wire.CommitMeta) -> str | None:
        try:
            return wire.encode(meta, self.settings.kafka.metadata_max_bytes)
        except ValueError as exc:  # bounded by parking before it is written: never expected
            log.error("commit_metadata_too_large", partition=str(tp), error=str(exc))
            return None


__all__ = ["Committer"]
