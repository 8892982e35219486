"""The coalescer: one call per key at a time, latest state wins, nothing older is ever sent."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector.coalesce import Coalescer, Resolution
from connector.decode import decode
from connector.structs import OrderChange, Record, TopicPartition

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Body(dict[str, object]):
    """An order body a test can hold a weak reference to."""


def change(
    key: str,
    offset: int,
    version: int | None,
    body: str = "",
    partition: int = 0,
    digest: bytes | None = None,
) -> OrderChange:
    updated = None if version is None else T0 + timedelta(seconds=version)
    digest = digest or f"{key}:{version}:{body}".encode()
    return OrderChange(
        Record("t", partition, offset, key.encode(), b"{}"), key, "upsert", {}, updated, digest
    )


def delivered(c: Coalescer, ch: OrderChange) -> OrderChange | None:
    """Offer ``ch`` to an idle key, send it, and report it delivered."""
    offer = c.offer(ch)
    assert offer.start
    assert c.promote(ch.key) == (ch, None)
    return c.finish(ch.key, delivered=True)


def test_first_change_of_a_key_starts_a_job() -> None:
    """A key with nothing in flight needs a job at once; promoting hands out that change."""
    c = Coalescer()
    first = change("a", 0, 1)
    assert c.offer(first).start
    assert c.promote("a") == (first, None)


def test_newer_change_replaces_the_waiting_one() -> None:
    """While a call is in flight, the newest change waits and older waiting ones are replaced."""
    c = Coalescer()
    c.offer(change("a", 0, 1))
    c.promote("a")
    second, third = change("a", 1, 2), change("a", 2, 3)
    assert c.offer(second).resolved == ()
    offer = c.offer(third)
    assert not offer.start
    assert offer.resolved == ((second, Resolution.REPLACED),)
    assert offer.waits, "the newest change waits behind the current one"


def test_promoting_takes_the_newest_change_of_the_key() -> None:
    """While nothing of its key is in flight, the newest change takes the current one's place: one
    call for many events."""
    c = Coalescer()
    first, second = change("a", 0, 1), change("a", 1, 2)
    c.offer(first)
    c.offer(second)
    assert c.promote("a") == (second, first)
    assert c.promote("a") == (second, None)
    assert c.waiting == 0


def test_finish_hands_over_to_the_waiting_change() -> None:
    """When the call ends, the waiting change becomes current and the job goes on."""
    c = Coalescer()
    first, second = change("a", 0, 1), change("a", 1, 2)
    c.offer(first)
    c.promote("a")
    c.offer(second)
    assert c.finish("a", delivered=True) is second
    assert c.finish("a", delivered=True) is None
    assert c.active == 0


def test_change_older_than_the_one_sent_is_stale() -> None:
    """An event with an older updated_at than what was delivered is skipped."""
    c = Coalescer()
    delivered(c, change("a", 5, 10))
    older = change("a", 6, 3)
    assert c.offer(older).resolved == ((older, Resolution.STALE),)


def test_without_updated_at_a_lower_offset_is_stale() -> None:
    """Lacking updated_at, offsets within the partition decide (a redelivery after a rebalance)."""
    c = Coalescer()
    delivered(c, change("a", 9, None, "x"))
    replayed = change("a", 4, None, "y")
    assert c.offer(replayed).resolved == ((replayed, Resolution.STALE),)


def test_identical_payload_is_skipped() -> None:
    """A duplicate of the last payload delivered for the key costs no call."""
    c = Coalescer()
    delivered(c, change("a", 0, 1, "same"))
    again = change("a", 1, 1, "same")
    assert c.offer(again).resolved == ((again, Resolution.IDENTICAL),)


def test_failed_call_does_not_count_as_delivered() -> None:
    """After a failure, the same payload is not skipped as identical."""
    c = Coalescer()
    first = change("a", 0, 1, "p")
    c.offer(first)
    c.promote("a")
    c.finish("a", delivered=False)
    assert c.offer(change("a", 1, 1, "p")).start


def test_revoke_forgets_what_was_delivered_from_the_partition() -> None:
    """Found by the simulation (revert after a partition moved away and back): marks of a revoked
    partition are dropped, so an older payload coming back is sent, not skipped as identical while
    another member may have changed the order meanwhile."""
    c = Coalescer()
    delivered(c, change("a", 0, None, "A"))
    assert c.drop_partitions({TopicPartition("t", 0)}) == []
    assert c.remembered == 0
    assert c.offer(change("a", 7, None, "A")).start


def test_drop_partitions_forgets_changes_of_revoked_partitions() -> None:
    """On revoke, current and waiting changes of the lost partitions are dropped unresolved."""
    c = Coalescer()
    c.offer(change("a", 0, 1, partition=0))
    c.offer(change("a", 1, 2, partition=0))
    c.offer(change("b", 0, 1, partition=1))
    assert c.drop_partitions({TopicPartition("t", 0)}) == []
    assert c.active == 1
    assert c.current("a") is None


def test_marks_are_bounded_and_hold_no_payload() -> None:
    """What is remembered per key is bounded by remember_keys and does not grow with the payload."""
    c = Coalescer(remember_keys=2)
    bodies = []
    for i, key in enumerate("abc"):
        ch = change(key, i, 1)
        body = Body(blob="x" * 100_000)
        bodies.append(weakref.ref(body))
        ch.body = body
        delivered(c, ch)
    del ch, body
    gc.collect()
    assert [ref() for ref in bodies] == [None, None, None], "no payload kept once delivered"
    assert c.remembered == 2
    assert not c.offer(change("c", 9, 1)).start, "c is remembered: skipped as identical"
    assert c.offer(change("a", 9, 1)).start  # "a" was evicted: not skipped


def test_warm_up_remembers_without_sending_and_keeps_the_newest() -> None:
    """Events re-read below the committed offset only leave a mark, the newest by the rule."""
    c = Coalescer()
    c.remember(change("a", 0, 5, "new"))
    c.remember(change("a", 1, 2, "old"))
    late = change("a", 9, 3)
    assert c.offer(late).resolved == ((late, Resolution.STALE),)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=80), st.randoms())
def test_last_change_sent_per_key_is_the_latest_received(ops: list[tuple[str, bool]], rnd) -> None:  # type: ignore[no-untyped-def]
    """Any interleaving of arrivals and completions: per key, calls never overlap, never go back in
    time, and the last call made carries the latest version received."""
    c = Coalescer()
    versions: dict[str, int] = {}
    in_flight: dict[str, OrderChange] = {}
    sent: dict[str, list[int]] = {}

    def start(key: str) -> None:
        ch, _ = c.promote(key)
        assert ch is not None
        assert key not in in_flight, "two calls in flight for one key"
        in_flight[key] = ch

    def complete(key: str) -> None:
        ch = in_flight.pop(key)
        sent.setdefault(key, []).append(int((ch.updated_at - T0).total_seconds()))  # type: ignore[operator]
        if c.finish(key, delivered=True) is not None:
            start(key)

    offset = 0
    for key, arrive in ops:
        if arrive or key not in in_flight:
            versions[key] = versions.get(key, 0) + 1
            if c.offer(change(key, offset, versions[key])).start:
                start(key)
            offset += 1
        else:
            complete(key)
    while in_flight:
        complete(rnd.choice(sorted(in_flight)))
    for key, latest in versions.items():
        assert sent[key] == sorted(sent[key]), "calls went backwards in time"
        assert sent[key][-1] == latest


def test_an_event_older_than_a_change_that_failed_is_still_stale() -> None:
    """Found by the simulation (seed 682): the newest accepted version counts even when its call
    failed for good, so an older event arriving afterwards is not sent."""
    c = Coalescer()
    failed = change("a", 1, 10)
    c.offer(failed)
    c.promote("a")
    c.finish("a", delivered=False)
    older = change("a", 2, 5)
    assert c.offer(older).resolved == ((older, Resolution.STALE),)


def _for(tenant: str, ch: OrderChange) -> OrderChange:
    ch.tenant = tenant
    return ch


def test_a_tenant_taken_out_for_parking_leaves_the_others_and_its_marks() -> None:
    """``take_tenant`` hands over a shop's changes read from the given partitions, current and
    waiting, in the order they were read, and forgets their slots; other shops, other partitions and
    what was remembered of the shop stay."""
    c = Coalescer()
    delivered(c, _for("x", change("k0", 0, 1, partition=0)))
    first, newer = _for("x", change("k1", 3, 1)), _for("x", change("k1", 5, 2))
    c.offer(first)
    c.promote("x/k1")
    c.offer(newer)
    early = _for("x", change("k2", 1, 1))
    c.offer(early)
    elsewhere = _for("x", change("k3", 2, 1, partition=1))
    c.offer(elsewhere)
    healthy = _for("y", change("k1", 4, 1))
    c.offer(healthy)
    taken = c.take_tenant("x", [TopicPartition("t", 0)])
    assert taken == [(early, None), (first, None), (newer, None)]
    assert c.current("x/k1") is None
    assert c.current("x/k3") is elsewhere
    assert c.current("y/k1") is healthy
    assert c.offer(_for("x", change("k0", 9, 0))).resolved[0][1] is Resolution.STALE, "marks stay"


def test_load_by_tenant_counts_orders_waiting_and_their_oldest_record_time() -> None:
    """What decides parking a shop that is far behind: how many of its orders wait, since when."""
    c = Coalescer()
    for i, stamp in enumerate((30_000, 10_000, 20_000)):
        ch = _for("x", change(f"k{i}", i, 1))
        object.__setattr__(ch, "record", Record("t", 0, i, None, b"{}", timestamp_ms=stamp))
        c.offer(ch)
    c.offer(_for("y", change("k0", 9, 1)))
    load = c.load_by_tenant()
    assert load["x"] == (3, 10.0)
    assert load["y"][0] == 1


_STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("offer"),
            st.sampled_from("xy"),  # tenant
            st.integers(0, 2),  # order
            st.sampled_from([0, 1_000, 2_500, 7_000, 12_345]),  # record time, ms (0: none)
            st.booleans(),  # replayed from the parking topic
            st.integers(0, 1),  # partition
        ),
        st.tuples(st.sampled_from(["finish", "promote"]), st.sampled_from("xy"), st.integers(0, 2)),
        st.tuples(st.just("take"), st.sampled_from("xy"), st.integers(0, 1)),
        st.tuples(st.just("drop"), st.integers(0, 1)),
    ),
    max_size=80,
)


_PROMOTED = [  # a promoted key's earlier change, older than the shop's other orders, counts no more
    ("offer", "x", 1, 12_345, False, 0),
    ("offer", "x", 0, 1_000, False, 0),
    ("offer", "x", 0, 7_000, False, 0),
    ("promote", "x", 0),
]


@settings(max_examples=400)
@given(_STEPS)
@example(_PROMOTED)
def test_the_per_tenant_load_matches_what_each_key_has_current(steps: list[tuple[Any, ...]]) -> None:
    """``load_by_tenant`` and ``oldest_by_tenant`` (kept as changes come and go, not scanned) against
    the plain reading of their docstrings after any mix of offers, replays, finished calls,
    promotions, shops taken out for parking and partitions dropped: per tenant, the keys whose current
    change was read from Kafka and its oldest record time (none: inf); and the oldest record time of
    any current one (a tenant whose changes carry none is absent)."""
    c = Coalescer()
    for offset, (op, *args) in enumerate(steps):
        if op == "offer":
            tenant, order, stamp, replayed, partition = args
            ch = _for(tenant, change(f"k{order}", offset, offset, body=f"b{offset}", partition=partition))
            parked_at = 0 if replayed else -1
            record = Record("t", partition, offset, None, b"{}", timestamp_ms=stamp, parked_at=parked_at)
            object.__setattr__(ch, "record", record)
            c.offer(ch)
        elif op == "finish":
            c.finish(f"{args[0]}/k{args[1]}", delivered=True)
        elif op == "promote":
            c.promote(f"{args[0]}/k{args[1]}")
        elif op == "take":
            c.take_tenant(args[0], [TopicPartition("t", args[1])])
        else:
            c.drop_partitions([TopicPartition("t", args[0])])
    current = [ch for ch in (c.current(f"{t}/k{o}") for t in "xy" for o in range(3)) if ch is not None]
    load: dict[str, tuple[int, float]] = {}
    oldest: dict[str, float] = {}
    for ch in current:
        stamp = ch.record.timestamp_ms / 1000.0
        if stamp:
            oldest[ch.tenant] = min(stamp, oldest.get(ch.tenant, stamp))
        if ch.record.parked_at < 0:
            count, first = load.get(ch.tenant, (0, float("inf")))
            load[ch.tenant] = (count + 1, min(first, stamp or float("inf")))
    assert c.load_by_tenant() == load
    assert c.oldest_by_tenant() == oldest


def test_a_version_remembered_without_delivery_makes_older_events_stale_but_not_its_copy_identical() -> None:
    """A parked shop's event re-read by the warm-up is remembered by version only: an older event is
    stale, the same event replayed from the parking topic is still sent."""
    c = Coalescer()
    seen = change("a", 7, 5)
    c.remember(seen, delivered=False)
    assert c.offer(change("a", 3, 4)).resolved[0][1] is Resolution.STALE
    assert c.offer(change("a", 7, 5)).start, "its replay is not skipped as identical"


def test_an_event_skipped_as_identical_lends_its_version_to_the_change_it_copies() -> None:
    """Every delete has the same payload: a newer delete arriving while an older one is pending is
    skipped as identical, but the pending delete now stands for it (an event older than the newer
    delete is stale, and a parked delete carries that version to its replay)."""
    c = Coalescer()
    pending = change("a", 0, 5)
    c.offer(pending)
    newer = change("a", 1, 9, digest=pending.digest)
    assert c.offer(newer).resolved == ((newer, Resolution.IDENTICAL),)
    between = change("a", 2, 7, body="upsert")
    assert c.offer(between).resolved == ((between, Resolution.STALE),)
    assert c.take_tenant("", [TopicPartition("t", 0)]) == [(pending, newer.version)]


def test_after_a_request_of_unknown_outcome_nothing_is_skipped_as_identical() -> None:
    """Found by the simulation (many-shop seed 1237): a state was delivered, a newer one got a 500 the
    vendor may have applied, and the newest was refused for good. What the vendor holds is not known:
    an event equal to the state delivered first is sent, not skipped as identical to it."""
    c = Coalescer()
    delivered(c, change("a", 0, None, "s7"))
    newest = change("a", 2, None, "poison")
    c.offer(newest)
    c.promote("a")
    c.finish("a", delivered=False, unknown=True)
    revert = change("a", 3, None, "s7")
    assert c.offer(revert).start
    known = Coalescer()
    delivered(known, change("a", 0, None, "s7"))
    known.offer(newest)
    known.promote("a")
    known.finish("a", delivered=False)
    assert known.offer(change("a", 3, None, "s7")).resolved[0][1] is Resolution.IDENTICAL


def deletion(key: str, offset: int, version: int | None) -> OrderChange:
    """A delete of ``key`` (every delete has the same payload), timed or, a tombstone, not."""
    updated = None if version is None else T0 + timedelta(seconds=version)
    return OrderChange(Record("t", 0, offset, key.encode(), None), key, "delete", {}, updated, b"delete")


def _debezium_resends(c: Coalescer) -> list[Resolution | str]:
    """What becomes of what Debezium re-sends after a restart (its last update, the delete and the
    tombstone again) once the delete and its tombstone are through."""
    out: list[Resolution | str] = []
    for ch in (change("a", 5, 6, "v6"), change("a", 6, 7, "v7"), deletion("a", 7, 9), deletion("a", 8, None)):
        offer = c.offer(ch)
        out.append("sent" if offer.start else offer.resolved[0][1])
        if offer.start:
            c.promote("a")
            c.finish("a", delivered=True)
    return out


def test_a_delivered_delete_and_its_tombstone_keep_the_order_deleted_when_debezium_sends_again() -> None:
    """Issue 21: the tombstone after a delete is identical (no call) and must not take the delete's
    time away: the update Debezium sends again after a restart is stale, the delete and tombstone it
    sends again are identical: no upsert bringing the order back, no second DELETE."""
    c = Coalescer()
    delivered(c, change("a", 1, 7, "v7"))
    delivered(c, deletion("a", 3, 9))
    tombstone = deletion("a", 4, None)
    assert c.offer(tombstone).resolved == ((tombstone, Resolution.IDENTICAL),)
    assert _debezium_resends(c) == [
        Resolution.STALE,
        Resolution.STALE,
        Resolution.IDENTICAL,
        Resolution.IDENTICAL,
    ]


def test_a_tombstone_arriving_while_its_delete_is_pending_lends_it_its_place_not_its_missing_time() -> None:
    """The same with the tombstone read while the delete is still being sent."""
    c = Coalescer()
    delivered(c, change("a", 1, 7, "v7"))
    c.offer(deletion("a", 3, 9))
    c.promote("a")
    tombstone = deletion("a", 4, None)
    assert c.offer(tombstone).resolved == ((tombstone, Resolution.IDENTICAL),)
    assert c.offer(late := change("a", 5, 6, "v6")).resolved == ((late, Resolution.STALE),)
    assert c.finish("a", delivered=True) is None
    assert _debezium_resends(c) == [
        Resolution.STALE,
        Resolution.STALE,
        Resolution.IDENTICAL,
        Resolution.IDENTICAL,
    ]


def test_a_delete_and_its_tombstone_re_read_by_the_warm_up_keep_the_deletes_time() -> None:
    """After a rebalance the warm-up remembers versions only: a tombstone after a delete joins the
    delete's version there too, so the update re-sent after them is stale."""
    c = Coalescer()
    for ch in (change("a", 1, 7, "v7"), deletion("a", 3, 9), deletion("a", 4, None)):
        c.remember(ch, delivered=False)
    resent = change("a", 5, 6, "v6")
    assert c.offer(resent).resolved == ((resent, Resolution.STALE),)


