"""``connector resync``: ask the running fleet for a resync, follow it, cancel it.

The request and the members' progress are records of the resync topic (:mod:`connector.resynclog`);
this module writes the request (creating the topic, compacted, when missing) and reads the topic
whole for ``status``. Nothing here talks to the members or the vendor: the members follow the topic.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector._kafka import client_options, start_within, topic_partitions
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings
from connector.resynclog import Progress, Request, State, Unreadable, decode, encode

BAR = 30
"""Characters of the progress bar."""


async def ensure_topic(settings: Settings) -> None:
    """Create the resync topic (compacted, one partition) if it does not exist."""
    options = client_options(settings.kafka)
    if await topic_partitions(options, settings.resync_topic):
        return
    admin = AIOKafkaAdminClient(**options)
    await start_within(admin, settings.kafka.bootstrap_servers, settings.kafka.start_timeout_seconds)
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        topic = NewTopic(
            settings.resync_topic, 1, min(3, max(1, brokers)), topic_configs={"cleanup.policy": "compact"}
        )
        await admin.create_topics([topic])
    finally:
        await admin.close()


async def publish(settings: Settings, request: Request) -> None:
    """Write ``request`` (a new one, or one cancelled) to the resync topic."""
    await ensure_topic(settings)
    producer = AIOKafkaProducer(acks="all", **client_options(settings.kafka))
    await start_within(producer, settings.kafka.bootstrap_servers, settings.kafka.start_timeout_seconds)
    try:
        key, value = encode(request)
        await producer.send_and_wait(settings.resync_topic, value=value, key=key)
    finally:
        await producer.stop()


def new_request(
    settings: Settings,
    since: float | None,
    tenant: str | None,
    share: float | None,
    clock: Clock = SYSTEM_CLOCK,
) -> Request:
    """A request for the group of ``settings``: every order with an event since ``since`` (None:
    every order) of ``tenant`` (None: every shop), at least ``share`` of the budget."""
    return Request(
        group=settings.kafka.group_id,
        id=f"r-{secrets.token_hex(4)}",
        tenant=tenant,
        since=since,
        share=share if share is not None else settings.resync.share,
        at=clock.wall(),
    )


@dataclass
class Status:
    """What the resync topic says of the group's resync."""

    request: Request | None
    partitions: int  # of the source topics
    progress: dict[tuple[str, int], Progress] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len([p for p in self.progress.values() if p.done]) == self.partitions

    def totals(self) -> tuple[int, int, int, int]:
        """Orders found, sent, skipped and failed, over the partitions begun."""
        ps = self.progress.values()
        return (sum(p.orders for p in ps), sum(p.sent for p in ps), sum(p.skipped for p in ps),
                sum(p.failed for p in ps))  # fmt: skip


async def status(settings: Settings) -> Status:
    """Read the resync topic whole: the group's request and its partitions' progress."""
    options = client_options(settings.kafka)
    partitions = sum([len(await topic_partitions(options, t)) for t in settings.kafka.topics])
    found = await topic_partitions(options, settings.resync_topic)
    state = Status(None, partitions)
    if not found:
        return state
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **options)
    await start_within(consumer, settings.kafka.bootstrap_servers, settings.kafka.start_timeout_seconds)
    records = []
    try:
        parts = [KafkaTP(settings.resync_topic, p) for p in found]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += [r.value for rs in batch.values() for r in rs if r.value is not None]
    finally:
        await consumer.stop()
    decoded = []
    for value in records:
        try:
            decoded.append(decode(value))
        except Unreadable:
            continue
    for record in decoded:
        if isinstance(record, Request) and record.group == settings.kafka.group_id:
            state.request = record
    for record in decoded:
        if isinstance(record, Progress) and state.request and record.id == state.request.id:
            state.progress[(record.topic, record.partition)] = record
    return state


def budget_of(settings: Settings, request: Request | None) -> tuple[float, bool]:
    """The budget a status estimates with, and whether it is the slowest of several shops: the one
    shop's; with many, the named shop's, or the smallest of them (the estimate is then an upper
    bound: the progress does not say whose orders are left)."""
    if not settings.tenants.path:
        return settings.sink.rate_limit_per_second, False
    from connector.tenants import load_tenants

    budgets = {n: t.account().rate_limit_per_second for n, t in load_tenants(settings.tenants.path).items()}
    if request is not None and request.tenant is not None:
        return budgets.get(request.tenant, 0.0), False
    return min(budgets.values(), default=0.0), len(budgets) > 1


def render(state: Status, budget: float, slowest: bool = False) -> str:
    """``connector resync status``, for people: the request, a bar, and an estimate at its floor
    (``slowest``: ``budget`` is the slowest of several shops')."""
    r = state.request
    if r is None:
        return "no resync was asked of this group"
    scope = "every order" if r.since is None else f"orders with an event since {_iso(r.since)}"
    shop = f", shop {r.tenant}" if r.tenant else ""
    lines = [f"resync {r.id}: {scope}{shop}, floor {r.share:.0%} of the budget, {r.state}"]
    orders, sent, skipped, failed = state.totals()
    ended = sent + skipped + failed
    begun = len(state.progress)
    share = ended / orders if orders else (1.0 if state.done else 0.0)
    filled = round(share * BAR)
    lines.append(f"[{'#' * filled}{'.' * (BAR - filled)}] {share:.0%}  {ended:,} of {orders:,} orders")
    lines.append(f"  {sent:,} sent, {skipped:,} skipped (live traffic sent newer), {failed:,} failed")
    done = len([p for p in state.progress.values() if p.done])
    lines.append(f"partitions: {done} done, {begun - done} under way, {state.partitions - begun} not begun")
    if r.state is State.ACTIVE and not state.done and budget > 0:
        left = _duration((orders - ended) / (r.share * budget))
        unknown = " and the partitions not begun" if begun < state.partitions else ""
        whose = "the slowest shop's " if slowest else ""
        lines.append(f"at most ~{left} left at the floor ({r.share:.0%} of {whose}{budget:g}/s){unknown}; "
                     "sooner when live traffic leaves ticks unused")  # fmt: skip
    elif state.done:
        lines.append("done")
    return "\n".join(lines)


def as_json(state: Status) -> dict[str, object]:
    r = state.request
    orders, sent, skipped, failed = state.totals()
    return {
        "request": None if r is None else {"id": r.id, "since": r.since, "tenant": r.tenant,
                                           "share": r.share, "state": str(r.state), "at": r.at},
        "partitions": state.partitions, "done": state.done, "orders": orders, "sent": sent,
        "skipped": skipped, "failed": failed,
        "progress": [{"topic": p.topic, "partition": p.partition, "from": p.start, "until": p.until,
                      "at": p.at, "orders": p.orders, "sent": p.sent, "skipped": p.skipped,
                      "failed": p.failed, "done": p.done, "by": p.by} for p in state.progress.values()],
    }  # fmt: skip


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["Status", "as_json", "ensure_topic", "new_request", "publish", "render", "status"]
