"""The resync topic's wire format (version 1): what is written is read back the same, a record of
another version or a broken one is refused by name, and the documented example is what is written."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.resynclog import VERSION, Progress, Request, State, Unreadable, decode, encode

names = st.text(min_size=1, max_size=20)
counts = st.integers(min_value=0, max_value=2**40)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)

requests = st.builds(
    Request,
    group=names,
    id=names,
    tenant=st.none() | names,
    since=st.none() | times,
    share=st.floats(min_value=0.001, max_value=1.0),
    at=times,
    state=st.sampled_from(State),
)
progresses = st.builds(
    Progress,
    group=names,
    id=names,
    topic=names,
    partition=st.integers(0, 10_000),
    start=counts,
    until=counts,
    at=counts,
    orders=counts,
    sent=counts,
    skipped=counts,
    failed=counts,
    done=st.booleans(),
    by=st.text(max_size=30),
    written=times,
)


@given(st.one_of(requests, progresses))
def test_what_is_written_is_read_back_the_same(record: Request | Progress) -> None:
    key, value = encode(record)
    assert decode(value) == record
    assert key == record.key


def test_the_documented_records_are_what_is_written() -> None:
    request = Request("orders-connector", "r-1f0c9a2b", None, 1800000000.0, 0.2, 1800000000.5)
    key, value = encode(request)
    assert key == b"orders-connector/request"
    assert json.loads(value) == {
        "v": 1, "kind": "request", "group": "orders-connector", "id": "r-1f0c9a2b", "tenant": None,
        "since": 1800000000.0, "share": 0.2, "at": 1800000000.5, "state": "active",
    }  # fmt: skip
    progress = Progress("orders-connector", "r-1f0c9a2b", "orders", 3, 120, 10120, 5120, 4000, 2000, 12)
    key, value = encode(progress)
    assert key == b"orders-connector/r-1f0c9a2b/orders/3"
    assert json.loads(value)["from"] == 120
    assert "start" not in json.loads(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({"v": VERSION + 1, "kind": "request"}).encode(), f"version {VERSION + 1}"),
        (json.dumps({"v": VERSION, "kind": "pause"}).encode(), "kind 'pause'"),
        (json.dumps({"v": VERSION, "kind": "request", "group": "g"}).encode(), "a field missing or invalid"),
    ],
)
def test_a_record_it_cannot_read_is_refused_saying_why(value: bytes, why: str) -> None:
    with pytest.raises(Unreadable) as caught:
        decode(value)
    assert caught.value.kind == why


@pytest.mark.parametrize(
    ("field", "bad"), [("share", 0.0), ("share", 1.5), ("since", "yesterday"), ("state", "x")]
)
def test_a_request_with_a_field_out_of_its_range_is_refused(field: str, bad: object) -> None:
    _, value = encode(Request("g", "r-1", None, None, 0.2, 1.0))
    data = json.loads(value) | {field: bad}
    with pytest.raises(Unreadable):
        decode(json.dumps(data).encode())


def test_unknown_fields_are_ignored_within_a_version() -> None:
    _, value = encode(Request("g", "r-1", "acme", 5.0, 0.5, 1.0))
    data = json.loads(value) | {"added_later": [1, 2]}
    assert decode(json.dumps(data).encode()) == Request("g", "r-1", "acme", 5.0, 0.5, 1.0)


def test_a_request_covers_its_shop_or_every_shop() -> None:
    assert Request("g", "r", None, None, 0.2, 0).covers("acme")
    assert Request("g", "r", "acme", None, 0.2, 0).covers("acme")
    assert not Request("g", "r", "acme", None, 0.2, 0).covers("other")
