"""Membership, driven through its callbacks and commits with a group member of our own: how a partition's
last commit decides what happens to it (held, waiting, warmed up and looked ahead), what a refused
commit costs, that a partition being assigned is never read before its re-read is set up, how a
revoke hands a partition over, when a partition's jobs linger, and the horizon a member reads to."""

from __future__ import annotations

import asyncio
from random import Random
from typing import Any

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import DeliverySettings, KafkaSettings, Settings, SinkSettings
from connector.fence import Fence
from connector.membership import Membership, PauseReason
from connector.metadata import CommitMeta, decode, encode
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.pacing import Pacer
from connector.park import Parking
from connector.structs import TopicPartition
from connector.tenancy import Tenancy
from tests.fakes import Member, Vendor

TP0 = TopicPartition("orders", 0)
TP1 = TopicPartition("orders", 1)


def membership(delivery: dict[str, Any] | None = None, **kafka: Any) -> tuple[Membership, Fence, Metrics]:
    settings = Settings(kafka=KafkaSettings(**kafka), delivery=DeliverySettings(**(delivery or {})))
    metrics = Metrics()
    fence = Fence(SYSTEM_CLOCK, lease_seconds=10.0, settle_seconds=0.0)
    coalescer = Coalescer()
    assignment = Assignment()

    def vendor(settings: SinkSettings, pacer: Pacer) -> Vendor:
        return Vendor()

    tenancy = Tenancy(settings, vendor, metrics, clock=SYSTEM_CLOCK, rng=Random(1), fence=fence)
    park = Parking(settings, None, assignment, coalescer, tenancy, metrics, clock=SYSTEM_CLOCK, rng=Random(1))
    member = Membership(
        settings,
        metrics,
        assignment,
        clock=SYSTEM_CLOCK,
        fence=fence,
        coalescer=coalescer,
        tenancy=tenancy,
        park=park,
    )
    return member, fence, metrics


async def assigned(m: Membership, source: Member, partitions: set[TopicPartition]) -> None:
    m.attach(source)
    source.owned |= partitions
    await m.on_assigned(partitions)


async def test_a_refused_commit_costs_only_the_partition_it_was_refused_for() -> None:
    """The broker refuses a whole commit for one partition's sake (its metadata too large, say): each
    partition is then committed alone, and the others keep their lease."""
    m, fence, _ = membership()
    source = Member()
    await assigned(m, source, {TP0, TP1})
    source.refuses = {TP1}
    await m.commit()
    assert TP0 in source.stored
    assert TP1 not in source.stored
    assert fence.may_send(TP0)
    assert not fence.may_send(TP1)


async def test_metadata_of_a_newer_release_holds_the_partition_and_is_never_overwritten() -> None:
    """A must-understand field this release does not know: the partition is neither read nor committed
    (its metadata stays for a member that can read it), and says so in a gauge."""
    m, fence, metrics = membership()
    newer = "settle_by=1.000;v=3;!fence=epoch:4"
    source = Member({TP0: (40, newer), TP1: (7, encode(CommitMeta(1.0)))})
    await assigned(m, source, {TP0, TP1})
    part = m.assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.HELD
    assert TP0 in source.paused
    assert TP1 not in source.paused
    await m.commit()
    assert source.stored[TP0] == (40, newer)
    assert not fence.may_send(TP0)
    assert metrics.registry.get_sample_value("connector_partitions_held") == 1


async def test_a_partition_whose_last_commit_cannot_be_read_waits_and_is_asked_again() -> None:
    """The broker cannot be asked at assignment: the partition stays paused and uncommitted (its
    previous owner may still be sending, its parking state is unknown) until a later turn can read it."""
    m, fence, _ = membership()
    source = Member({TP0: (5, encode(CommitMeta(1.0)))})
    source.lookups_fail = True
    await assigned(m, source, {TP0})
    part = m.assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.ASSIGNING
    assert TP0 in source.paused
    await m.tick()
    assert source.stored[TP0] == (5, encode(CommitMeta(1.0))), "not committed over"
    source.lookups_fail = False
    await m.tick()
    assert part.status is PartitionStatus.WARMING, "started: re-reading before it sends"
    assert TP0 not in source.paused
    assert fence.may_send(TP0)


