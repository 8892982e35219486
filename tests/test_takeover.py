"""Takeover, driven through its public surface with a group member of our own: what a partition's last
commit makes of it (held, waiting, started at the consumer's position, re-read), and when its re-read
is over."""

from __future__ import annotations

import asyncio
from random import Random

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import KafkaSettings, Settings
from connector.fence import Fence
from connector.metadata import CommitMeta, encode
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.park import Parking
from connector.source import Committed
from connector.structs import Record, TopicPartition
from connector.takeover import Takeover
from connector.tenancy import Tenancy

TP0 = TopicPartition("orders", 0)
TP1 = TopicPartition("orders", 1)


class Member:
    """The group member partitions are taken over from: their last commits, log ends, seeks and the
    consumer's positions."""

    def __init__(self, committed: Committed | None = None, ends: dict[TopicPartition, int] | None = None):
        self.stored: Committed = dict(committed or {})
        self.ends = ends or {}
        self.positions: dict[TopicPartition, int] = {}
        self.sought: dict[TopicPartition, int] = {}
        self.lookups_fail = False
        self.lookups = 0
        self.answer = asyncio.Event()  # cleared: a lookup waits until it is set
        self.answer.set()

    async def fetch(self, timeout_ms: int) -> list[Record]:
        return []

    def assignment(self) -> set[TopicPartition]:
        return set()

    def log_end(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    def partition_counts(self) -> dict[str, int]:
        return {"orders": 2}

    def pause(self, partitions: set[TopicPartition]) -> None:
        pass

    def resume(self, partitions: set[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset
        self.positions[tp] = offset

    async def commit(self, offsets: Committed) -> bool:
        raise AssertionError("a take-over commits nothing")

    async def committed(self, partitions: set[TopicPartition]) -> Committed:
        self.lookups += 1
        await self.answer.wait()
        if self.lookups_fail:
            raise ConnectionError("broker unreachable")
        return {tp: self.stored[tp] for tp in partitions if tp in self.stored}

    async def position(self, tp: TopicPartition) -> int | None:
        return self.positions.get(tp, 0)


def takeover(**kafka: object) -> tuple[Takeover, Assignment, Fence, Metrics]:
    settings = Settings(kafka=KafkaSettings(**kafka))  # type: ignore[arg-type]
    metrics = Metrics()
    fence = Fence(SYSTEM_CLOCK, lease_seconds=10.0, settle_seconds=0.0)
    assignment = Assignment()

    def no_sink(*_: object) -> object:
        raise AssertionError("no vendor here")

    tenancy = Tenancy(settings, no_sink, metrics, clock=SYSTEM_CLOCK, rng=Random(1), fence=fence)  # type: ignore[arg-type]
    park = Parking(
        settings, None, assignment, Coalescer(), tenancy, metrics, clock=SYSTEM_CLOCK, rng=Random(1)
    )
    part = Takeover(settings, metrics, assignment, clock=SYSTEM_CLOCK, fence=fence, park=park)
    return part, assignment, fence, metrics


async def take(t: Takeover, assignment: Assignment, source: Member, *tps: TopicPartition) -> None:
    t.attach(source)
    for tp in tps:
        assignment.add(tp)
    await t.read_last_commits(set(tps))


async def test_a_partition_is_re_read_up_to_its_predecessors_lookahead_then_read_from_its_commit() -> None:
    """From ``warmup_records`` before the committed offset to ``lookahead_records`` past the read
    position the last commit announced; over once the consumer passed that with no batch in hand, and
    then read again from the committed offset."""
    t, assignment, fence, _ = takeover(warmup_records=100, lookahead_records=50)
    source = Member({TP0: (1_000, encode(CommitMeta(1.0, read_to=1_200)))}, ends={TP0: 5_000})
    await take(t, assignment, source, TP0)
    part = assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.WARMING
    assert (source.sought[TP0], part.warm_until) == (900, 1_250)
    assert fence.window(TP0) is not None
    assert not await t.warm_over(TP0), "nothing of the re-read handled yet"
    source.positions[TP0] = 1_250
    with t.handling():
        assert not await t.warm_done(part), "a batch in hand: the position is ahead of it"
    assert await t.warm_over(TP0)
    assert part.status is PartitionStatus.OWNED
    assert source.sought[TP0] == 1_000, "read again, for real, from the committed offset"


async def test_a_re_read_ends_at_the_log_end_when_the_announced_records_are_not_there() -> None:
    """Fewer records than announced (or gone by retention): the re-read is bounded by the log end."""
    t, assignment, _, _ = takeover(warmup_records=10, lookahead_records=50)
    source = Member({TP0: (100, encode(CommitMeta(1.0, read_to=100)))}, ends={TP0: 120})
    await take(t, assignment, source, TP0)
    part = assignment.get(TP0)
    assert part is not None
    assert part.warm_until == 120
    source.positions[TP0] = 120
    assert await t.warm_done(part)
    t.warmed(part)  # again: nothing more happens
    assert part.status is PartitionStatus.OWNED


async def test_a_commit_of_a_newer_release_holds_the_partition_and_is_counted_while_owned() -> None:
    """A must-understand field this release does not know: held (never sent for), in the gauge until
    the partition is no longer owned."""
    t, assignment, fence, metrics = takeover()
    source = Member({TP0: (40, "settle_by=1.000;v=3;!fence=epoch:4"), TP1: (7, encode(CommitMeta(1.0)))})
    await take(t, assignment, source, TP0, TP1)
    held, other = assignment.get(TP0), assignment.get(TP1)
    assert held is not None
    assert other is not None
    assert held.status is PartitionStatus.HELD
    assert other.status is not PartitionStatus.HELD
    assert not fence.may_send(TP0)
    assert metrics.registry.get_sample_value("connector_partitions_held") == 1
    assignment.drop(TP0)
    t.forget(TP0)
    t.count_held()
    assert metrics.registry.get_sample_value("connector_partitions_held") == 0


async def test_a_partition_whose_last_commit_cannot_be_read_waits_under_a_worst_case_hold() -> None:
    """The broker cannot be asked: the previous owner may send for a full lease yet; asked again, the
    partition starts."""
    t, assignment, fence, _ = takeover()
    source = Member({TP0: (5, encode(CommitMeta(1.0)))})
    source.lookups_fail = True
    await take(t, assignment, source, TP0)
    part = assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.ASSIGNING
    window = fence.window(TP0)
    assert window is not None
    assert window[0] > SYSTEM_CLOCK.wall() + 9, "held for a full lease"
    source.lookups_fail = False
    await t.read_last_commits({TP0})
    assert part.status is PartitionStatus.WARMING, "asked again: started, re-reading before it sends"
    assert part.start == 5


async def test_a_partition_is_started_once_when_asked_again_while_its_commit_is_being_read() -> None:
    """The commit loop asks again for partitions still being assigned while the assignment's own
    lookup is on its way: the second ask waits for the first and finds the partition started, so
    its parking state is taken up once (the upgrade test logged every partition's parked shops
    twice, two writer tokens for one partition)."""
    t, assignment, _, _ = takeover(warmup_records=10)
    source = Member({TP0: (50, encode(CommitMeta(1.0)))}, ends={TP0: 60})
    source.answer.clear()
    t.attach(source)
    assignment.add(TP0)
    first = asyncio.create_task(t.read_last_commits({TP0}))
    again = asyncio.create_task(t.read_last_commits({TP0}))  # the commit loop's turn
    await asyncio.sleep(0.01)
    source.answer.set()
    await asyncio.gather(first, again)
    part = assignment.get(TP0)
    assert part is not None
    assert part.start == 50
    assert source.lookups == 1, "asked again once started: nothing left to ask"


async def test_a_partition_never_committed_starts_at_the_consumers_position() -> None:
    """No commit of the group: started where the consumer is, so that a commit can take its lease."""
    t, assignment, _, _ = takeover()
    source = Member()
    source.positions[TP0] = 42
    await take(t, assignment, source, TP0)
    part = assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.OWNED
    assert part.start == 42
    assert part.offsets.committable() == 42, "so the commit that follows covers it too"
