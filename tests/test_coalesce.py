"""The coalescer: one call per key at a time, latest state wins, nothing older is ever sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from connector.coalesce import Coalescer, Resolution
from connector.decode import OrderChange, Record
from connector.offsets import TopicPartition

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def change(key: str, offset: int, version: int | None, body: str = "", partition: int = 0) -> OrderChange:
    updated = None if version is None else T0 + timedelta(seconds=version)
    digest = f"{key}:{version}:{body}".encode()
    return OrderChange(
        Record("t", partition, offset, key.encode(), b"{}"), key, "upsert", {}, updated, digest
    )


def test_first_change_of_a_key_starts_at_once() -> None:
    """A key with nothing in flight is sent immediately."""
    c = Coalescer()
    first = change("a", 0, 1)
    assert c.offer(first).start is first


def test_newer_change_replaces_the_waiting_one() -> None:
    """While a call is in flight, the newest change waits and older waiting ones are replaced."""
    c = Coalescer()
    c.offer(change("a", 0, 1))
    second, third = change("a", 1, 2), change("a", 2, 3)
    assert c.offer(second).resolved == ()
    offer = c.offer(third)
    assert offer.start is None
    assert offer.resolved == ((second, Resolution.REPLACED),)


def test_finish_starts_the_waiting_change() -> None:
    """When the call ends, the waiting change goes out next."""
    c = Coalescer()
    first, second = change("a", 0, 1), change("a", 1, 2)
    c.offer(first)
    c.offer(second)
    assert c.finish(first, delivered=True) is second
    assert c.finish(second, delivered=True) is None
    assert c.in_flight == 0


def test_change_older_than_the_one_sent_is_stale() -> None:
    """An event with an older updated_at than what was sent is skipped."""
    c = Coalescer()
    newer = change("a", 5, 10)
    c.offer(newer)
    c.finish(newer, delivered=True)
    older = change("a", 6, 3)
    assert c.offer(older).resolved == ((older, Resolution.STALE),)


def test_without_updated_at_a_lower_offset_is_stale() -> None:
    """Lacking updated_at, offsets within the partition decide (a redelivery after a rebalance)."""
    c = Coalescer()
    sent = change("a", 9, None, "x")
    c.offer(sent)
    c.finish(sent, delivered=True)
    replayed = change("a", 4, None, "y")
    assert c.offer(replayed).resolved == ((replayed, Resolution.STALE),)


def test_identical_payload_is_skipped() -> None:
    """A duplicate of the last payload accepted for the key costs no call."""
    c = Coalescer()
    first = change("a", 0, 1, "same")
    c.offer(first)
    c.finish(first, delivered=True)
    again = change("a", 1, 1, "same")
    assert c.offer(again).resolved == ((again, Resolution.IDENTICAL),)


def test_failed_call_does_not_count_as_sent() -> None:
    """After a failure, the same payload is not skipped as identical."""
    c = Coalescer()
    first = change("a", 0, 1, "p")
    c.offer(first)
    c.finish(first, delivered=False)
    again = change("a", 1, 1, "p")
    assert c.offer(again).start is again


def test_take_newer_swaps_in_the_waiting_change() -> None:
    """Before a retry, a newer waiting change is sent instead of the failing one."""
    c = Coalescer()
    first, second = change("a", 0, 1), change("a", 1, 2)
    c.offer(first)
    c.offer(second)
    assert c.take_newer(first) is second
    assert c.take_newer(second) is None
    assert c.waiting == 0


def test_drop_partitions_forgets_waiting_changes_of_revoked_partitions() -> None:
    """On revoke, waiting changes of the lost partitions are dropped unresolved."""
    c = Coalescer()
    c.offer(change("a", 0, 1, partition=0))
    waiting = change("a", 1, 2, partition=0)
    c.offer(waiting)
    assert c.drop_partitions({TopicPartition("t", 0)}) == [waiting]
    assert c.waiting == 0


def test_sent_memory_is_bounded() -> None:
    """The LRU of delivered payloads holds at most remember_keys keys."""
    c = Coalescer(remember_keys=2)
    for i, key in enumerate("abc"):
        ch = change(key, i, 1)
        c.offer(ch)
        c.finish(ch, delivered=True)
    assert c.offer(change("a", 9, 1)).start is not None  # "a" was evicted: not skipped


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=80), st.randoms())
def test_last_change_sent_per_key_is_the_latest_received(ops: list[tuple[str, bool]], rnd) -> None:  # type: ignore[no-untyped-def]
    """Any interleaving of arrivals and completions: per key, calls never overlap, never go back in
    time, and the last call made carries the latest version received."""
    c = Coalescer()
    versions: dict[str, int] = {}
    in_flight: dict[str, OrderChange] = {}
    sent: dict[str, list[int]] = {}

    def start(ch: OrderChange | None) -> None:
        if ch is not None:
            assert ch.external_id not in in_flight, "two calls in flight for one key"
            in_flight[ch.external_id] = ch

    def complete(key: str) -> None:
        ch = in_flight.pop(key)
        sent.setdefault(key, []).append(int((ch.updated_at - T0).total_seconds()))  # type: ignore[operator]
        start(c.finish(ch, delivered=True))

    offset = 0
    for key, arrive in ops:
        if arrive or key not in in_flight:
            versions[key] = versions.get(key, 0) + 1
            start(c.offer(change(key, offset, versions[key])).start)
            offset += 1
        else:
            complete(key)
    while in_flight:
        complete(rnd.choice(sorted(in_flight)))
    for key, latest in versions.items():
        assert sent[key] == sorted(sent[key]), "calls went backwards in time"
        assert sent[key][-1] == latest
