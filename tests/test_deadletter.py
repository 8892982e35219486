"""Dead-letter headers: the Kafka Connect set, ours, the record's own, and no secrets; dead letters read
back, and the filters a redrive selects them by."""

from __future__ import annotations

import asyncio
import hashlib
from random import Random

from aiokafka.errors import MessageSizeTooLargeError

from connector import logs
from connector.deadletter import DeadLetter, DeadLetterPublisher, Failure, Filter, dead_letter_headers
from connector.deadletter.publish import record_bytes
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


# -- what no topic can hold (issue 21) ---------------------------------------------------------------
class _Topic:
    """A dead-letter topic that refuses, as the broker does, a record over ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.written: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        self.refused = 0

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        if record_bytes(key, value, headers) > self.limit:
            self.refused += 1
            raise MessageSizeTooLargeError("MESSAGE_SIZE_TOO_LARGE")
        self.written.append((key, value, dict(headers)))


def _publish(topic: _Topic, record: Record, max_bytes: int = 1024 * 1024) -> None:
    publisher = DeadLetterPublisher("orders.dlq", topic, max_bytes=max_bytes)
    asyncio.run(asyncio.wait_for(publisher.publish(record, Failure(DecodeError("too large"), "decode")), 5))


def test_a_record_that_fits_is_written_whole_and_says_nothing_more() -> None:
    topic = _Topic(1024 * 1024)
    _publish(topic, Record("orders", 2, 7, b"A-1", b'{"x": 1}', (("trace", b"t1"),)))
    [(key, value, headers)] = topic.written
    assert (key, value, headers["trace"]) == (b"A-1", b'{"x": 1}', b"t1")
    assert "__connector.value.size" not in headers


def test_a_value_past_the_topics_limit_is_cut_to_fit_with_its_size_digest_and_origin() -> None:
    """A 3 MiB value: written with its key and headers, the value cut to what fits the topic, and
    headers giving the whole value's size and SHA-256 and where it was read; not retried as it was."""
    value = bytes(range(256)) * (3 * 4096)
    topic = _Topic(1024 * 1024)
    _publish(topic, Record("orders", 2, 7, b"A-1", value, (("trace", b"t1"),)))
    assert topic.refused == 0, "sized before it was sent: never refused"
    [(key, cut, headers)] = topic.written
    assert key == b"A-1"
    assert headers["trace"] == b"t1"
    assert cut is not None
    assert value.startswith(cut)
    assert 1024 * 1024 - 10_000 < len(cut) < 1024 * 1024
    assert record_bytes(key, cut, list(headers.items())) <= 1024 * 1024
    assert headers["__connector.value.size"] == str(len(value)).encode()
    assert headers["__connector.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["__connector.value.truncated"] == str(len(cut)).encode()
    assert (headers["__connect.errors.topic"], headers["__connect.errors.partition"]) == (b"orders", b"2")
    assert headers["__connect.errors.offset"] == b"7"


def test_a_topic_holding_less_than_the_setting_says_gets_the_value_left_out() -> None:
    """The broker refuses the cut record too (the topic's max.message.bytes is below
    dlq.max_message_bytes): the value is left out, and the partition goes on."""
    topic = _Topic(20_000)
    _publish(topic, Record("orders", 0, 3, b"A-2", b"x" * 200_000))
    assert topic.refused == 1
    [(key, value, headers)] = topic.written
    assert (key, value) == (b"A-2", None)
    assert headers["__connector.value.truncated"] == b"0"
    assert headers["__connector.value.size"] == b"200000"


def test_headers_no_topic_holds_are_dropped_last_and_counted() -> None:
    """Original headers larger than the topic holds: the smallest form keeps the key, the error
    headers and the digest, and says how many headers it dropped."""
    huge = tuple((f"h{i}", b"y" * 100_000) for i in range(12))
    topic = _Topic(1024 * 1024)
    _publish(topic, Record("orders", 0, 4, b"A-3", b"{}", huge))
    [(key, value, headers)] = topic.written
    assert (key, value) == (b"A-3", None)
    assert headers["__connector.headers.dropped"] == b"12"
    assert headers["__connect.errors.offset"] == b"4"
    assert not any(k.startswith("h") for k in headers)


def test_a_topic_that_holds_no_dead_letter_gets_the_record_whole_once_its_limit_is_raised() -> None:
    """A topic set below even the smallest form refuses every form; that is the topic's fault, not
    the record's. Once an operator raises its limit the record lands whole, value and headers."""
    topic = _Topic(64)
    publisher = DeadLetterPublisher("orders.dlq", topic, rng=Random(1))
    failures: list[int] = []

    def failed() -> None:
        failures.append(topic.refused)
        if len(failures) == 2:
            topic.limit = 1024 * 1024

    publisher.on_failure = failed
    record = Record("orders", 0, 5, b"poison", b"not json", (("trace", b"t5"),))
    asyncio.run(asyncio.wait_for(publisher.publish(record, Failure(DecodeError("bad"), "decode")), 5))
    assert len(failures) == 2
    [(key, value, headers)] = topic.written
    assert (key, value, headers["trace"]) == (b"poison", b"not json", b"t5")
    assert "__connector.value.truncated" not in headers


# -- dead letters read back, and filtered -------------------------------------------------------------
def _dead_letter(failure: Failure, timestamp_ms: int = 5_000, offset: int = 42) -> DeadLetter:
    record = Record("orders", 3, offset, b"A-1", b"{}", (("trace", b"t1"),))
    return DeadLetter(
        0, 7, timestamp_ms, record.key, record.value, tuple(dead_letter_headers(record, failure))
    )


def test_a_dead_letter_read_back_says_where_it_came_from_and_keeps_its_own_headers() -> None:
    dl = _dead_letter(Failure(RejectedError("422", status=422), "deliver", "A-1"))
    assert dl.origin == ("orders", "3", "42")
    assert dl.original_headers() == [("trace", b"t1")]
    assert dl.header("__connector.stage") == "deliver"
    assert dl.header("no-such-header") is None


def test_a_filter_matches_every_criterion_given_and_everything_without_one() -> None:
    rejected = _dead_letter(Failure(RejectedError("422", status=422), "deliver", "A-1", tenant="acme"), 5_000)
    unreadable = _dead_letter(Failure(DecodeError("bad"), "decode"), 9_000)
    both = [rejected, unreadable]
    assert [Filter().matches(dl) for dl in both] == [True, True]
    assert [Filter(stages={"decode"}).matches(dl) for dl in both] == [False, True]
    assert [Filter(statuses={"422"}).matches(dl) for dl in both] == [True, False]
    assert [Filter(statuses={"none"}).matches(dl) for dl in both] == [False, True], "no HTTP status"
    assert [Filter(external_ids={"A-1"}).matches(dl) for dl in both] == [True, False]
    assert [Filter(tenants={"acme"}).matches(dl) for dl in both] == [True, False]
    assert [Filter(since_ms=5_001).matches(dl) for dl in both] == [False, True]
    assert [Filter(until_ms=9_000).matches(dl) for dl in both] == [True, False], "until is exclusive"
    assert [Filter(stages={"deliver"}, tenants={"bolt"}).matches(dl) for dl in both] == [False, False]


def test_a_filters_fingerprint_is_stable_across_releases() -> None:
    """It names the redrive's consumer group: a changed fingerprint would redrive everything again.
    A filter without tenants keeps the fingerprint it had before tenants existed."""
    assert Filter().fingerprint() == "28ff5a877a3a"
    assert Filter(stages={"deliver"}, statuses={"422"}).fingerprint() == "273960b413b9"
    assert Filter(tenants={"acme"}).fingerprint() == "f31931474db5"
    assert (
        Filter(stages={"deliver", "decode"}).fingerprint()
        == Filter(stages={"decode", "deliver"}).fingerprint()
    )
