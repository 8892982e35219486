"""``connector trace ORDER``: the story of one order, from the source topic to the vendor's copy.

Reads the source topics (from ``--since``, bounded by ``--max-records``, progress on stderr) for the
records of one order, decodes each as the read path does, and tells what the connector's rules
decide for it (:func:`decide`: the same rules as :class:`~connector.coalesce.Coalescer`: older than
the newest accepted is stale, the same payload as it is identical, a newer one supersedes it; a
record that does not decode is dead-lettered), whether the group's commit has passed it, the order's
dead letters, and, with one request paced like any other, what the vendor holds now, with a one-line
verdict (:class:`Verdict`).

A record names the order through the read path's decode, whatever the format (our envelope, a
mapping, Debezium): every partition is read, unless the record key is given (``--key``: keys differ
by format, so it is not guessed), then only the partition the producer's partitioner puts it in.
With many shops, one shop's order (``--tenant``): its records are those routed to it (by its name or
an alias), read through its own mapping, and its vendor account is asked; a delete that names no
shop (a tombstone routed by its key's last shop) is not told.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from connector._compare import shown
from connector._kafka import client_options, start_within, topic_partitions
from connector.clock import SystemClock
from connector.config import Settings, SinkSettings
from connector.constants import H_EXCEPTION_MESSAGE, H_EXTERNAL_ID, H_STAGE, H_TENANT
from connector.errors import ConfigError, InputError, RouteError
from connector.mapping import FileMapping, FunctionMapping
from connector.pacing import Pacer
from connector.readback import Held, Verdict, compare, iso, judge, read_back
from connector.route import Route
from connector.structs import OrderChange, Record, Version
from connector.vendors import Target, make_sink, target

PROGRESS_EVERY = 20_000
"""Records read between two progress lines on stderr."""


@dataclass(frozen=True, slots=True)
class Step:
    """One record of the order, and what the rules decided for it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    op: str | None
    updated_at: str | None
    decision: str  # newest, superseded, stale, identical, dead-lettered
    detail: str
    committed: bool  # the group's commit has passed it


@dataclass
class Story:
    """What ``connector trace`` found for one order."""

    order: str
    steps: list[Step] = field(default_factory=list)
    scanned: int = 0
    dead_letters: list[str] = field(default_factory=list)
    held: bool | None = None  # the vendor holds the order (None: not asked)
    held_updated_at: str | None = None
    differs: list[str] = field(default_factory=list)  # the fields sent that the vendor holds otherwise
    verdict: Verdict = Verdict.NO_EVENTS
    line: str = ""


@dataclass(frozen=True)
class _Shop:
    """Whose order is traced: the deployment's one shop, or one of its many (``route`` set)."""

    sink: SinkSettings
    name: str = ""
    names: frozenset[str] = frozenset()  # the shop's name and aliases, as events may route to it
    route: Route | None = None
    mapping: FileMapping | FunctionMapping | None = None

    def locate(self, record: Record, data: Any) -> tuple[str, Target]:
        """The shop ``record`` is for, when it is this one (else a RouteError: skipped)."""
        assert self.route is not None
        name = self.route.tenant_of(record, data)
        if name not in self.names:
            raise RouteError(f"another shop's ({name})")
        return self.name, target(self.sink.kind, self.sink.api_version)

    def mapping_of(self, tenant: str) -> FileMapping | FunctionMapping | None:
        """The shop's own mapping (None: the deployment's)."""
        return self.mapping if tenant == self.name else None


def _shop(settings: Settings, tenant: str) -> _Shop:
    """The shop traced: with ``tenants.path``, ``tenant`` (by its name or an alias) as the tenants
    files define it; else the ``sink`` section's (and ``tenant`` must be empty)."""
    if not settings.tenants.path:
        if tenant:
            raise ConfigError("--tenant: this deployment serves one shop (tenants.path is not set)")
        return _Shop(settings.sink)
    from connector.tenants import TenantDirectory

    directory = TenantDirectory(settings.tenants.path)
    owner = {n: t for t in directory.tenants.values() for n in (t.name, *t.aliases)}
    found = owner.get(tenant)
    if found is None:
        served = ", ".join(sorted(directory.tenants)[:20])
        raise ConfigError(f"--tenant {tenant!r}: name one of the shops of tenants.path ({served})")
    return _Shop(
        settings.sink.calling(found.account()),
        found.name,
        frozenset((found.name, *found.aliases)),
        Route.parse(settings.tenants.route),
        directory.mappings.get(found.name),
    )


