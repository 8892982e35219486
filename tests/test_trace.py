"""``connector trace``'s rules, offline: what each record of an order became (the coalescer's rules),
and the verdict on the vendor's copy. The story read from a real broker: tests/integration/test_trace.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from connector._compare import differences, shown
from connector.errors import MappingError
from connector.readback import Held, Verdict, compare, judge
from connector.samples import order_body
from connector.structs import OrderChange, Record
from connector.trace import decide, sendable
from connector.vendors import target

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def change(offset: int, second: int | None, payload: str = "a", op: str = "upsert") -> OrderChange:
    stamp = None if second is None else T0 + timedelta(seconds=second)
    record = Record("orders", 0, offset, b"T-1", b"{}")
    return OrderChange(record, "T-1", op, {}, stamp, payload.encode())  # type: ignore[arg-type]


def test_each_record_is_newest_superseded_stale_identical_or_dead_lettered() -> None:
    unmapped = MappingError("order.updated_at: not a timestamp")
    unmapped.external_id = "T-1"
    changes = [
        change(0, 1, "a"),
        unmapped,
        change(2, 2, "b"),
        change(3, 3, "b"),  # a newer event, the same state: identical
        change(4, 0, "c"),  # older than the newest accepted: stale
        change(5, 2, "e"),  # as new as offset 2, but offset 3 (identical to it) is newer: stale
        change(6, 5, "d"),
    ]
    assert [d for d, _ in decide(changes)] == [
        "superseded",
        "dead-lettered",
        "superseded",
        "identical",
        "stale",
        "stale",
        "newest",
    ]
    assert decide(changes)[0][1] == "by offset 2"
    assert "stage map" in decide(changes)[1][1]


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abc")), min_size=1, max_size=12))
def test_exactly_one_record_is_the_newest_and_none_is_newer(events: list[tuple[int, str]]) -> None:
    changes = [change(i, second, payload) for i, (second, payload) in enumerate(events)]
    decisions = [d for d, _ in decide(changes)]
    assert decisions.count("newest") == 1
    newest = changes[decisions.index("newest")]
    stands_for = newest.version  # with the events skipped as identical, as the coalescer joins them
    for c, d in zip(changes, decisions, strict=True):
        if d == "identical":
            stands_for = c.version.joined(stands_for)
    assert not any(stands_for.older_than(c.version) for c in changes)


def test_the_verdict_compares_the_vendors_updated_at_with_the_newest_event() -> None:
    newest = change(3, 10)
    at = newest.updated_at
    assert at is not None
    assert judge(newest, True, at)[0] is Verdict.IN_SYNC
    assert judge(newest, True, at - timedelta(seconds=1))[0] is Verdict.BEHIND
    assert judge(newest, True, at + timedelta(seconds=1))[0] is Verdict.AHEAD
    assert judge(newest, False, None)[0] is Verdict.MISSING
    assert judge(newest, True, None)[0] is Verdict.UNKNOWN
    deleted = change(4, 11, op="delete")
    assert judge(deleted, False, None)[0] is Verdict.DELETED
    assert judge(deleted, True, at)[0] is Verdict.BEHIND
    assert judge(None, False, None)[0] is Verdict.NO_EVENTS


def test_a_copy_with_no_updated_at_of_ours_is_judged_on_the_fields_an_update_sends() -> None:
    """Shoplazza keeps its own updated_at: the fields sent are all there is; a copy not as sent
    differs (an older state and an edit look the same), and says which fields."""
    newest = change(3, 10)
    sent = {"note": "gift", "tags": {"values": ["a"]}}
    held = {"id": "o-1", "note": "gift", "tags": {"values": ["a"]}, "updated_at": "2026-12-01T00:00:00Z"}
    assert compare(newest, Held(True, None, held, sent))[0] is Verdict.IN_SYNC
    verdict, line, fields = compare(newest, Held(True, None, held | {"note": "older"}, sent))
    assert (verdict, fields) == (Verdict.DIFFERS, ["note"])
    assert "note" in line
    assert compare(newest, Held(False, None, None, sent))[0] is Verdict.MISSING
    assert compare(newest, Held(True, None, None))[0] is Verdict.UNKNOWN, "nothing to compare with"


def test_the_vendors_copy_is_compared_on_what_was_sent_as_the_vendor_represents_it() -> None:
    """Only the fields sent are compared (the vendor's own, like ``id``, are not); an instant in
    another offset and a number as a string are the same value; a changed field is named by its
    path; the fields in ``skip`` are not compared."""
    sent = {
        "name": "#1",
        "updated_at": "2026-12-01T10:00:00Z",
        "total_price": {"amount": 12.5, "currency_code": "USD"},
        "line_items": [{"quantity": 1}, {"quantity": 2}],
        "note": "kept",
    }
    held = {
        "id": 7,
        "name": "#1",
        "updated_at": "2026-12-01T11:00:00+01:00",
        "total_price": {"amount": "12.50", "currency_code": "USD"},
        "line_items": [{"quantity": 1}, {"quantity": 2}],
        "note": "kept",
    }
    assert differences(sent, held) == []
    held["line_items"] = [{"quantity": 1}, {"quantity": 3}]
    held["note"] = "edited"
    assert differences(sent, held) == ["line_items[1].quantity", "note"]
    assert differences(sent, held, frozenset({"note"})) == ["line_items[1].quantity"]
    assert differences(sent, {**held, "line_items": []}, frozenset({"note"})) == ["line_items"]
    assert differences({"flag": True}, {"flag": 1}) == ["flag"], "a boolean is not a number"
    dropped = {"line_items": [{"quantity": 1, "x_note": "ours"}], "x_tag": "t"}
    assert (
        differences(dropped, {"line_items": [{"quantity": 1}]}, frozenset({"line_items[].x_note", "x_tag"}))
        == []
    )
    assert shown([f"f{i}" for i in range(12)]).endswith("f9 and 2 more")


def test_the_state_to_hold_is_the_newest_that_fits_the_vendor_model() -> None:
    """The newest change is checked as it is before it is sent: one that does not fit is
    dead-lettered and the one before it is the state to hold; a replaced change is never judged.
    With ``delivery.on_delete = ignore`` a delete is ignored, not the newest."""
    vendor = target("loop", "")
    valid = [
        OrderChange(
            Record("orders", 0, i, b"T-1", b"{}"),
            "T-1",
            "upsert",
            order_body("T-1", i + 1),
            None,
            bytes([i]),
        )
        for i in range(2)
    ]
    broken = OrderChange(
        Record("orders", 0, 2, b"T-1", b"{}"),
        "T-1",
        "upsert",
        {"external_id": "T-1", "status": "nope"},
        None,
        b"broken",
    )
    for c in valid:
        c.updated_at = datetime.fromisoformat(c.body["updated_at"].replace("Z", "+00:00"))
    assert valid[0].updated_at is not None
    assert valid[1].updated_at is not None
    broken.updated_at = valid[0].updated_at + (valid[1].updated_at - valid[0].updated_at) / 2
    decisions, newest = sendable([valid[0], broken, valid[1]], vendor, ignore_deletes=False)
    assert [d for d, _ in decisions] == ["superseded", "superseded", "newest"], (
        "a replaced change is not judged"
    )
    assert newest is valid[1]
    newer_broken = OrderChange(
        Record("orders", 0, 2, b"T-1", b"{}"),
        "T-1",
        "upsert",
        {"external_id": "T-1", "status": "nope"},
        valid[1].updated_at + timedelta(days=1),
        b"broken",
    )
    decisions, newest = sendable([valid[0], valid[1], newer_broken], vendor, ignore_deletes=False)
    assert [d for d, _ in decisions] == ["superseded", "newest", "dead-lettered"]
    assert newest is valid[1]
    delete = OrderChange(Record("orders", 0, 3, b"T-1", None), "T-1", "delete", {}, None, b"deleted")
    decisions, newest = sendable([valid[0], delete], vendor, ignore_deletes=True)
    assert [d for d, _ in decisions] == ["newest", "ignored"]
    assert newest is valid[0]
