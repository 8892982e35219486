"""The dead-letter topic: original key, value and headers, plus the Kafka Connect error headers and ours.

A dead-letter write is acknowledged by the broker (idempotent producer, ``acks=all``) before the event's
offset may be resolved. If the topic cannot be written, :meth:`DeadLetterPublisher.publish` keeps trying
(with backoff, saying so in the log) and never returns: the partition stops advancing, nothing is dropped.
The producer is behind :class:`DeadLetterWriter`, so a simulation can refuse writes.

A record no topic can hold (larger than ``dlq.max_message_bytes`` with its headers, or refused by the
broker for its size) is never retried as it is: that would block its partition for good. It is
written smaller instead, each step only if the one before cannot be (:func:`dead_letter_forms`): its
value cut to what fits, then no value, then without the original headers. If not even the smallest
form is taken (a topic whose ``max.message.bytes`` is set below any dead letter), that is the
topic's fault, not the record's: the write is retried, each round from the whole record, so the
operator who raises the limit gets the record whole. Every smaller form says
what it lacks (``__connector.value.size``, ``__connector.value.sha256``,
``__connector.value.truncated``, ``__connector.headers.dropped``) beside where the record is
(``__connect.errors.topic``, ``partition``, ``offset``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from random import Random
from types import TracebackType
from typing import Protocol, Self

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from connector import constants as wire
from connector._kafka import durable_producer, start_within
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import KafkaSettings
from connector.errors import ConnectorError, SinkError
from connector.logs import get_logger, redact
from connector.structs import Record

log = get_logger("connector.deadletter")


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an event is dead-lettered."""

    error: BaseException
    stage: str
    external_id: str | None = None
    attempts: int = 0
    first_failure_ts: float = 0.0
    last_failure_ts: float = 0.0
    tenant: str | None = None  # the shop the event is for, or names (many tenants)


def _iso(ts: float) -> bytes:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)).encode() + f".{int(ts % 1 * 1000):03d}Z".encode()
    )


def dead_letter_headers(
    record: Record, failure: Failure, body_max: int = 4096, now: float | None = None
) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the error headers of the dead-letter contract
    (``docs/design.md``)."""
    error = failure.error
    now = time.time() if now is None else now
    ours: list[tuple[str, bytes]] = [
        (wire.H_TOPIC, record.topic.encode()),
        (wire.H_PARTITION, str(record.partition).encode()),
        (wire.H_OFFSET, str(record.offset).encode()),
        (wire.H_EXCEPTION_CLASS, f"{type(error).__module__}.{type(error).__qualname__}".encode()),
        (wire.H_EXCEPTION_MESSAGE, redact(str(error))[:body_max].encode()),
        (wire.H_STAGE, failure.stage.encode()),
        (wire.H_ATTEMPTS, str(failure.attempts).encode()),
        (wire.H_FIRST_FAILURE, _iso(failure.first_failure_ts or now)),
        (wire.H_LAST_FAILURE, _iso(failure.last_failure_ts or now)),
    ]
    if failure.external_id is not None:
        ours.append((wire.H_EXTERNAL_ID, failure.external_id.encode()))
    if failure.tenant:
        ours.append((wire.H_TENANT, failure.tenant.encode()))
    if isinstance(error, SinkError):
        if error.status is not None:
            ours.append((wire.H_HTTP_STATUS, str(error.status).encode()))
        ours.append((wire.H_HTTP_BODY, redact(error.body)[:body_max].encode()))
    own = [(k, v) for k, v in record.headers if not k.startswith(wire.ERROR_HEADER_PREFIXES)]
    return own + ours


_KEY_KEPT = 1024
"""The longest key the smallest form keeps whole (a longer one is cut, with its digest)."""


@dataclass(frozen=True, slots=True)
class Form:
    """One way of writing a dead letter: the key, value and headers, and what it lacks, in words."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    lacks: str = ""