def decide(changes: Sequence[OrderChange | InputError]) -> list[tuple[str, str]]:
    """Each record's decision and why, in the order given (the log's, per partition): a change
    older than the newest accepted is stale (the newest standing for the events skipped as identical
    to it too, as in the coalescer), one with its payload identical, any other is accepted, and
    superseded once a newer one is accepted; the last accepted is the newest. Errors are
    dead-lettered."""
    out: list[tuple[str, str]] = []
    newest: int | None = None  # index of the newest accepted change
    seen: Version | None = None  # the versions of events skipped as identical, joined
    for i, item in enumerate(changes):
        if isinstance(item, InputError):
            out.append(("dead-lettered", f"stage {item.stage}: {item}"))
            continue
        if newest is not None:
            current = changes[newest]
            assert isinstance(current, OrderChange)
            where = f"offset {current.record.offset}"
            if item.version.older_than(current.version.joined(seen)):
                out.append(("stale", f"older than {where}"))
                continue
            if item.digest == current.digest:
                seen = item.version.joined(seen)
                out.append(("identical", f"the same state as {where}"))
                continue
            out[newest] = ("superseded", f"by offset {item.record.offset}")
        newest = i
        out.append(("newest", "the state the vendor should hold"))
    return out


Item = OrderChange | InputError


def _as_read(found: list[tuple[Record, Item]]) -> list[tuple[Record, Item]]:
    """The order's records as the connector would have read them: each partition in offset order,
    partitions merged by record time (the order the coalescer saw them in is not recorded; events of
    two partitions without ``updated_at`` are told apart by it)."""
    by_partition: dict[tuple[str, int], list[tuple[Record, Item]]] = {}
    for record, item in sorted(found, key=lambda f: (f[0].topic, f[0].partition, f[0].offset)):
        by_partition.setdefault((record.topic, record.partition), []).append((record, item))
    return list(heapq.merge(*by_partition.values(), key=lambda f: f[0].timestamp_ms))


def sendable(
    items: list[Item], vendor: Target, ignore_deletes: bool
) -> tuple[list[tuple[str, str]], OrderChange | None]:
    """:func:`decide`, then the newest checked against the vendor model as it is just before it is
    sent: one that does not fit is dead-lettered (stage ``validate``) and the newest before it takes
    its place, again until one fits. Deletes are ignored with ``delivery.on_delete = ignore``.
    Returns each item's decision, and the change the vendor should hold (None: none)."""
    from connector.conform import check

    considered = list(items)
    while True:
        kept = [i for i, item in enumerate(considered) if not _ignored(item, ignore_deletes)]
        decided = decide([considered[i] for i in kept])
        decisions = [("ignored", "a delete, with delivery.on_delete = ignore")] * len(considered)
        for i, d in zip(kept, decided, strict=True):
            decisions[i] = d
        newest = next((i for i, (d, _) in enumerate(decisions) if d == "newest"), None)
        if newest is None:
            return decisions, None
        change = considered[newest]
        assert isinstance(change, OrderChange)
        try:
            check(change, vendor)
        except InputError as exc:
            considered[newest] = exc
            continue
        return decisions, change


def _ignored(item: Item, ignore_deletes: bool) -> bool:
    return ignore_deletes and isinstance(item, OrderChange) and item.op == "delete"


async def trace(
    settings: Settings,
    order: str,
    *,
    since_ms: int | None = None,
    max_records: int = 1_000_000,
    ask_vendor: bool = True,
    tenant: str = "",
    key: bytes | None = None,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Story:
    """The story of ``order`` (its external id); with many shops (``tenants.path``), of ``tenant``'s
    order of that id. ``key``: the order's record key, when known: only the partition the producer's
    default partitioner puts it in is read, in each topic (Kafka's murmur2, as Java clients hash)."""
    from connector.reader import mapper_for

    story = Story(order)
    shop = _shop(settings, tenant)
    mapper = mapper_for(settings, tenant_mapping=shop.mapping_of) if shop.route else mapper_for(settings)
    vendor = target(shop.sink.kind, shop.sink.api_version)
    found: list[tuple[Record, Item]] = []

    def read(record: Record) -> None:
        try:
            if mapper is not None:
                locate = shop.locate if shop.route else None
                change: OrderChange = mapper.read(record, vendor, validate=False, locate=locate, lazy=False)
            else:
                from connector.decode import decode

                change = decode(record, settings.kafka.max_message_bytes, vendor, validate=False)
        except RouteError:
            return  # another shop's record (or one naming no shop: the connector dead-letters it)
        except InputError as exc:
            if exc.external_id == order:
                found.append((record, exc))
            return
        except Exception:  # not this order's concern (the connector dead-letters it)
            return
        if change.external_id == order:
            found.append((record, change))

    options = client_options(settings.kafka)
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **options)
    k = settings.kafka
    await start_within(consumer, k.bootstrap_servers, k.start_timeout_seconds)
    try:
        parts = []
        for topic in k.topics:
            numbers = await topic_partitions(options, topic)
            if key is not None and numbers:
                numbers = [DefaultPartitioner()(key, numbers, numbers)]
            parts += [KafkaTP(topic, p) for p in numbers]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        since = await consumer.offsets_for_times({tp: since_ms for tp in parts}) if since_ms else {}
        for tp in parts:
            at = since.get(tp)
            consumer.seek(tp, at.offset if at is not None else (ends[tp] if since_ms else starts[tp]))
        remaining = {tp for tp in parts if await consumer.position(tp) < ends[tp]}
        total = 0
        for tp in remaining:
            total += ends[tp] - await consumer.position(tp)
        bound = min(total, max_records)
        progress(f"reading {bound:,} records of {len(parts)} partitions for order {order}")
        while remaining and story.scanned < max_records:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            records = [
                Record(tp.topic, tp.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)
                for tp, batch_records in batch.items()
                for r in batch_records
                if r.offset < ends[tp]
            ][: max_records - story.scanned]
            if mapper is not None:
                await mapper.prefetch(records)  # Avro: the schemas these records name, once per id
            for record in records:
                story.scanned += 1
                read(record)
                if story.scanned % PROGRESS_EVERY == 0:
                    progress(f"  {story.scanned:,} of {bound:,} read, {len(found)} of the order")
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()

    committed = await _committed(settings)
    ordered = _as_read(found)
    ignore_deletes = settings.delivery.on_delete == "ignore"
    items = [item for _, item in ordered]
    decisions, newest = sendable(items, vendor, ignore_deletes)
    for (record, item), (decision, detail) in zip(ordered, decisions, strict=True):
        change = item if isinstance(item, OrderChange) else None
        story.steps.append(
            Step(
                record.topic, record.partition, record.offset, record.timestamp_ms,
                change.op if change else None,
                iso(change.updated_at) if change and change.updated_at else None,
                decision, detail,
                record.offset < committed.get((record.topic, record.partition), 0),
            )
        )  # fmt: skip
    story.dead_letters = await _dead_letters(settings, order, shop.names if shop.route else None)
    held: Held | None = None
    if ask_vendor and newest is not None:
        held = await _held(shop.sink, newest)
    if held is not None:
        story.held, story.held_updated_at = held.found, iso(held.updated_at) if held.updated_at else None
    if newest is not None and held is None:
        story.verdict, story.line = Verdict.UNKNOWN, (
            "the vendor was not asked (--no-vendor)" if not ask_vendor
            else "the vendor keeps no updated_at of ours to compare"
        )  # fmt: skip
    elif newest is None or held is None:
        story.verdict, story.line = judge(newest, False, None)
    else:
        story.verdict, story.line, story.differs = compare(newest, held)
    return story


