"""Committer, driven through its public surface with a group member of our own: what a commit writes,
the lease it renews (or, handing over, does not), the per-partition fallback when the broker refuses a
whole commit, and that it says when a partition paused at its horizon may read again."""

from __future__ import annotations

from random import Random

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.committer import Committer
from connector.config import KafkaSettings, Settings
from connector.fence import Fence
from connector.metadata import decode
from connector.metrics import Metrics
from connector.ownership import Assignment, OwnedPartition, PartitionStatus
from connector.park import Parking
from connector.source import Committed
from connector.structs import Record, TopicPartition
from connector.tenancy import Tenancy

TP0 = TopicPartition("orders", 0)
TP1 = TopicPartition("orders", 1)


class Member:
    """The group member commits go through; a commit naming a partition in ``refuses`` is refused
    with every partition in the same request (as the broker does)."""

    def __init__(self) -> None:
        self.stored: Committed = {}
        self.requests = 0
        self.refuses: set[TopicPartition] = set()

    async def fetch(self, timeout_ms: int) -> list[Record]:
        return []

    def assignment(self) -> set[TopicPartition]:
        return set()

    def log_end(self, tp: TopicPartition) -> int | None:
        return None

    def partition_counts(self) -> dict[str, int]:
        return {"orders": 2}

    def pause(self, partitions: set[TopicPartition]) -> None:
        pass

    def resume(self, partitions: set[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def commit(self, offsets: Committed) -> bool:
        self.requests += 1
        if offsets.keys() & self.refuses:
            return False
        self.stored.update(offsets)
        return True

    async def committed(self, partitions: set[TopicPartition]) -> Committed:
        return {}

    async def position(self, tp: TopicPartition) -> int | None:
        return 0


def committer() -> tuple[Committer, Assignment, Fence, Member]:
    settings = Settings(kafka=KafkaSettings(lookahead_records=20))
    metrics = Metrics()
    fence = Fence(SYSTEM_CLOCK, lease_seconds=10.0, settle_seconds=0.0)
    assignment = Assignment()

    def no_sink(*_: object) -> object:
        raise AssertionError("no vendor here")

    tenancy = Tenancy(settings, no_sink, metrics, clock=SYSTEM_CLOCK, rng=Random(1), fence=fence)  # type: ignore[arg-type]
    park = Parking(
        settings, None, assignment, Coalescer(), tenancy, metrics, clock=SYSTEM_CLOCK, rng=Random(1)
    )
    member = Member()
    part = Committer(settings, metrics, assignment, clock=SYSTEM_CLOCK, fence=fence, park=park)
    part.attach(member)
    return part, assignment, fence, member


def owned(assignment: Assignment, fence: Fence, tp: TopicPartition, at: int) -> OwnedPartition:
    """``tp`` owned, read from ``at`` with nothing outstanding, under no inherited hold."""
    part = assignment.add(tp)
    part.status = PartitionStatus.OWNED
    part.offsets.start_at(at)
    fence.assign(tp, 0.0)
    return part


async def test_a_commit_writes_each_watermark_with_its_metadata_and_renews_the_lease() -> None:
    c, assignment, fence, member = committer()
    part = owned(assignment, fence, TP0, 7)
    assert not fence.may_send(TP0), "no lease before the first commit"
    assert not await c.commit()
    offset, text = member.stored[TP0]
    assert offset == 7
    assert decode(text).meta.settle_by > SYSTEM_CLOCK.wall(), "the lease it takes, announced"
    assert part.committed == 7
    assert fence.may_send(TP0)


async def test_a_hand_over_commits_without_a_lease() -> None:
    c, assignment, fence, member = committer()
    owned(assignment, fence, TP0, 3)
    part = owned(assignment, fence, TP1, 4)
    part.status = PartitionStatus.REVOKING
    await c.commit(only={TP1}, handover=True)
    assert set(member.stored) == {TP1}, "only the partition handed over"
    assert not fence.may_send(TP1)


async def test_a_refused_commit_costs_only_the_partition_it_was_refused_for() -> None:
    c, assignment, fence, member = committer()
    owned(assignment, fence, TP0, 1)
    owned(assignment, fence, TP1, 2)
    member.refuses = {TP1}
    await c.commit()
    assert member.requests == 3, "once for both, then once each"
    assert TP0 in member.stored
    assert TP1 not in member.stored
    assert fence.may_send(TP0)
    assert not fence.may_send(TP1)


async def test_a_partition_paused_at_its_horizon_is_released_by_the_commit_that_moves_it_on() -> None:
    c, assignment, fence, _ = committer()
    part = owned(assignment, fence, TP0, 5)
    assert not await c.commit(), "nothing was at its horizon"
    part.at_horizon = True
    assert await c.commit(), "the caller re-applies the pauses"
    assert not part.at_horizon
    assert part.announced is not None
