"""`connector dlq redrive`: replay selected dead letters.

The records matching a filter (stage, status, tenant, time range, external_id) go back to their source
topic (original key, value and headers, without the error headers) or straight to the API (decoded and
sent like the pipeline would). Back to the source, a record lands at the partition's end, where an event
ordered by offset (no ``updated_at``) would read as the order's newest state, and a timed one as new once
its order's newer events are no longer remembered: so each source partition is read first (once), and an
event with another event of its order there that is not older (the same record key; after it, or with a
newer ``updated_at``: ``Version.older_than``) is skipped as stale; only ``--force`` sends it anyway.
Straight to the API, each order is first read back: an event is skipped when the API already holds a
state at least as new (by ``updated_at``), so a redrive never moves an order back in time; an event
without ``updated_at`` (or a vendor that keeps none of ours) is refused unless ``--force``. Calls go at
``--rate`` a second, every request counted (the fleet's 429 handling absorbs them; run it at a fraction
of the budget). Progress is kept in a consumer group named after the filter, committed only up to the
first record that failed again, so running the same redrive again retries what failed and sends nothing
already sent (``--again`` starts over). Within one run a source record (topic, partition, offset) is
sent once even if it was dead-lettered twice.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP

from connector import constants as wire
from connector._kafka import HEADERS_ROOM, client_options, start_within
from connector.clock import SYSTEM_CLOCK
from connector.config import Settings
from connector.deadletter.reader import DeadLetter, DeadLetterReader, Filter
from connector.decode import decode
from connector.errors import ConnectorError, InputError
from connector.mapping import Mapper
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.structs import OrderChange, Record, Version
from connector.vendors import make_sink, target


@dataclass
class RedriveResult:
    """What a redrive run did."""

    scanned: int = 0
    matched: int = 0
    sent: int = 0
    duplicates: int = 0
    stale: int = 0
    failed: list[str] = field(default_factory=list)


class _Progress:
    """One line on stderr, redrawn at most twice a second on a terminal; printed once at the end."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = 0.0

    def show(self, r: RedriveResult, done: bool = False) -> None:
        now = time.monotonic()
        if not done and (now - self._last < 0.5 or not self._out.isatty()):
            return
        self._last = now
        line = (
            f"redrive: scanned {r.scanned}, matched {r.matched}, sent {r.sent}, "
            f"duplicates {r.duplicates}, stale {r.stale}, failed {len(r.failed)}"
        )
        print(f"\r{line}", end="\n" if done else "", file=self._out, flush=True)