async def _committed(settings: Settings) -> dict[tuple[str, int], int]:
    """The group's committed offset of each partition (none: nothing committed yet). A broker that
    never had a group answers "coordinator not available" until it made its offsets topic: asked
    again, within ``kafka.start_timeout_seconds``."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    deadline = asyncio.get_running_loop().time() + settings.kafka.start_timeout_seconds
    try:
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(settings.kafka.group_id)
                break
            except KafkaError as exc:
                if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def _dead_letters(settings: Settings, order: str, shop: frozenset[str] | None) -> list[str]:
    """The order's dead letters (``shop``: of one of these names only): where each came from, its
    stage and reason."""
    from connector.deadletter.reader import DeadLetterReader

    out: list[str] = []
    if not settings.dlq.topic:
        return out
    async with DeadLetterReader(settings, settings.dlq.topic) as reader:
        async for dl in reader:
            if dl.header(H_EXTERNAL_ID) == order and (shop is None or dl.header(H_TENANT) in shop):
                topic, partition, offset = dl.origin
                stage, message = dl.header(H_STAGE), dl.header(H_EXCEPTION_MESSAGE) or ""
                out.append(f"{topic}-{partition}@{offset}: stage {stage}, {message}")
    return out


async def _held(account: SinkSettings, newest: OrderChange) -> Held | None:
    """What the vendor holds for ``newest``'s order (one request, paced at the shop's budget); None
    when the vendor keeps no version of ours to compare (Shoplazza)."""
    pacer = Pacer.standalone(account.rate_limit_per_second, SystemClock())
    async with make_sink(account, None, pacer) as sink:
        return await read_back(sink, newest)


def render(story: Story) -> str:
    """The story for a person."""
    lines = [
        f"order {story.order}: {story.line}",
        f"  {story.scanned:,} records read, {len(story.steps)} of this order",
    ]
    for s in story.steps:
        state = f"{s.op} updated_at {s.updated_at}" if s.op else "does not decode"
        where = f"{s.topic}-{s.partition}@{s.offset}"
        commit = "committed" if s.committed else "not committed yet"
        lines.append(f"  {where:<24} {state:<48} {s.decision}: {s.detail} ({commit})")
    for dl in story.dead_letters:
        lines.append(f"  dead letter: {dl}")
    if story.differs:
        lines.append(f"  fields the vendor holds otherwise than sent: {shown(story.differs)}")
    if story.held is not None:
        lines.append(
            f"  vendor: {'holds it' if story.held else 'does not hold it'}"
            + (f", updated_at {story.held_updated_at}" if story.held_updated_at else "")
        )
    return "\n".join(lines)


def as_json(story: Story) -> dict[str, object]:
    """The story for a script."""
    out = asdict(story)
    out["verdict"] = str(story.verdict)
    return out


__all__ = [
    "Step",
    "Story",
    "as_json",
    "decide",
    "render",
    "sendable",
    "trace",
]