def test_a_tombstone_after_an_update_is_still_ordered_by_its_offset() -> None:
    """A tombstone that follows an update (no delete before it) is a change of its own, ordered by
    offset as the input contract says: a later event without a newer updated_at is not stale."""
    c = Coalescer()
    delivered(c, change("a", 1, 7, "v7"))
    assert delivered(c, deletion("a", 2, None)) is None
    later = change("a", 3, 5, "v5")
    assert c.offer(later).start


def test_a_parked_delete_carries_the_place_of_the_tombstone_skipped_after_it() -> None:
    """Parking a shop hands over a pending delete with the version it stands for: its own time and the
    tombstone's place, newer than the delete alone (the same time, later in the log), so the replay
    takes it and an update re-sent after the tombstone stays stale."""
    c = Coalescer()
    pending = deletion("a", 3, 9)
    c.offer(pending)
    c.offer(deletion("a", 4, None))
    [(taken, as_of)] = c.take_tenant("", [TopicPartition("t", 0)])
    assert taken is pending
    assert as_of is not None
    assert (as_of.updated_at, as_of.offset) == (pending.version.updated_at, 4)
    assert pending.version.older_than(as_of)
    assert change("a", 5, 6, "v6").version.older_than(as_of)


_STEP = st.one_of(
    st.tuples(
        st.just("event"),
        st.sampled_from("ab"),  # the order
        st.sampled_from([None, 1, 2, 3]),  # its updated_at (seconds), or none
        st.sampled_from(["x", "y"]),  # the rest of its body
        st.booleans(),  # a delete (``order.deleted``)
    ),
    st.tuples(st.just("send"), st.sampled_from("ab"), st.booleans()),  # ends the key's call: delivered?
)