async def test_a_partition_being_assigned_is_not_resumed_when_the_read_ahead_releases() -> None:
    """Found by the simulation (seed 3576 of the soak): the read-ahead bound, releasing meanwhile,
    resumed every owned partition, also one whose re-read was not set up yet; its records came first
    from the committed offset, and a late, older event was sent."""
    m, _, _ = membership()
    source = Member({TP0: (5, encode(CommitMeta(1.0)))})
    source.lookup_gate = asyncio.Event()
    m.attach(source)
    m.set_paused(PauseReason.READ_AHEAD, True)
    source.owned.add(TP0)
    assigning = asyncio.create_task(m.on_assigned({TP0}))
    await asyncio.sleep(0.01)
    m.set_paused(PauseReason.READ_AHEAD, False)
    assert TP0 in source.paused
    source.lookup_gate.set()
    await assigning
    assert TP0 not in source.paused


async def test_a_new_owner_reads_ahead_as_far_as_its_predecessor_may_have_read() -> None:
    """The previous owner announced its read position (``read_to``): the new owner re-reads from the
    warm-up's start to ``kafka.lookahead_records`` past it before sending, bounded by the log's end,
    and announces that position itself until it has read past it."""
    m, _, _ = membership(warmup_records=100, lookahead_records=50)
    source = Member({TP0: (1_000, encode(CommitMeta(1.0, read_to=1_200)))}, ends={TP0: 5_000})
    await assigned(m, source, {TP0})
    part = m.assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.WARMING
    assert (source.sought[TP0], part.warm_until) == (900, 1_250)
    assert part.lookahead is not None
    assert (part.lookahead.start, part.lookahead.end) == (1_000, 1_250)
    await m.commit()
    assert "read_to=1200" in source.stored[TP0][1]


async def test_a_member_reads_no_further_than_its_last_commit_allows() -> None:
    """The horizon: ``kafka.lookahead_records`` past the read position its last commit announced, and a
    commit is asked for half-way there."""
    m, _, _ = membership(lookahead_records=20, warmup_records=0)
    source = Member({TP0: (10, encode(CommitMeta(1.0)))}, ends={TP0: 10})
    await assigned(m, source, {TP0})
    part = m.assignment.get(TP0)
    assert part is not None
    assert part.status is PartitionStatus.OWNED
    assert m.horizon(part) == float("inf"), "no lease yet: nothing is sent before the first commit"
    await m.commit()
    assert m.horizon(part) == 30
    m.commit_soon.clear()
    assert not m.near_horizon(part, 19)
    assert m.near_horizon(part, 20)


async def test_a_revoke_hands_the_partition_over_and_forgets_it() -> None:
    """Revoked, a partition is committed once more as a hand-over (no lease: its settle-by says when
    our requests for it can no longer land, not a lease ahead), then forgotten: no longer sent for, no
    longer committed. The partition kept is not touched."""
    m, fence, _ = membership()
    source = Member({TP0: (5, encode(CommitMeta(1.0))), TP1: (7, encode(CommitMeta(1.0)))})
    await assigned(m, source, {TP0, TP1})
    await m.commit()
    assert decode(source.stored[TP0][1]).meta.settle_by > SYSTEM_CLOCK.wall(), "a lease ahead"
    await m.on_revoked({TP0})
    assert decode(source.stored[TP0][1]).meta.settle_by < SYSTEM_CLOCK.wall(), "handed over"
    assert source.stored[TP0][0] == 5
    assert m.assignment.partitions() == {TP1}
    assert not fence.may_send(TP0)
    assert fence.may_send(TP1)
    source.stored[TP0] = (0, "someone else's")
    await m.commit()
    assert source.stored[TP0] == (0, "someone else's"), "not committed once revoked"


async def test_on_stop_every_partition_is_handed_over_except_a_held_one() -> None:
    """Stopping: every partition is committed as a hand-over (a held one keeps the newer release's
    commit), and from then on the fence lets nothing be sent (the next owners may send at once)."""
    m, fence, _ = membership()
    newer = "settle_by=1.000;v=3;!fence=epoch:4"
    source = Member({TP0: (40, newer), TP1: (7, encode(CommitMeta(1.0)))})
    await assigned(m, source, {TP0, TP1})
    await m.commit()
    assert fence.may_send(TP1), "a lease while it runs"
    assert m.stop_all() == {TP0, TP1}
    held, stopping = m.assignment.get(TP0), m.assignment.get(TP1)
    assert held is not None
    assert stopping is not None
    assert (held.status, stopping.status) == (PartitionStatus.HELD, PartitionStatus.REVOKING)
    await m.hand_over()
    assert source.stored[TP0] == (40, newer)
    assert decode(source.stored[TP1][1]).meta.settle_by < SYSTEM_CLOCK.wall()
    assert fence.partitions() == []
    assert not fence.may_send(TP1), "nothing more is sent once handed over"


