"""The dead-letter topic: original key, value and headers, plus the Kafka Connect error headers and ours.

A dead-letter write is acknowledged by the broker (idempotent producer, ``acks=all``) before the event's
offset may be resolved. If the topic cannot be written, :meth:`DeadLetterPublisher.publish` keeps trying
(with backoff, saying so in the log) and never returns: the partition stops advancing, nothing is dropped.
The producer is behind :class:`DeadLetterWriter`, so a simulation can refuse writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from types import TracebackType
from typing import Protocol, Self

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


class DeadLetterWriter(Protocol):
    """Writes one record to a topic; returns once the broker acknowledged it, or raises."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None: ...


class KafkaDeadLetterWriter:
    """An idempotent, ``acks=all`` producer."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._producer = durable_producer(kafka, "dlq")

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
    ) -> None:
        self.topic = topic
        self._writer = writer
        self._body_max = body_max
        self._retry_cap = retry_cap_seconds
        self._clock = clock
        self._rng = rng or Random()
        self.on_failure: Callable[[], None] | None = None

    async def publish(self, record: Record, failure: Failure) -> None:
        """Write ``record`` to the dead-letter topic; return only once the broker acknowledged it."""
        headers = dead_letter_headers(record, failure, self._body_max, self._clock.wall())
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._writer.send(self.topic, record.key, record.value, headers)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any broker error: keep trying, never drop the event
                if self.on_failure is not None:
                    self.on_failure()
                wait = self._rng.uniform(0, min(self._retry_cap, 0.1 * 2 ** min(attempt, 10)))
                log.error(
                    "dead_letter_write_failed",
                    dlq_topic=self.topic,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
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
    "KafkaDeadLetterWriter",
    "dead_letter_headers",
]
