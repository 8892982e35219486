"""Reading a dead-letter topic: its records (:class:`DeadLetter`), filters on them, and
`connector dlq inspect`.

inspect: every record, grouped by stage, HTTP status and reason (digits folded, so "offset 12" and
"offset 13" group together), with counts and sample external_ids.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition

from connector._kafka import client_options, start_within, topic_partitions
from connector.config import Settings


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
    tenants: set[str] = field(default_factory=set)

    def matches(self, dl: DeadLetter) -> bool:
        """Whether ``dl`` passes every given criterion."""
        return (
            (not self.stages or dl.header("__connector.stage") in self.stages)
            and (not self.statuses or (dl.header("__connector.http.status") or "none") in self.statuses)
            and (not self.external_ids or dl.header("__connector.external_id") in self.external_ids)
            and (self.since_ms is None or dl.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or dl.timestamp_ms < self.until_ms)
            and (not self.tenants or dl.header("__connector.tenant") in self.tenants)
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
        if self.tenants:  # appended only when set: the fingerprints of earlier filters are unchanged
            parts.append(sorted(self.tenants))
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


__all__ = ["DeadLetter", "DeadLetterReader", "Filter", "inspect"]