async def test_a_partition_behind_its_log_end_makes_its_jobs_linger_unless_reading_is_paused() -> None:
    """A record not yet read while reading goes on: a newer event of its orders may be among them, its
    jobs linger. Never while reading is paused (a lingering job must never be what holds reading
    back), nor for a partition not owned; caught up, never."""
    m, _, _ = membership(warmup_records=0)
    source = Member({TP0: (10, encode(CommitMeta(1.0)))}, ends={TP0: 10})
    await assigned(m, source, {TP0})
    assert not m.behind(TP0), "caught up"
    source.ends[TP0] = 11
    assert m.behind(TP0), "one record not yet read"
    source.ends[TP0] = 20_000
    m.set_paused(PauseReason.READ_AHEAD, True)
    assert not m.behind(TP0)
    m.set_paused(PauseReason.READ_AHEAD, False)
    assert m.behind(TP0)
    assert not m.behind(TP1)


async def test_lingering_jobs_wake_when_reading_caught_up_or_is_paused_not_before() -> None:
    """A job waits in ``caught_up`` (no poll): woken by ``read_progressed`` once its partition is no
    longer behind, or by a pause of reading; else after its timeout. It makes no task of its own
    (one per lingering job, under many shops, is measurable CPU)."""
    m, _, _ = membership(warmup_records=0)
    source = Member({TP0: (10, encode(CommitMeta(1.0)))}, ends={TP0: 10})
    await assigned(m, source, {TP0})
    source.ends[TP0] = 500
    loop = asyncio.get_running_loop()
    tasks = len(asyncio.all_tasks())
    waiting = asyncio.create_task(m.caught_up(TP0, timeout=30.0))
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == tasks + 1, "a lingering job waits in its own task, no other"
    m.read_progressed()
    await asyncio.sleep(0.01)
    assert not waiting.done(), "still behind: still waiting"
    source.ends[TP0] = 10
    m.read_progressed()
    await asyncio.wait_for(waiting, 1.0)
    source.ends[TP0] = 500
    paused = asyncio.create_task(m.caught_up(TP0, timeout=30.0))
    await asyncio.sleep(0.01)
    m.set_paused(PauseReason.READ_AHEAD, True)
    await asyncio.wait_for(paused, 1.0)
    m.set_paused(PauseReason.READ_AHEAD, False)
    started = loop.time()
    await m.caught_up(TP0, timeout=0.05)
    assert loop.time() - started >= 0.05, "behind, nobody told: the timeout"


async def test_a_lag_allowed_by_linger_lag_records_does_not_linger() -> None:
    """``delivery.linger_lag_records`` (5,000): that many records behind still counts as caught up."""
    settings_lag = {"linger_lag_records": 5_000}
    m, _, _ = membership(warmup_records=0, delivery=settings_lag)
    source = Member({TP0: (10, encode(CommitMeta(1.0)))}, ends={TP0: 10})
    await assigned(m, source, {TP0})
    source.ends[TP0] = 5_010
    assert not m.behind(TP0), "5,000 behind: not more"
    source.ends[TP0] = 5_011
    assert m.behind(TP0)


async def test_a_warm_up_whose_records_are_gone_ends_once_the_consumer_passed_its_end() -> None:
    """Retention deleted what the warm-up was to re-read: once the consumer's position passed the
    warm-up's end, with no fetched batch in hand, it is over, and reading goes back to the committed
    offset, for real."""
    m, _, _ = membership(warmup_records=100, lookahead_records=50)
    source = Member({TP0: (1_000, encode(CommitMeta(1.0, read_to=1_000)))}, ends={TP0: 5_000})
    await assigned(m, source, {TP0})
    part = m.assignment.get(TP0)
    assert part is not None
    assert (part.status, part.warm_until) == (PartitionStatus.WARMING, 1_050)
    source.positions[TP0] = 1_049
    assert not await m.warm_done(part)
    source.positions[TP0] = 1_050
    with m.handling():
        assert not await m.warm_done(part), "a batch in hand: positions are ahead of what was handled"
    assert await m.warm_done(part)
    assert part.status is PartitionStatus.OWNED
    assert source.sought[TP0] == 1_000


async def test_a_member_at_its_horizon_pauses_the_partition_until_its_next_commit() -> None:
    m, _, _ = membership(lookahead_records=20, warmup_records=0)
    source = Member({TP0: (10, encode(CommitMeta(1.0)))}, ends={TP0: 10})
    await assigned(m, source, {TP0})
    await m.commit()
    part = m.assignment.get(TP0)
    assert part is not None
    m.commit_soon.clear()
    m.at_horizon(part)
    assert TP0 in source.paused
    assert m.commit_soon.is_set()
    m.set_paused(PauseReason.READ_AHEAD, False)
    assert TP0 in source.paused, "not resumed by another pause ending"
    await m.commit()
    assert TP0 not in source.paused
