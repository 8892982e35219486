"""`connector dlq redrive`: replay selected dead letters.

The records matching a filter (stage, status, tenant, time range, external_id) go back to their source
topic (original key, value and headers, without the error headers) or straight to the API (decoded and
sent like the pipeline would). Straight to the API, each order is first read back: an event is skipped
when the API already holds a state at least as new (by ``updated_at``), so a redrive never moves an
order back in time; an event without ``updated_at`` (or a vendor that keeps none of ours) is refused
unless ``--force``. Calls go at ``--rate`` a second, every request counted (the fleet's 429 handling
absorbs them; run it at a fraction of the budget). Progress is kept in a consumer group named after
the filter, committed only up to the first record that failed again, so running the same redrive again
retries what failed and sends nothing already sent (``--again`` starts over). Within one run a source
record (topic, partition, offset) is sent once even if it was dead-lettered twice.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer

from connector import constants as wire
from connector._kafka import client_options, start_within
from connector.clock import SYSTEM_CLOCK
from connector.config import Settings
from connector.deadletter.reader import DeadLetter, DeadLetterReader, Filter
from connector.decode import decode
from connector.errors import ConnectorError, InputError
from connector.mapping import Mapper
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.sinks import make_sink
from connector.structs import OrderChange, Record


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


@dataclass
class _Targets:
    settings: Settings
    to: str
    producer: AIOKafkaProducer
    sink: Any
    policy: RetryPolicy
    force: bool = False
    mapper: Mapper | None = None

    def __post_init__(self) -> None:
        if self.settings.mapping.active:  # read as the connector reads: through the mapping stage
            self.mapper = Mapper(self.settings.mapping, self.settings.kafka.max_message_bytes, blocking=True)

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
        if self.to == "source":
            await self.producer.send_and_wait(
                topic or "", value=dl.value, key=dl.key, headers=dl.original_headers()
            )
            return None
        record = Record(
            topic or "", int(partition or 0), int(offset or 0), dl.key, dl.value, tuple(dl.original_headers())
        )
        sink = self.settings.sink
        try:
            if self.mapper is not None:
                change = self.mapper.read(record, sink.kind, sink.api_version, validate=True)
            else:
                change = decode(record, self.settings.kafka.max_message_bytes, sink.kind, sink.api_version)
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
                if delay is None or attempt >= sink.max_attempts:
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
    s = settings.sink
    targets = _Targets(
        settings,
        to,
        AIOKafkaProducer(enable_idempotence=True, acks="all", **client_options(settings.kafka)),
        make_sink(s, pacer=Pacer.standalone(rate, SYSTEM_CLOCK)),
        RetryPolicy(s.backoff_base_seconds, s.backoff_cap_seconds, s.max_attempts),
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
                    print(f"skipped (the API holds a newer state): {_where(dl)}", file=out)
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
    progress.show(result, done=True)
    return result


__all__ = ["STALE", "RedriveResult", "redrive"]
