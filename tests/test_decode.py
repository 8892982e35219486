"""Decode + validate: every input ends as an order change or a specific, readable error."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.conform import check, complete
from connector.decode import decode
from connector.errors import DecodeError, InputError, OrderValidationError
from connector.models import parse_timestamp
from connector.samples import envelope, order_body
from connector.structs import Record, Version
from connector.vendors import target, vendor


def rec(value: bytes | None, key: bytes | None = b"k") -> Record:
    return Record("orders", 0, 7, key, value)


def test_envelope_is_unwrapped() -> None:
    """An envelope's order is what gets sent; its updated_at orders the key's events."""
    body = order_body("A-1", 3)
    change = decode(rec(envelope(body, 3)))
    assert change.external_id == "A-1"
    assert change.op == "upsert"
    assert change.body == body
    assert change.updated_at is not None


def test_bare_order_is_accepted() -> None:
    """A bare order object is an upsert."""
    change = decode(rec(json.dumps({"external_id": "B"}).encode()))
    assert change.body == {"external_id": "B"}


def test_unknown_fields_are_forwarded() -> None:
    """Fields the vendor added before we did are kept."""
    change = decode(rec(json.dumps({"external_id": "B", "brand_new": {"x": 1}}).encode()))
    assert change.body["brand_new"] == {"x": 1}


def test_tombstone_is_a_delete_by_key() -> None:
    """A null value with a key deletes that order."""
    change = decode(rec(None, key=b"gone-1"))
    assert (change.op, change.external_id) == ("delete", "gone-1")


def test_order_deleted_event_is_a_delete() -> None:
    """event_type order.deleted deletes by the order's external_id."""
    value = json.dumps({"event_type": "order.deleted", "order": {"external_id": "X"}}).encode()
    assert decode(rec(value)).op == "delete"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"nope", "value is not JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[1]", "expected an object"),
        (b"123", "expected an object"),
        (b'{"external_id": "x", "total": NaN}', "value is not JSON"),
        (b'{"external_id": "x", "total": Infinity}', "value is not JSON"),
    ],
)
def test_unreadable_values_are_decode_errors(value: bytes, fragment: str) -> None:
    """Not JSON (NaN and Infinity included: RFC 8259 has neither, and the API would refuse them), not
    UTF-8, not an object: stage decode, with the reason."""
    with pytest.raises(DecodeError, match=fragment):
        decode(rec(value))


def test_tombstone_without_key_is_a_decode_error() -> None:
    """A null value with no key names no order."""
    with pytest.raises(DecodeError, match="without a key"):
        decode(rec(None, key=None))


def test_oversized_message_is_rejected_unparsed() -> None:
    """A value over max_message_bytes is dead-lettered without being parsed."""
    with pytest.raises(DecodeError, match=r"exceeds kafka\.max_message_bytes=10"):
        decode(rec(b'{"external_id": "aaaaaaaaaaaaaaaa"}'), max_bytes=10)


@pytest.mark.parametrize(
    ("order", "path", "rule"),
    [
        ({}, "order.external_id", "Field required"),
        ({"external_id": "x" * 65}, "order.external_id", "at most 64 characters"),
        ({"external_id": "a", "name": "n" * 101}, "order.name", "at most 100 characters"),
        ({"external_id": "a", "status": "open"}, "order.status", "'active', 'archived', 'cancelled'"),
        ({"external_id": "a", "total_price": {"amount": "10"}}, "order.total_price.amount", "valid integer"),
        ({"external_id": "a", "line_items": [{"quantity": 1.5}]}, "order.line_items[0].quantity", "integer"),
        ({"external_id": "a", "updated_at": "yesterday"}, "order.updated_at", "RFC 3339"),
        ({"external_id": "a", "updated_at": "2026-01-01T00:00:00"}, "order.updated_at", "time zone"),
        ({"external_id": "a", "status": "cancelled"}, "order", "cancelled_at is required"),
        ({"external_id": "a", "customer": {"id": 1, "external_id": "c"}}, "order.customer", "not both"),
    ],
)
def test_violations_name_the_field_and_rule(order: dict[str, object], path: str, rule: str) -> None:
    """Each documented rule: the error names the field path and the rule broken."""
    with pytest.raises(OrderValidationError) as caught:
        decode(rec(json.dumps(order).encode()))
    message = str(caught.value)
    assert f"{path}:" in message or f"{path} " in message
    assert rule in message


def test_envelope_with_unknown_event_type_is_invalid() -> None:
    """event_type must be one of the four documented types."""
    value = json.dumps({"event_type": "order.exploded", "order": {"external_id": "a"}}).encode()
    with pytest.raises(OrderValidationError, match="event_type"):
        decode(rec(value))