def record_bytes(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """What a record takes in a produce request, as the producer reckons it (a batch of one)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def dead_letter_forms(record: Record, headers: list[tuple[str, bytes]], max_bytes: int) -> Iterator[Form]:
    """The forms of a dead letter, from the whole record down to what any topic holds: the first
    only if it fits ``max_bytes``; each smaller one with headers saying what it lacks."""
    key, value = record.key, record.value
    if record_bytes(key, value, headers) <= max_bytes:
        yield Form(key, value, headers)
    size = len(value or b"")
    about = [
        (wire.H_VALUE_SIZE, str(size).encode()),
        (wire.H_VALUE_SHA256, hashlib.sha256(value or b"").hexdigest().encode()),
    ]
    if value:
        marked = [*headers, *about, (wire.H_VALUE_TRUNCATED, b"0000000000")]
        room = max_bytes - record_bytes(key, b"", marked) - 8  # the length's varint may grow
        if 0 < room < size:
            cut = value[:room]
            kept = [*headers, *about, (wire.H_VALUE_TRUNCATED, str(len(cut)).encode())]
            yield Form(key, cut, kept, f"value cut to {len(cut)} of {size} bytes")
    yield Form(
        key, None, [*headers, *about, (wire.H_VALUE_TRUNCATED, b"0")], f"value of {size} bytes left out"
    )
    own = [(k, v) for k, v in headers if k.startswith(wire.ERROR_HEADER_PREFIXES)]
    dropped = len(headers) - len(own)
    small_key = key
    extra = [(wire.H_HEADERS_DROPPED, str(dropped).encode())]
    if key is not None and len(key) > _KEY_KEPT:
        small_key = key[:_KEY_KEPT]
        extra += [
            (wire.H_KEY_SIZE, str(len(key)).encode()),
            (wire.H_KEY_SHA256, hashlib.sha256(key).hexdigest().encode()),
        ]
    minimal = [*own, *about, (wire.H_VALUE_TRUNCATED, b"0"), *extra]
    yield Form(small_key, None, minimal, f"value left out, {dropped} original headers dropped")


def too_large(exc: BaseException | None) -> bool:
    """Whether ``exc`` refuses a record for its size (the producer's own check, or the broker's)."""
    return isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError | RecordTooLargeError)


class DeadLetterWriter(Protocol):
    """Writes one record to a topic; returns once the broker acknowledged it, or raises."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None: ...


class KafkaDeadLetterWriter:
    """An idempotent, ``acks=all`` producer, taking records up to ``max_bytes``."""

    def __init__(self, kafka: KafkaSettings, max_bytes: int = 1024 * 1024) -> None:
        self._kafka = kafka
        self._producer = durable_producer(kafka, "dlq", max_bytes)

    async def __aenter__(self) -> Self:
        await start_within(self._producer, self._kafka.bootstrap_servers, self._kafka.start_timeout_seconds)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """``send_and_wait``: acknowledged by every in-sync replica."""
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)


class DeadLetterPublisher:
    """Builds dead-letter records and writes them until the broker acknowledges them."""

    def __init__(
        self,
        topic: str,
        writer: DeadLetterWriter,
        body_max: int = 4096,
        retry_cap_seconds: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: Random | None = None,
        max_bytes: int = 1024 * 1024,
    ) -> None:
        self.topic = topic
        self._writer = writer
        self._body_max = body_max
        self._max_bytes = max_bytes
        self._retry_cap = retry_cap_seconds
        self._clock = clock
        self._rng = rng or Random()
        self.on_failure: Callable[[], None] | None = None

    async def publish(self, record: Record, failure: Failure) -> None:
        """Write ``record`` to the dead-letter topic; return only once the broker acknowledged it. A
        record refused for its size is written smaller (:func:`dead_letter_forms`), never retried
        as it is."""
        headers = dead_letter_headers(record, failure, self._body_max, self._clock.wall())
        rounds = 0
        while True:
            error: Exception | None = None
            for form in dead_letter_forms(record, headers, self._max_bytes):
                try:
                    await self._writer.send(self.topic, form.key, form.value, form.headers)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any broker error: keep trying, never drop the event
                    error = exc
                    if too_large(exc):
                        continue  # the next, smaller form
                    break
                if form.lacks:
                    log.warning(
                        "dead_letter_cut",
                        dlq_topic=self.topic,
                        lacks=form.lacks,
                        max_bytes=self._max_bytes,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    )
                return
            # Not even the smallest form was taken, or the broker failed: the next round starts
            # again from the whole record, so a topic whose limit an operator raises meanwhile gets
            # the record whole, not the form the limit forced before.
            rounds += 1
            if self.on_failure is not None:
                self.on_failure()
            wait = self._rng.uniform(0, min(self._retry_cap, 0.1 * 2 ** min(rounds, 10)))
            log.error(
                "dead_letter_write_failed",
                dlq_topic=self.topic,
                attempt=rounds,
                error=f"{type(error).__name__}: {error}",
                retry_in_s=round(wait, 2),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            await asyncio.sleep(wait)


__all__ = [
    "ConnectorError",
    "DeadLetterPublisher",
    "DeadLetterWriter",
    "Failure",
    "Form",
    "KafkaDeadLetterWriter",
    "dead_letter_forms",
    "dead_letter_headers",
    "record_bytes",
    "too_large",
]
