"""The commit watermark: never past an unresolved offset, whatever the completion order."""

from __future__ import annotations

import bisect
import heapq
import random

from hypothesis import given
from hypothesis import strategies as st

from connector.offsets import PartitionOffsets


def test_nothing_tracked_commits_nothing() -> None:
    """A partition that never saw an event has nothing to commit."""
    assert PartitionOffsets().committable() is None


def test_committable_is_first_unresolved_offset() -> None:
    """Offsets resolved out of order: the watermark waits for the oldest."""
    part = PartitionOffsets()
    for offset in (5, 6, 7):
        part.track(offset)
    part.resolve(7)
    part.resolve(6)
    assert part.committable() == 5
    part.resolve(5)
    assert part.committable() == 8


def test_gaps_in_offsets_are_committed_past() -> None:
    """Compacted topics and transaction markers leave gaps; the watermark moves past them."""
    part = PartitionOffsets()
    part.track(10)
    part.track(20)
    part.resolve(10)
    assert part.committable() == 20
    part.resolve(20)
    assert part.committable() == 21


def test_resolving_twice_or_unknown_is_a_no_op() -> None:
    """A late or duplicate resolution changes nothing."""
    part = PartitionOffsets()
    part.track(1, size=10)
    assert part.resolve(1)
    assert not part.resolve(1)
    assert not part.resolve(99)
    assert part.unresolved == 0
    assert part.unresolved_bytes == 0


@given(
    st.integers(min_value=1, max_value=60).flatmap(
        lambda n: st.tuples(st.just(n), st.permutations(range(n)), st.lists(st.integers(1, 3), min_size=n))
    )
)
def test_watermark_never_passes_an_unresolved_offset(case: tuple[int, list[int], list[int]]) -> None:
    """For any completion order (with gaps between offsets), committable == oldest unresolved."""
    n, order, gaps = case
    offsets, offset = [], 0
    for gap in gaps[:n]:
        offset += gap
        offsets.append(offset)
    part = PartitionOffsets()
    for o in offsets:
        part.track(o)
    resolved: set[int] = set()
    for index in order:
        part.resolve(offsets[index])
        resolved.add(offsets[index])
        pending = [o for o in offsets if o not in resolved]
        expected = pending[0] if pending else offsets[-1] + 1
        assert part.committable() == expected


def test_a_long_backlog_compacts_and_keeps_the_watermark_exact() -> None:
    """20,000 offsets with gaps, a long head resolved first (forcing compactions of the kept arrays),
    the rest in a shuffled order: after every step the committable offset is the first unresolved one
    and every offset from it to the last is held, as a plain reference says."""
    rng = random.Random(7)
    part = PartitionOffsets()
    offsets = sorted(rng.sample(range(60_000), 20_000))
    for offset in offsets:
        part.track(offset)
    rest = offsets[12_000:]
    rng.shuffle(rest)
    pending = [*offsets]  # a min-heap with lazy deletion
    done: set[int] = set()
    for offset in offsets[:12_000] + rest:
        assert part.resolve(offset)
        done.add(offset)
        while pending and pending[0] in done:
            heapq.heappop(pending)
        want = pending[0] if pending else offsets[-1] + 1
        assert part.committable() == want
        assert part.held == len(offsets) - bisect.bisect_left(offsets, want)
    assert (part.unresolved, part.held) == (0, 0)