def test_deep_nesting_is_a_decode_error() -> None:
    """JSON nested beyond what the parser can hold is rejected, not a crash."""
    with pytest.raises(InputError):
        decode(rec(b"[" * 100_000 + b"]" * 100_000), max_bytes=10**7)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = st.sampled_from(["loop", "shoplazza"])


def ends_well(record: Record, kind: str) -> None:
    """An input ends as a valid change with a key, or as an InputError with a reason and a stage."""
    try:
        change = decode(record, 64 * 1024, target(kind))
    except InputError as exc:
        error: InputError | None = exc
    else:
        error = None
        assert change.external_id
    if error is not None:
        assert str(error)
        assert error.stage in ("decode", "validate")


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.none()), st.one_of(st.binary(max_size=20), st.none()), KINDS)
def test_arbitrary_bytes_never_raise_past_the_stage(
    value: bytes | None, key: bytes | None, kind: str
) -> None:
    """Any bytes, null keys and null values: a valid change or a dead-letter reason, nothing else."""
    ends_well(rec(value, key), kind)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
FIELDS = ["external_id", "id", "number", "status", "line_items", "total_price", "updated_at", "customer", "order",
          "event_type", "tags", "shipping_line", "note"]  # fmt: skip


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), json_values), KINDS)
def test_arbitrary_json_objects_never_raise_past_the_stage(obj: dict[str, object], kind: str) -> None:
    """Any JSON object, bare or in an envelope: a valid change or a dead-letter reason."""
    ends_well(rec(json.dumps(obj).encode()), kind)
    ends_well(rec(json.dumps({"event_type": "order.updated", "order": obj}).encode()), kind)


@FUZZ
@given(
    st.text(min_size=1, max_size=200), st.integers(1, 400), st.integers(min_value=1, max_value=3000), KINDS
)
def test_huge_strings_and_deep_nesting_never_raise(piece: str, times: int, depth: int, kind: str) -> None:
    """Huge strings and deep nesting: a change, or a reason; values over the maximum are never parsed."""
    big = piece * times
    ends_well(rec(json.dumps({"external_id": big, "id": big, "note": big}).encode()), kind)
    ends_well(rec(("[" * depth + "]" * depth).encode()), kind)
    ends_well(rec(('{"order":' * depth + "{}" + "}" * depth).encode()), kind)


def test_shoplazza_events_of_one_order_share_a_key_whether_named_by_id_or_number() -> None:
    """Found by review: an order named by id in one event and by number in another got two
    coalescing slots (two calls at once, no stale check between them). The Kafka record key, the
    producer's name for the order, is the coalescing key."""
    by_id = Record("t", 0, 1, b"ord-7", b'{"id": "o-7", "note": "a"}')
    by_number = Record("t", 0, 2, b"ord-7", b'{"number": "1007", "note": "b"}')
    tombstone = Record("t", 0, 3, b"ord-7", None)
    keys = {
        decode(r, target=target("shoplazza", "2025-06")).external_id for r in (by_id, by_number, tombstone)
    }
    assert keys == {"ord-7"}


def test_a_delete_keeps_its_time_so_an_older_upsert_stays_stale() -> None:
    """Found by review: deletes dropped updated_at, and a late older upsert brought the order back."""
    delete = decode(
        Record(
            "t",
            0,
            1,
            b"A",
            b'{"event_type": "order.deleted", "event_id": "1", '
            b'"order": {"external_id": "A", "updated_at": "2026-01-01T00:00:05Z"}}',
        )
    )
    late = decode(Record("t", 0, 2, b"A", b'{"external_id": "A", "updated_at": "2026-01-01T00:00:03Z"}'))
    assert delete.updated_at is not None
    assert late.version.older_than(delete.version)


def _cheap_agrees_with_the_model(order: dict[str, object], kind: str) -> None:
    """The cheap read is never stricter than the vendor model, and where the model accepts a body
    the cheap read finds the same key and time; ``check`` then accepts it too."""
    try:
        record = rec(json.dumps(order, allow_nan=False).encode(), key=None)
    except ValueError:
        return  # Infinity and NaN are not JSON (RFC 8259); the read rejects them, see above
    try:
        model: Any = vendor(kind).model("").model_validate(order)
    except (ValidationError, RecursionError):
        with pytest.raises(InputError):
            check(decode(record, 64 * 1024, target(kind), validate=False), target(kind))
        return
    change = decode(record, 64 * 1024, target(kind), validate=False)
    assert change.external_id == model.sync_key()
    assert change.updated_at == (parse_timestamp(model.updated_at) if model.updated_at else None)
    check(change, target(kind))
    assert change.validated


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), json_values), KINDS)
def test_checking_at_send_time_accepts_and_keys_exactly_what_the_model_does(
    obj: dict[str, object], kind: str
) -> None:
    """Cheap read + ``check`` accepts what the vendor model accepts, with the model's key and time,
    and rejects the rest: moving validation to send time changes when, never what."""
    obj.pop("order", None)  # with event_type it would be read as an envelope, a case of its own
    _cheap_agrees_with_the_model(obj, kind)
    valid = {**obj, "external_id": "x", "id": "x"}
    _cheap_agrees_with_the_model(valid, kind)