class _SourceLog:
    """Every event of the source partitions dead letters came from, by record key: read once per
    partition, from its first offset to the end it had when first asked (what this redrive appends is
    not read)."""

    def __init__(self, settings: Settings, read: Callable[[Record], OrderChange]) -> None:
        self._settings = settings
        self._read = read
        self._consumer: AIOKafkaConsumer | None = None
        self._versions: dict[tuple[str, int], dict[bytes, list[Version]]] = {}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            kafka = self._settings.kafka
            self._consumer = AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=max(1024 * 1024, kafka.max_message_bytes + 1024),
                **client_options(kafka),
            )
            await start_within(self._consumer, kafka.bootstrap_servers, kafka.start_timeout_seconds)
        return self._consumer

    def _version(self, record: Record) -> Version | None:
        try:
            return self._read(record).version
        except InputError:
            return None  # it does not decode: dead-lettered itself, no state of an order

    async def _partition(self, topic: str, partition: int) -> dict[bytes, list[Version]]:
        found = self._versions.get((topic, partition))
        if found is not None:
            return found
        consumer = await self._reader()
        tp = KafkaTP(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        versions: dict[bytes, list[Version]] = {}
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
            for r in batches.get(tp, ()):
                if r.offset < end and r.key is not None:
                    version = self._version(
                        Record(topic, partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                    )
                    if version is not None:
                        versions.setdefault(r.key, []).append(version)
        self._versions[(topic, partition)] = versions
        return versions

    async def newer(self, record: Record, change: OrderChange) -> bool:
        """Whether ``record``'s source partition holds another event of its order (its record key) not
        older than ``change``: after it, or before it with a newer ``updated_at``."""
        if record.key is None:
            return False
        versions = (await self._partition(record.topic, record.partition)).get(record.key, ())
        return any(v.offset != record.offset and not v.older_than(change.version) for v in versions)


@dataclass
class _Targets:
    settings: Settings
    to: str
    producer: AIOKafkaProducer
    sink: Any
    policy: RetryPolicy
    force: bool = False
    mapper: Mapper | None = None

    tail: _SourceLog | None = None

    def __post_init__(self) -> None:
        if self.settings.mapping.active:  # read as the connector reads: through the mapping stage
            self.mapper = Mapper(self.settings.mapping, self.settings.kafka.max_message_bytes, blocking=True)
        if self.to == "source" and not self.force:
            self.tail = _SourceLog(self.settings, self._cheap)

    def _cheap(self, record: Record) -> OrderChange:
        """``record`` read as the pipeline's read path reads it (no vendor validation)."""
        sink = self.settings.sink
        if self.mapper is not None:
            return self.mapper.read(record, target(sink.kind, sink.api_version), validate=False)
        return decode(
            record, self.settings.kafka.max_message_bytes, target(sink.kind, sink.api_version), validate=False
        )

    async def send(self, dl: DeadLetter) -> str | None:
        """Redrive one dead letter; an error message when it failed again, ``STALE`` when the API
        already holds a state at least as new."""
        topic, partition, offset = dl.origin
        cut = dl.header(wire.H_VALUE_TRUNCATED)
        if cut is not None:
            return (
                f"{topic}-{partition}@{offset}: its value of {dl.header(wire.H_VALUE_SIZE)} bytes was "
                f"{'left out' if cut == '0' else f'cut to {cut} bytes'} (no topic could hold it): read it "
                "from its source at that offset, or have the producer send it again"
            )
        record = Record(
            topic or "", int(partition or 0), int(offset or 0), dl.key, dl.value, tuple(dl.original_headers())
        )
        if self.to == "source":
            if self.tail is not None and offset is not None and partition is not None:
                try:
                    change: OrderChange | None = self._cheap(record)
                except InputError:
                    change = None  # it cannot be read yet: nothing to be stale against
                if change is not None and await self.tail.newer(record, change):
                    return STALE
            await self.producer.send_and_wait(
                topic or "", value=dl.value, key=dl.key, headers=dl.original_headers()
            )
            return None
        sink = self.settings.sink
        to = target(sink.kind, sink.api_version)
        try:
            if self.mapper is not None:
                change = self.mapper.read(record, to, validate=True)
            else:
                change = decode(record, self.settings.kafka.max_message_bytes, to)
        except InputError as exc:
            return f"{topic}-{partition}@{offset}: still invalid: {exc}"
        where = f"{topic}-{partition}@{offset} external_id={change.external_id}"
        if not self.force:
            try:
                newer = await self._held_newer(change)
            except ConnectorError as exc:
                return f"{where}: could not read what the API holds: {exc}"
            if isinstance(newer, str):
                return f"{where}: {newer}"
            if newer:
                return STALE
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.sink.apply(change)
                return None
            except ConnectorError as exc:
                delay = self.policy.delay(exc, attempt)
                if delay is None or attempt >= self.settings.delivery.max_attempts:
                    return f"{where}: {exc}"
                await asyncio.sleep(delay)

    async def _held_newer(self, change: OrderChange) -> bool | str:
        """Whether the API holds a state at least as new as ``change``; a reason when it cannot tell."""
        if change.updated_at is None:
            return "the event has no updated_at: cannot tell whether a newer state was sent (--force)"
        try:
            exists, held = await self.sink.held_version(change)
        except NotImplementedError as exc:
            return f"{exc} (--force)"
        if not exists:
            return change.op == "delete"  # a delete of an order already gone: nothing to do
        return held is not None and held >= change.updated_at


STALE = "stale"


def _where(dl: DeadLetter) -> str:
    return f"{dl.origin[0]}-{dl.origin[1]}@{dl.origin[2]} external_id={dl.header('__connector.external_id')}"


async def redrive(
    settings: Settings,
    topic: str,
    flt: Filter,
    to: str = "source",
    dry_run: bool = False,
    again: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    rate: float = 1.0,
    force: bool = False,
) -> RedriveResult:
    """Send the dead letters matching ``flt`` back to their source topic (``to="source"``) or to the
    API (``to="api"``); record progress under a group named after the filter unless ``dry_run``."""
    result, progress = RedriveResult(), _Progress(err)
    seen: set[tuple[str | None, str | None, str | None]] = set()
    s, d = settings.sink, settings.delivery
    targets = _Targets(
        settings,
        to,
        AIOKafkaProducer(
            enable_idempotence=True,
            acks="all",
            max_request_size=settings.kafka.max_message_bytes + HEADERS_ROOM,  # what was read, back
            **client_options(settings.kafka),
        ),
        make_sink(s, pacer=Pacer.standalone(rate, SYSTEM_CLOCK)),
        RetryPolicy(d.backoff_base_seconds, d.backoff_cap_seconds, d.max_attempts),
        force,
    )
    if not dry_run and to == "source":
        await start_within(
            targets.producer, settings.kafka.bootstrap_servers, settings.kafka.start_timeout_seconds
        )
    group = f"{topic}.redrive.{flt.fingerprint()}"
    try:
        async with targets.sink, DeadLetterReader(settings, topic, group, again) as reader:
            async for dl in reader:
                result.scanned += 1
                if not flt.matches(dl):
                    continue
                result.matched += 1
                if dl.origin in seen:
                    result.duplicates += 1
                    continue
                seen.add(dl.origin)
                if dry_run:
                    print(f"would redrive {_where(dl)}", file=out)
                    continue
                error = await targets.send(dl)
                if error == STALE:
                    result.stale += 1
                    held = "the API holds" if to == "api" else "its source partition holds, after it,"
                    print(f"skipped ({held} a newer state): {_where(dl)}", file=out)
                elif error:
                    result.failed.append(error)
                    reader.failed(dl)
                    print(f"failed again: {error}", file=out)
                else:
                    result.sent += 1
                progress.show(result)
            if not dry_run:
                await reader.commit_all()
    finally:
        if not dry_run and to == "source":
            await targets.producer.stop()
        if targets.tail is not None:
            await targets.tail.close()
    progress.show(result, done=True)
    return result


__all__ = ["STALE", "RedriveResult", "redrive"]
