"""`connector dlq inspect` and `connector dlq redrive`: look at a dead-letter topic and replay it.

inspect: every record, grouped by stage, HTTP status and reason (digits folded, so "offset 12" and
"offset 13" group together), with counts and sample external_ids.

redrive: the records matching a filter (stage, status, time range, external_id) go back to their source
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
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connector._kafka import client_options, start_within, topic_partitions
from connector.clock import SYSTEM_CLOCK
from connector.config import Settings
from connector.decode import decode
from connector.errors import ConnectorError, InputError
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.sinks import make_sink
from connector.structs import OrderChange, Record


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        """A header's value as text (the last one, if repeated)."""
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def origin(self) -> tuple[str | None, str | None, str | None]:
        """(topic, partition, offset) of the source record."""
        return (self.header("__connect.errors.topic"), self.header("__connect.errors.partition"),
                self.header("__connect.errors.offset"))  # fmt: skip

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The source record's own headers."""
        return [(k, v) for k, v in self.headers if not k.startswith(("__connect.", "__connector."))]


@dataclass
class Filter:
    """Which dead letters to redrive; empty sets match everything."""

    stages: set[str] = field(default_factory=set)
    statuses: set[str] = field(default_factory=set)
    external_ids: set[str] = field(default_factory=set)
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, dl: DeadLetter) -> bool:
        """Whether ``dl`` passes every given criterion."""
        return (
            (not self.stages or dl.header("__connector.stage") in self.stages)
            and (not self.statuses or (dl.header("__connector.http.status") or "none") in self.statuses)
            and (not self.external_ids or dl.header("__connector.external_id") in self.external_ids)
            and (self.since_ms is None or dl.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or dl.timestamp_ms < self.until_ms)
        )

    def fingerprint(self) -> str:
        """A short stable name for this filter (the redrive consumer group's suffix)."""
        parts = [
            sorted(self.stages),
            sorted(self.statuses),
            sorted(self.external_ids),
            self.since_ms,
            self.until_ms,
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


class DeadLetterReader:
    """Reads a dead-letter topic up to its end at the time of opening; with ``group_id`` (and not
    ``again``) starting after what that group committed, and able to commit progress."""

    def __init__(
        self, settings: Settings, topic: str, group_id: str | None = None, again: bool = True
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._group = group_id
        self._again = again
        self._consumer = AIOKafkaConsumer(
            group_id=group_id, enable_auto_commit=False, **client_options(settings.kafka)
        )
        self._ends: dict[TopicPartition, int] = {}
        self._first_failure: dict[TopicPartition, int] = {}

    def failed(self, dl: DeadLetter) -> None:
        """``dl`` failed again: progress is committed no further than it, so the next run retries it."""
        tp = TopicPartition(self._topic, dl.partition)
        self._first_failure[tp] = min(self._first_failure.get(tp, dl.offset), dl.offset)

    async def __aenter__(self) -> DeadLetterReader:
        k = self._settings.kafka
        await start_within(self._consumer, k.bootstrap_servers, k.start_timeout_seconds)
        parts = [
            TopicPartition(self._topic, p)
            for p in await topic_partitions(client_options(self._settings.kafka), self._topic)
        ]
        if parts:
            self._consumer.assign(parts)
            self._ends = await self._consumer.end_offsets(parts)
            starts = await self._consumer.beginning_offsets(parts)
            for tp in parts:
                committed = await self._consumer.committed(tp) if self._group and not self._again else None
                self._consumer.seek(tp, max(starts[tp], committed or 0))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def __aiter__(self) -> AsyncIterator[DeadLetter]:
        remaining = {tp for tp, end in self._ends.items() if await self._consumer.position(tp) < end}
        while remaining:
            batch = await self._consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < self._ends[tp]:
                        headers = tuple(r.headers or ())
                        yield DeadLetter(tp.partition, r.offset, r.timestamp, r.key, r.value, headers)
            for tp in list(remaining):
                if await self._consumer.position(tp) >= self._ends[tp]:
                    remaining.discard(tp)

    async def commit_all(self) -> None:
        """Mark what was read as done for this reader's group, up to the first record that failed."""
        if self._group and self._ends:
            done = {tp: min(end, self._first_failure.get(tp, end)) for tp, end in self._ends.items()}
            await self._consumer.commit(done)


def _reason(dl: DeadLetter) -> str:
    text = dl.header("__connect.errors.exception.message") or "(no message)"
    return re.sub(r"\d+", "#", re.sub(r"\(value: .*?\)", "(value: …)", text))[:100]


async def inspect(
    settings: Settings, topic: str, samples: int = 5, out: TextIO = sys.stdout, as_json: bool = False
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Summarize ``topic`` by stage, status and reason; print it; return the summary."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(lambda: {"count": 0, "external_ids": []})
    async with DeadLetterReader(settings, topic) as reader:
        async for dl in reader:
            stage, status = dl.header("__connector.stage") or "?", dl.header("__connector.http.status") or "-"
            group = groups[(stage, status, _reason(dl))]
            group["count"] += 1
            ext = dl.header("__connector.external_id")
            if ext and ext not in group["external_ids"] and len(group["external_ids"]) < samples:
                group["external_ids"].append(ext)
    rows = sorted(groups.items(), key=lambda kv: -int(kv[1]["count"]))
    if as_json:
        listing = [{"stage": s, "status": st, "reason": r, **g} for (s, st, r), g in rows]
        print(json.dumps(listing, indent=2), file=out)
        return dict(groups)
    print(
        f"{topic}: {sum(g['count'] for g in groups.values())} dead letters in {len(groups)} groups", file=out
    )
    print(f"{'count':>7}  {'stage':<9} {'status':<6} reason  [sample external_ids]", file=out)
    for (stage, status, reason), g in rows:
        print(f"{g['count']:>7}  {stage:<9} {status:<6} {reason}  {g['external_ids']}", file=out)
    return dict(groups)


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

    async def send(self, dl: DeadLetter) -> str | None:
        """Redrive one dead letter; an error message when it failed again, ``STALE`` when the API
        already holds a state at least as new."""
        topic, partition, offset = dl.origin
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