def test_the_cheap_read_leaves_the_body_unchecked_until_check() -> None:
    """A body breaking a rule beyond key and time is read (to be coalesced) and fails only at check."""
    bad = rec(json.dumps({"external_id": "x", "line_items": [{"quantity": "two"}]}).encode())
    change = decode(bad, validate=False)
    assert change.external_id == "x"
    assert not change.validated
    with pytest.raises(OrderValidationError, match=r"line_items\[0\]\.quantity"):
        check(change, target("loop"))
    with pytest.raises(OrderValidationError, match=r"line_items\[0\]\.quantity"):
        decode(bad)


@pytest.mark.parametrize("wrapped", [True, False], ids=["envelope", "bare order"])
def test_a_lazy_read_keeps_the_record_not_the_parsed_body_and_makes_the_same_body_when_sent(
    wrapped: bool,
) -> None:
    """The pipeline's read (``lazy``): an upsert keeps only its record's bytes (what
    ``kafka.max_unresolved_bytes`` counts; the parsed body is several times their size), and its
    body is parsed again just before it is sent: the eager read's body, key, time and digest. A
    delete keeps what it has (an empty body)."""
    lines = [{"sku": f"sku-{i}", "quantity": i, "title": "a product", "tags": ["a", "b"]} for i in range(100)]
    records = []
    for i in range(50):
        body = {**order_body(f"A-{i}", 3), "line_items": lines}
        records.append(
            Record("orders", 0, i, None, envelope(body, 3) if wrapped else json.dumps(body).encode())
        )
    raw = sum(len(r.value or b"") for r in records)
    tracemalloc.start()
    try:
        changes = [decode(r, validate=False, lazy=True) for r in records]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < raw / 4, f"{held:,} bytes held by {len(changes)} pending changes of {raw:,} bytes"
    eager = decode(records[7], validate=False)
    lazy = changes[7]
    assert lazy.pending is not None
    assert lazy.body == {}
    complete(lazy)
    assert lazy.body == eager.body
    assert (lazy.external_id, lazy.updated_at, lazy.digest) == (
        eager.external_id,
        eager.updated_at,
        eager.digest,
    )
    deleted = json.dumps({"event_type": "order.deleted", "order": {"external_id": "X"}}).encode()
    assert decode(rec(deleted), validate=False, lazy=True).pending is None


def test_a_lazy_read_makes_its_digest_on_first_use_when_its_order_has_its_updated_at() -> None:
    """Most events of a backlog are replaced before anything compares or sends them: a lazy read's
    digest waits for its first use when the order carries its ``updated_at`` (which the digest
    covers, so a later one proves it different: ``differs_after``); it is the eager read's digest,
    made before the body, after it, or by ``complete``. Without ``updated_at`` it is made at once."""
    value = envelope(order_body("A-1", 3), 3)
    eager = decode(rec(value), validate=False)
    stamp = eager.version.updated_at
    assert stamp is not None
    before = Version(stamp - 1, eager.tp, 0)
    first, second = (
        decode(rec(value), validate=False, lazy=True),
        decode(rec(value), validate=False, lazy=True),
    )
    assert first.differs_after(before)
    assert not eager.differs_after(before)
    assert not first.differs_after(eager.version), "the same updated_at proves nothing"
    assert first.digest == eager.digest
    assert not first.differs_after(before), "made: compared as it is"
    complete(second)
    assert (second.body, second.digest) == (eager.body, eager.digest)
    unstamped = {k: v for k, v in order_body("A-1", 3).items() if k != "updated_at"}
    lazy = decode(rec(json.dumps(unstamped).encode()), validate=False, lazy=True)
    assert lazy.pending is not None
    assert not lazy.differs_after(before)
    assert lazy.digest == decode(rec(json.dumps(unstamped).encode()), validate=False).digest


@pytest.mark.parametrize(
    "stamp",
    ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00z", "2026-01-01t00:00:00+02:00", "2026-01-01 00:00:00Z",
     "2026-01-01T00:00:00+0000", "2026-01-01T00:00:00", "2026-01-01T00:00:00.123456789Z",
     "2026-01-01T00:00:00.1234567890Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
     "2026-01-01T24:00:00Z", "2026-01-01T00:00:60Z", "2026-01-01", "", 1767225600, None],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["loop", "shoplazza"])
def test_both_reads_agree_on_edge_timestamps(stamp: object, kind: str) -> None:
    """``updated_at`` is judged by the cheap read exactly as the vendor model judges it."""
    _cheap_agrees_with_the_model({"external_id": "x", "id": "x", "updated_at": stamp}, kind)