@given(st.lists(_STEP, min_size=1, max_size=60))
def test_a_lazy_read_decides_exactly_as_an_eager_one(steps: list[tuple[object, ...]]) -> None:
    """A lazy read's digest is made on first use only, and skipped where its ``updated_at`` proves it
    different (``OrderChange.differs_after``): every decision (stale, identical, replaced, waits,
    starts a job, what is sent next) is the same as with every digest made on read."""
    eager, lazy = Coalescer(), Coalescer()
    for offset, step in enumerate(steps):
        if step[0] == "send":
            _, key, delivered = step
            for c in (eager, lazy):
                current = c.current(str(key))
                if current is not None:
                    current.complete()  # as the deliverer does just before the call
            after = [c.finish(str(key), delivered=bool(delivered)) for c in (eager, lazy)]
            assert offset_of(after[0]) == offset_of(after[1]), f"step {offset}: {step}"
            continue
        _, key, second, rest, deleted = step
        order: dict[str, object] = {"external_id": key, "note": rest}
        if second is not None:
            order["updated_at"] = f"2026-11-01T12:00:0{second}Z"
        kind = "order.deleted" if deleted else "order.updated"
        value = orjson.dumps({"event_type": kind, "order": order})
        record = Record("t", 0, offset, str(key).encode(), value)
        offers = [
            eager.offer(decode(record, validate=False)),
            lazy.offer(decode(record, validate=False, lazy=True)),
        ]
        seen = [(o.start, o.waits, [(ch.record.offset, why) for ch, why in o.resolved]) for o in offers]
        assert seen[0] == seen[1], f"step {offset}: {step}"


def offset_of(change: OrderChange | None) -> int | None:
    return change.record.offset if change is not None else None
