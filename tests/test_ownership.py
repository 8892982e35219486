"""Owned partitions: one object per partition holds its whole state, and the commit plan is a pure
function of those objects (which offset and metadata each partition gets, and which is left out)."""

from __future__ import annotations

from connector.metadata import CommitMeta
from connector.ownership import Assignment, PartitionStatus
from connector.structs import TopicPartition

TP = TopicPartition("orders", 0)
OTHER = TopicPartition("orders", 1)


def _owned(assignment: Assignment, tp: TopicPartition, start: int) -> None:
    part = assignment.add(tp)
    part.status = PartitionStatus.OWNED
    part.start = start
    part.offsets.start_at(start)


def test_a_partition_is_committed_at_its_first_unresolved_offset_with_what_it_read() -> None:
    """Every owned partition is committed each time (the commit renews the send lease): at its first
    unresolved offset, announcing the settle-by it is given and how far it was read."""
    owned = Assignment()
    _owned(owned, TP, 10)
    _owned(owned, OTHER, 40)
    part = owned.get(TP)
    assert part is not None
    for offset in (10, 11, 12):
        part.offsets.track(offset)
    part.offsets.resolve(10)
    part.offsets.resolve(12)
    plan = owned.commit_plan({TP: 5.0, OTHER: 6.0})
    assert plan.offsets[TP] == (11, CommitMeta(settle_by=5.0, read_to=13))
    assert plan.offsets[OTHER] == (40, CommitMeta(settle_by=6.0, read_to=40))
    assert plan.skipped == {}


def test_a_partition_not_started_or_held_is_left_out_and_says_why() -> None:
    """Its last commit is not known yet (assigning), or cannot be used (held): committing it would
    overwrite what a member that can read it needs."""
    owned = Assignment()
    owned.add(TP)
    held = owned.add(OTHER)
    held.status, held.problem = PartitionStatus.HELD, "field '!x' of a newer version is not understood"
    plan = owned.commit_plan({})
    assert plan.offsets == {}
    assert plan.skipped == {TP: "assigning", OTHER: "held: field '!x' of a newer version is not understood"}


def test_a_partition_being_revoked_is_committed_only_by_the_hand_over() -> None:
    owned = Assignment()
    _owned(owned, TP, 3)
    part = owned.get(TP)
    assert part is not None
    part.status = PartitionStatus.REVOKING
    assert owned.commit_plan({}).skipped == {TP: "revoking"}
    assert owned.commit_plan({}, handover=True).offsets[TP][0] == 3


def test_the_previous_owners_read_position_is_announced_until_this_member_passes_it() -> None:
    """What the previous owner may have sent lies ahead of the committed offset until this member has
    read past it: a commit made before that announces the previous owner's position, so that the next
    owner still reads that far ahead before it sends."""
    owned = Assignment()
    _owned(owned, TP, 100)
    part = owned.get(TP)
    assert part is not None
    part.inherited = CommitMeta(settle_by=1.0, read_to=250)
    assert owned.commit_plan({}).offsets[TP][1].read_to == 250
    for offset in range(100, 300):
        part.offsets.track(offset)
    assert owned.commit_plan({}).offsets[TP][1].read_to == 300


def test_parking_state_not_known_here_is_carried_forward_unchanged() -> None:
    """A partition whose parking state this member does not run (no parking topic reachable, a single
    shop) passes on what its last commit said, and a newer version's fields too: nothing is dropped."""
    owned = Assignment()
    _owned(owned, TP, 7)
    part = owned.get(TP)
    assert part is not None
    part.inherited = CommitMeta(
        settle_by=1.0,
        park_partition=2,
        park_from=4,
        parked=("acme",),
        replay_from=(("acme", 4),),
        tokens=(("0badcafe", 7),),
        extra=(("zone", "eu"),),
    )
    meta = owned.commit_plan({TP: 9.0}).offsets[TP][1]
    assert (meta.park_partition, meta.park_from, meta.parked) == (2, 4, ("acme",))
    assert (meta.replay_from, meta.tokens, meta.extra) == (
        (("acme", 4),),
        (("0badcafe", 7),),
        (("zone", "eu"),),
    )
    assert meta.settle_by == 9.0


def test_totals_count_every_owned_partition_and_forget_a_dropped_one() -> None:
    """Found by review (a DLQ write that never succeeds): resolved offsets behind an unresolved one
    are still held in memory, so the read-ahead bound counts them; a revoked partition's stop counting."""
    owned = Assignment()
    _owned(owned, TP, 0)
    part = owned.get(TP)
    assert part is not None
    for offset in range(10):
        part.offsets.track(offset, size=10)
    for offset in range(1, 10):
        assert owned.resolve(TP, offset)
    assert (owned.unresolved, owned.held, owned.unresolved_bytes) == (1, 10, 10)
    assert not owned.resolve(OTHER, 0)
    owned.drop(TP)
    assert (owned.unresolved, owned.held, owned.unresolved_bytes) == (0, 0, 0)
    assert owned.commit_plan({}).offsets == {}


def test_the_oldest_unsynced_event_is_the_oldest_unresolved_of_any_partition() -> None:
    owned = Assignment()
    _owned(owned, TP, 0)
    _owned(owned, OTHER, 0)
    first, other = owned.get(TP), owned.get(OTHER)
    assert first is not None
    assert other is not None
    assert owned.oldest_unsynced_age(1_000.0) == 0.0, "nothing unresolved"
    first.offsets.track(0, timestamp=900.0)
    first.offsets.track(1, timestamp=950.0)
    other.offsets.track(0, timestamp=920.0)
    assert owned.oldest_unsynced_age(1_000.0) == 100.0
    owned.resolve(TP, 0)
    assert owned.oldest_unsynced_age(1_000.0) == 80.0


def test_what_a_partition_does_follows_its_status() -> None:
    """Read in the warm-up and once owned; sent for only once owned; committed from the warm-up on,
    to the hand-over; a partition assigning or held is none of these."""
    part = Assignment().add(TP)
    seen = {}
    for status in PartitionStatus:
        part.status = status
        seen[status] = (part.reading, part.sending, part.committable)
    assert seen == {
        PartitionStatus.ASSIGNING: (False, False, False),
        PartitionStatus.HELD: (False, False, False),
        PartitionStatus.WARMING: (True, False, True),
        PartitionStatus.OWNED: (True, True, True),
        PartitionStatus.REVOKING: (False, False, True),
    }
