"""The dead-letter topic: original key, value and headers, plus the Kafka Connect error headers and ours.

A dead-letter write is acknowledged by the broker (idempotent producer, ``acks=all``) before the event's
offset may be resolved. If the topic cannot be written, :meth:`DeadLetterPublisher.publish` keeps trying
(with backoff, saying so in the log) and never returns: the partition stops advancing, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer

from connector._kafka import client_options, start_within
from connector.config import KafkaSettings
from connector.decode import Record
from connector.errors import ConnectorError, SinkError
from connector.logs import get_logger, redact

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


def _iso(ts: float) -> bytes:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)).encode() + f".{int(ts % 1 * 1000):03d}Z".encode()
    )


def dead_letter_headers(record: Record, failure: Failure, body_max: int = 4096) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the error headers of ``docs/design.md``."""
    error = failure.error
    now = time.time()
    ours: list[tuple[str, bytes]] = [
        ("__connect.errors.topic", record.topic.encode()),
        ("__connect.errors.partition", str(record.partition).encode()),
        ("__connect.errors.offset", str(record.offset).encode()),
        (
            "__connect.errors.exception.class.name",
            f"{type(error).__module__}.{type(error).__qualname__}".encode(),
        ),
        ("__connect.errors.exception.message", redact(str(error))[:body_max].encode()),
        ("__connector.stage", failure.stage.encode()),
        ("__connector.attempts", str(failure.attempts).encode()),
        ("__connector.first_failure_ts", _iso(failure.first_failure_ts or now)),
        ("__connector.last_failure_ts", _iso(failure.last_failure_ts or now)),
    ]
    if failure.external_id is not None:
        ours.append(("__connector.external_id", failure.external_id.encode()))
    if isinstance(error, SinkError):
        if error.status is not None:
            ours.append(("__connector.http.status", str(error.status).encode()))
        ours.append(("__connector.http.body", redact(error.body)[:body_max].encode()))
    own = [(k, v) for k, v in record.headers if not k.startswith(("__connect.", "__connector."))]
    return own + ours


class DeadLetterPublisher:
    """An idempotent, ``acks=all`` producer for the dead-letter topic."""

    def __init__(
        self, topic: str, kafka: KafkaSettings, body_max: int = 4096, retry_cap_seconds: float = 10.0
    ) -> None:
        self.topic = topic
        self._kafka = kafka
        self._body_max = body_max
        self._retry_cap = retry_cap_seconds
        self._producer = AIOKafkaProducer(
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=15_000,
            client_id=f"{kafka.client_id}-dlq",
            **client_options(kafka),
        )
        self.on_failure: Callable[[], None] | None = None

    async def __aenter__(self) -> Self:
        await start_within(self._producer, self._kafka.bootstrap_servers, self._kafka.start_timeout_seconds)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def publish(self, record: Record, failure: Failure) -> None:
        """Write ``record`` to the dead-letter topic; return only once the broker acknowledged it."""
        headers = dead_letter_headers(record, failure, self._body_max)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._producer.send_and_wait(
                    self.topic,
                    value=record.value,
                    key=record.key,
                    headers=headers,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any broker error: keep trying, never drop the event
                if self.on_failure is not None:
                    self.on_failure()
                wait = random.uniform(0, min(self._retry_cap, 0.1 * 2 ** min(attempt, 10)))
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


__all__ = ["ConnectorError", "DeadLetterPublisher", "Failure", "dead_letter_headers"]
