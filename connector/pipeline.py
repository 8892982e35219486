"""The pipeline: fetch → decode → coalesce → deliver, and the commit watermark behind it.

Every record read is tracked by its partition's watermark until it is resolved: delivered, skipped as
stale or identical, replaced by a newer event for its key, or acknowledged on the dead-letter topic.
Commits are periodic, on revoke and on shutdown, and never pass an unresolved offset.
Everything here runs on one event loop; the record handler is synchronous, so a rebalance callback
never interleaves with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

from connector.circuit import Circuit
from connector.coalesce import Coalescer, Resolution
from connector.config import Settings
from connector.deadletter import DeadLetterPublisher, Failure
from connector.decode import OrderChange, Record, decode
from connector.deliver import Deliverer, Job
from connector.errors import InputError
from connector.logs import get_logger
from connector.metrics import Metrics
from connector.offsets import OffsetTracker, TopicPartition
from connector.retry import RetryPolicy
from connector.sinks import Sink
from connector.source import Source

log = get_logger("connector.pipeline")

FETCH_TIMEOUT_MS = 200
SUMMARY_INTERVAL_S = 10.0


def _where(record: Record) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


class Pipeline:
    """One consumer-group member's pipeline state and loops."""

    def __init__(self, settings: Settings, sink: Sink, dlq: DeadLetterPublisher, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.coalescer = Coalescer()
        self._dlq = dlq
        s = settings.sink
        self.deliverer = Deliverer(
            sink,
            self,
            metrics,
            rate_per_second=s.rate_limit_per_second,
            max_in_flight=s.max_in_flight,
            policy=RetryPolicy(
                s.backoff_base_seconds, s.backoff_cap_seconds, s.max_attempts, s.max_elapsed_seconds
            ),
            circuit=Circuit(
                s.circuit_window, s.circuit_min_calls, s.circuit_failure_ratio, s.probe_interval_seconds
            ),
        )
        self._source: Source | None = None
        self._dlq_tasks: defaultdict[TopicPartition, set[asyncio.Task[None]]] = defaultdict(set)
        self._over_bound = False
        self._outage = False
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._unknown_seen: set[str] = set()

    # -- records in ---------------------------------------------------------------------------
    def handle(self, record: Record) -> None:
        """Track, decode and coalesce one record (never raises)."""
        tp = TopicPartition(record.topic, record.partition)
        self.tracker.partition(tp).track(record.offset, record.size, record.timestamp_ms / 1000.0)
        self.metrics.consumed.inc()
        self._counts["consumed"] += 1
        try:
            sink = self.settings.sink
            change = decode(record, self.settings.kafka.max_message_bytes, sink.kind, sink.api_version)
        except InputError as exc:
            self._dead_letter(record, Failure(exc, exc.stage, exc.external_id, 0, time.time(), time.time()))
            return
        except Exception as exc:  # a bug must not stop the loop: the event is kept on the DLQ
            log.exception("decode_crashed", **_where(record))
            self._dead_letter(record, Failure(exc, "decode", None, 0, time.time(), time.time()))
            return
        log.debug("event_accepted", external_id=change.external_id, op=change.op, **_where(record))
        for field in change.unknown:
            self._unknown_field(field, change)
        if change.op == "delete" and self.settings.sink.on_delete == "ignore":
            self._resolve(record, Resolution.IGNORED)
            return
        offer = self.coalescer.offer(change)
        for resolved, why in offer.resolved:
            self._resolve(resolved.record, why)
        if offer.start is not None:
            self.deliverer.submit(offer.start)

    def _unknown_field(self, field: str, change: OrderChange) -> None:
        self.metrics.unknown_fields.labels(field).inc()
        if field not in self._unknown_seen:
            self._unknown_seen.add(field)
            log.warning(
                "unknown_field_forwarded",
                field=field,
                external_id=change.external_id,
                note="not in the vendor model; sent as received (logged once per field)",
                **_where(change.record),
            )

    def _resolve(self, record: Record, why: Resolution) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if self.tracker.resolve(tp, record.offset):
            self.metrics.resolved.labels(why.value).inc()
            self._counts[why.value] += 1

    # -- dead letters -------------------------------------------------------------------------
    def _dead_letter(self, record: Record, failure: Failure) -> None:
        log.error(
            "event_rejected",
            stage=failure.stage,
            reason=str(failure.error)[:1000],
            error_class=type(failure.error).__name__,
            external_id=failure.external_id,
            attempts=failure.attempts,
            **_where(record),
        )
        tp = TopicPartition(record.topic, record.partition)
        task = asyncio.create_task(self._write_dead_letter(record, failure))
        self._dlq_tasks[tp].add(task)
        task.add_done_callback(self._dlq_tasks[tp].discard)

    async def _write_dead_letter(self, record: Record, failure: Failure) -> None:
        await self._dlq.publish(record, failure)
        self.metrics.dead_lettered.labels(failure.stage).inc()
        self._resolve(record, Resolution.DEAD_LETTERED)

    # -- delivery hooks (called by the Deliverer) -----------------------------------------------
    def delivered(self, change: OrderChange) -> None:
        """The vendor holds ``change``: resolve it and send the key's waiting change, if any."""
        log.debug("delivered", external_id=change.external_id, op=change.op, **_where(change.record))
        self._resolve(change.record, Resolution.DELIVERED)
        following = self.coalescer.finish(change, delivered=True)
        if following is not None:
            self.deliverer.submit(following)

    def failed(self, job: Job, error: BaseException) -> None:
        """A permanent failure: a newer change for the key supersedes it (unless
        ``dlq.dead_letter_replaced``), else it is dead-lettered."""
        change = job.change
        following = None if self.settings.dlq.dead_letter_replaced else self.newer(change)
        if following is not None:
            log.warning(
                "failed_event_replaced",
                error=str(error)[:300],
                external_id=change.external_id,
                **_where(change.record),
            )
            self.deliverer.submit(following)
            return
        following = self.coalescer.finish(change, delivered=False)
        failure = Failure(
            error, "deliver", change.external_id, job.attempts, job.first_failure_ts, job.last_failure_ts
        )
        self._dead_letter(change.record, failure)
        if following is not None:  # kept (dead_letter_replaced): the newer change goes next
            self.deliverer.submit(following)

    def abandoned(self, change: OrderChange) -> None:
        """A change dropped unresolved (its partition is being revoked)."""
        following = self.coalescer.finish(change, delivered=False)
        if following is not None:
            self.deliverer.submit(following)

    def newer(self, change: OrderChange) -> OrderChange | None:
        """Swap ``change`` for a newer waiting change of its key (resolving it as replaced)."""
        following = self.coalescer.take_newer(change)
        if following is not None:
            self._resolve(change.record, Resolution.REPLACED)
        return following

    def outage(self, down: bool, reason: str) -> None:
        """The circuit opened or closed: pause or resume consumption, and say so once."""
        self._outage = down
        self.metrics.circuit_open.set(1 if down else 0)
        self.metrics.ready = not down
        if down:
            log.error(
                "api_outage",
                reason=reason[:500],
                action="calls stopped and consumption paused; nothing is dead-lettered; probing",
                probe_interval_s=self.deliverer.circuit.probe_interval,
            )
        else:
            log.warning("api_recovered", action="calls and consumption resumed")
        self._apply_pause()

    # -- rebalance ----------------------------------------------------------------------------
    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Stop work on ``partitions``, let calls in flight finish (bounded), commit, forget them."""
        if not partitions:
            return
        started = time.monotonic()
        bound = min(self.settings.shutdown_grace_seconds, 10.0)
        self.coalescer.drop_partitions(partitions)
        await self.deliverer.drain(partitions, timeout=bound)
        tasks = [t for tp in partitions for t in self._dlq_tasks.get(tp, ())]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=max(0.1, bound - (time.monotonic() - started)))
            for task in late:
                task.cancel()
        await self.commit(only=partitions)
        for tp in partitions:
            self.tracker.drop(tp)
            self._dlq_tasks.pop(tp, None)
            for gauge in (self.metrics.lag, self.metrics.committed):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        log.info(
            "partitions_revoked",
            partitions=sorted(f"{t.topic}-{t.partition}" for t in partitions),
            took_s=round(time.monotonic() - started, 3),
        )

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Own ``partitions``; take this process's share of the API budget; re-apply the pause."""
        self.deliverer.undrain(partitions)
        self._share_budget(partitions)
        if self.paused and self._source is not None:
            self._source.pause(partitions)
        self.metrics.ready = not self._outage
        log.info("partitions_assigned", partitions=sorted(f"{t.topic}-{t.partition}" for t in partitions))

    def _share_budget(self, owned: set[TopicPartition]) -> None:
        """Pace at the account's budget times the share of partitions this process owns, so that the
        group together stays within the vendor's limit with no coordination beyond Kafka's own."""
        if self._source is None:
            return
        total = self._source.total_partitions()
        budget = self.settings.sink.rate_limit_per_second
        if total and owned:
            rate = budget * min(1.0, len(owned) / total)
            self.deliverer.pacer.set_share(rate)
            log.info("budget_share", owned=len(owned), total=total, rate_per_second=round(rate, 3))

    # -- commits and back-pressure ------------------------------------------------------------
    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit every owned partition's watermark that moved."""
        if self._source is None:
            return
        owned = self._source.assignment() if only is None else only
        offsets = self.tracker.to_commit(owned)
        if offsets and await self._source.commit(offsets):
            self.tracker.mark_committed(offsets)
            for tp, offset in offsets.items():
                self.metrics.committed.labels(tp.topic, str(tp.partition)).set(offset)

    def _backpressure(self) -> None:
        k = self.settings.kafka
        events, size = self.tracker.unresolved, self.tracker.unresolved_bytes
        self.metrics.unresolved.set(events)
        self.metrics.unresolved_bytes.set(size)
        if not self._over_bound and (events >= k.max_unresolved_events or size >= k.max_unresolved_bytes):
            self._over_bound = True
            log.info("read_ahead_paused", unresolved=events, unresolved_bytes=size)
            self._apply_pause()
        elif (
            self._over_bound
            and events <= k.max_unresolved_events // 2
            and size <= k.max_unresolved_bytes // 2
        ):
            self._over_bound = False
            log.info("read_ahead_resumed", unresolved=events, unresolved_bytes=size)
            self._apply_pause()

    @property
    def paused(self) -> bool:
        """Consumption is paused: read-ahead bound reached, or the API is down."""
        return self._over_bound or self._outage

    def _apply_pause(self) -> None:
        if self._source is None:
            return
        owned = self._source.assignment()
        if self.paused:
            self._source.pause(owned)
            self.metrics.paused.set(len(owned))
        else:
            self._source.resume(owned)
            self.metrics.paused.set(0)

    async def _commit_loop(self) -> None:
        last_summary = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.kafka.commit_interval_seconds)
            await self.commit()
            self._gauges()
            if time.monotonic() - last_summary >= SUMMARY_INTERVAL_S:
                last_summary = time.monotonic()
                self._summary()

    def _gauges(self) -> None:
        """Refresh the gauges an on-call person watches: oldest unsynced event, lag per partition."""
        self.metrics.oldest_unsynced.set(self.tracker.oldest_unsynced_age(time.time()))
        if self._source is None:
            return
        committed = self.tracker.committed()
        for tp in self._source.assignment():
            end = self._source.log_end(tp)
            done = committed.get(tp)
            if end is not None and done is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - done))

    def _summary(self) -> None:
        counts, self._counts = dict(self._counts), defaultdict(int)
        if counts:
            log.info(
                "progress",
                **counts,
                unresolved=self.tracker.unresolved,
                in_flight_keys=self.coalescer.in_flight,
            )

    # -- the loop -----------------------------------------------------------------------------
    async def run(self, source: Source, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain within the grace period and commit."""
        self._source = source
        self.metrics.ready = not self._outage  # connected; assigned or waiting for an assignment
        committer = asyncio.create_task(self._commit_loop(), name="commit-loop")
        try:
            while not stop.is_set():
                records = await source.fetch(FETCH_TIMEOUT_MS)
                self.metrics.beat()
                for record in records:
                    self.handle(record)
                self._backpressure()
            await self._drain()
        finally:
            committer.cancel()
            for task in [t for tasks in self._dlq_tasks.values() for t in tasks]:
                task.cancel()  # still retrying an unwritable DLQ: its offset stays uncommitted
            with contextlib.suppress(asyncio.CancelledError):
                await committer
        await self.commit()
        self._summary()
        log.info(
            "stopped",
            unresolved=self.tracker.unresolved,
            committed={f"{tp.topic}-{tp.partition}": o for tp, o in self.tracker.committed().items()},
        )

    async def _drain(self) -> None:
        assert self._source is not None
        self._source.pause(self._source.assignment())
        grace = self.settings.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        log.info("draining", unresolved=self.tracker.unresolved, grace_s=grace)
        while self.tracker.unresolved and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.metrics.beat()
