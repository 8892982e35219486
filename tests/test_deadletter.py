"""Dead-letter headers: the Kafka Connect set, ours, the record's own, and no secrets."""

from __future__ import annotations

from connector import logs
from connector.deadletter import Failure, dead_letter_headers
from connector.errors import DecodeError, RejectedError
from connector.structs import Record


def test_headers_follow_the_design_contract() -> None:
    """Every documented header is present with the event's coordinates and the failure."""
    record = Record("orders", 3, 42, b"k", b"v", (("trace", b"t1"),))
    error = RejectedError("PUT /orders answered 422", status=422, body='{"errors": {"name": ["bad"]}}')
    headers = dead_letter_headers(
        record, Failure(error, "deliver", "A-1", 2, 1_700_000_000.5, 1_700_000_001.0)
    )
    h = dict(headers)
    assert headers[0] == ("trace", b"t1")
    assert h["__connect.errors.topic"] == b"orders"
    assert h["__connect.errors.partition"] == b"3"
    assert h["__connect.errors.offset"] == b"42"
    assert h["__connect.errors.exception.class.name"] == b"connector.errors.RejectedError"
    assert h["__connect.errors.exception.message"] == b"PUT /orders answered 422"
    assert h["__connector.stage"] == b"deliver"
    assert h["__connector.external_id"] == b"A-1"
    assert h["__connector.http.status"] == b"422"
    assert h["__connector.http.body"] == b'{"errors": {"name": ["bad"]}}'
    assert h["__connector.attempts"] == b"2"
    assert h["__connector.first_failure_ts"] == b"2023-11-14T22:13:20.500Z"
    assert h["__connector.last_failure_ts"] == b"2023-11-14T22:13:21.000Z"


def test_stale_error_headers_from_an_earlier_dead_letter_are_replaced() -> None:
    """Redriven records do not carry two sets of error headers."""
    record = Record("orders", 0, 1, None, b"x", (("__connector.stage", b"old"),))
    stages = [
        v
        for k, v in dead_letter_headers(record, Failure(DecodeError("bad"), "decode"))
        if k == "__connector.stage"
    ]
    assert stages == [b"decode"]


def test_secrets_are_masked_in_headers() -> None:
    """A registered secret that leaks into an error never reaches the DLQ."""
    logs.register_secret("top-secret-key-123")
    error = RejectedError("key top-secret-key-123 refused", status=400, body="top-secret-key-123")
    headers = dead_letter_headers(Record("t", 0, 0, None, b""), Failure(error, "deliver"))
    assert all(b"top-secret-key-123" not in v for _, v in headers)
