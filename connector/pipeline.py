"""The pipeline: fetch → decode → coalesce → deliver, and the commit watermark behind it.

Every record read is tracked by its partition's watermark until it is resolved: delivered, skipped as
stale or identical, replaced by a newer event for its key, or acknowledged on the dead-letter topic.
Commits are periodic, on revoke and on shutdown, never pass an unresolved offset, and carry the fence's
settle-by time (``fence.py``) so that the next owner of a partition never sends before our requests
for it can no longer land. Everything runs on one event loop; the record handler is synchronous, so a
rebalance callback never interleaves with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from random import Random

from connector import gauges
from connector.clock import Clock
from connector.coalesce import Coalescer, Resolution
from connector.config import Settings
from connector.constants import Stage
from connector.deadletter import DeadLetterPublisher, Failure
from connector.decode import check, decode
from connector.deliver import Outcome, OutcomeKind
from connector.errors import InputError, RouteError
from connector.fence import Fence
from connector.logs import debug_enabled, get_logger
from connector.mapping import Mapper
from connector.membership import Membership, PauseReason
from connector.metrics import Metrics
from connector.ownership import Assignment, OwnedPartition, PartitionStatus
from connector.park import Parking, ParkLog
from connector.source import Source
from connector.structs import OrderChange, Record, TopicPartition, Version
from connector.tenancy import SinkFactory, Tenancy

log = get_logger("connector.pipeline")
_HANDLE_CHUNK = 16
"""Records handled between two yields to the event loop: about half a millisecond of work. A granted
tick must still be fresh (``pacing.LATE``, 5 ms) when its request leaves, two loop turns later: with 64
records (2 ms) a backlog read at full speed made ticks stale, and at 1,000 requests a second each read
of the read-ahead's refill cost 60 to 130 ticks (bench/cost.py M: 97.9%)."""

SUMMARY_INTERVAL_S = 10.0


def _where(record: Record) -> dict[str, object]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


class Pipeline:
    """One consumer-group member's record path: read, decode, coalesce, resolve; and its loops."""

    def __init__(
        self,
        settings: Settings,
        make_sink: SinkFactory,
        dlq: DeadLetterPublisher,
        metrics: Metrics,
        *,
        clock: Clock,
        rng: Random,
        fence: Fence,
        park_log: ParkLog | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.coalescer = Coalescer(settings.kafka.remember_keys)
        self.fence = fence
        self.tenancy = Tenancy(
            settings,
            make_sink,
            self.claim,
            self.report,
            metrics,
            clock=clock,
            rng=rng,
            fence=fence,
            behind=self.behind,
        )
        self._locate = self.tenancy.locate if self.tenancy.many else None
        self._mapper: Mapper | None = None
        if settings.mapping.active or self.tenancy.many:  # else: decode, exactly as before mappings
            self._mapper = Mapper(
                settings.mapping,
                settings.kafka.max_message_bytes,
                tenant_mapping=self.tenancy.mapping_of if self.tenancy.many else None,
                metrics=metrics,
            )
        self.assignment = Assignment()
        self.park = Parking(
            settings,
            park_log,
            self.assignment,
            self.coalescer,
            self.tenancy,
            metrics,
            clock=clock,
            rng=rng,
            resolved=lambda record: self._resolve(record, Resolution.PARKED),
            dispatch=self._replay,
            warmed=self._warmed,
            peek=self._peek,
            prefetch=self._mapper.prefetch if self._mapper is not None else None,
            dead_letter=self._dead_letter,
        )
        self.membership = Membership(
            settings,
            metrics,
            self.assignment,
            clock=clock,
            fence=fence,
            coalescer=self.coalescer,
            tenancy=self.tenancy,
            park=self.park,
        )
        self._dlq = dlq
        self._source: Source | None = None
        self._handling = False  # a fetched batch is being handled (positions are ahead of it)
        self._reseek: set[TopicPartition] = set()  # sought back during this batch: its rest is stale
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._consumed_unreported = 0
        self._unknown_seen: set[str] = set()
        self._resolved_counters = {why: self.metrics.resolved.labels(why.value) for why in Resolution}

    @property
    def tracker(self) -> Assignment:
        """The offsets of every owned partition, with their totals (the read-ahead bounds)."""
        return self.assignment

    # -- records in ---------------------------------------------------------------------------
    def handle(self, record: Record) -> None:
        """Track, decode and coalesce one record (never raises)."""
        tp = record.tp
        part = self.assignment.get(tp)
        if part is None or not part.reading or tp in self._reseek:
            return  # revoked, not started, or sought back meanwhile: read again later
        if part.status is PartitionStatus.WARMING:
            self._warm(part, record)
            return
        offsets = part.offsets
        if not offsets.follows(record.offset):
            log.warning(
                "record_out_of_order", note="already read in this assignment: skipped", **_where(record)
            )
            return
        if record.offset >= self.membership.horizon(part):
            self._push_back(part, record)
            return
        offsets.track(record.offset, record.size, record.timestamp_ms / 1000.0)
        self._counts["consumed"] += 1
        self._consumed_unreported += 1  # connector_events_consumed_total: added once per batch
        if self.membership.near_horizon(part, record.offset):
            self.membership.commit_soon.set()
        change = self._accept(record)
        if change is None:
            return
        ahead = part.lookahead
        if ahead is not None:
            if record.offset >= ahead.end:
                part.lookahead = None
            elif ahead.superseded(change, record.offset):
                if debug_enabled():
                    log.debug("superseded_ahead", external_id=change.external_id, **_where(record))
                self._resolve(record, Resolution.REPLACED)  # a newer event of its order follows
                return
        if change.tenant and self.park.parked(tp, change.tenant):
            self.park.park(record, change.tenant)  # resolved once the parking topic has it
            return
        self._offer(change)

    def _push_back(self, part: OwnedPartition, record: Record) -> None:
        """``record`` lies past what this member's last commit announced it may read: read it again
        after the next commit (the partition waits; see ``Membership.horizon``)."""
        assert self._source is not None
        self._source.seek(part.tp, record.offset)
        self._reseek.add(part.tp)
        self.membership.at_horizon(part)

    def _offer(self, change: OrderChange, hold: float = 0.0) -> None:
        """Coalesce a change; start its key's delivery when it has none."""
        offer = self.coalescer.offer(change)
        for resolved, why in offer.resolved:
            self._resolve(resolved.record, why)
        if offer.start:
            tp = change.tp
            self.tenancy.submit(change.key, tp, change.tenant, hold)
            if not self.fence.may_send(tp) and self.fence.window(tp) is not None:
                self.membership.commit_soon.set()  # a lease is needed before ``tp`` can be sent for

    def _replay(self, record: Record, hold: float, as_of: Version | None) -> None:
        """An event read back from the parking topic, at its original place: decoded, coalesced and
        delivered as any other (``hold``: seconds before its order may be sent; ``as_of``: a newer
        event it stands for, skipped as identical to it before it was parked)."""
        change = self._accept(record)
        if change is None:
            return
        if as_of is not None and change.version.older_than(as_of):
            change._version = as_of
        if self.park.superseded(change, record):
            self._resolve(record, Resolution.REPLACED)  # a newer parked event of its order follows
            return
        self._offer(change, hold)

    def _accept(self, record: Record) -> OrderChange | None:
        """Decode ``record`` (the read path's cheap decode); None when it was resolved instead:
        dead-lettered (it can never be sent) or ignored (a delete, with ``delivery.on_delete=ignore``)."""
        try:
            change = self._read(record)
        except InputError as exc:
            now = self.clock.wall()
            tenant = exc.tenant if isinstance(exc, RouteError) else None
            self._dead_letter(record, Failure(exc, exc.stage, exc.external_id, 0, now, now, tenant))
            return None
        except Exception as exc:  # a bug must not stop the loop: the event is kept on the DLQ
            log.exception("decode_crashed", **_where(record))
            now = self.clock.wall()
            self._dead_letter(record, Failure(exc, Stage.DECODE, None, 0, now, now))
            return None
        if debug_enabled():
            log.debug("event_accepted", external_id=change.external_id, op=change.op, **_where(record))
        if change.op == "delete" and self.settings.delivery.on_delete == "ignore":
            self._resolve(record, Resolution.IGNORED)
            return None
        return change

    async def _handle_all(self, records: list[Record]) -> None:
        """Handle a fetched batch, yielding to the event loop every :data:`_HANDLE_CHUNK` records so
        that due budget ticks are used on time. A rebalance may run during a yield: records of a
        partition revoked meanwhile are left for its next owner (they are not committed)."""
        self._handling = True
        self._reseek.clear()
        try:
            if self._mapper is not None:
                await self._mapper.prefetch(records)  # Avro schemas from the registry, once per id
            for start in range(0, len(records), _HANDLE_CHUNK):
                if start:
                    await asyncio.sleep(0)
                for record in records[start : start + _HANDLE_CHUNK]:
                    self.handle(record)
        finally:
            self._handling = False
            self.metrics.consumed.inc(self._consumed_unreported)
            self._consumed_unreported = 0

    def _read(self, record: Record) -> OrderChange:
        """The read path's cheap decode (full validation waits for :meth:`claim`), through the mapping
        stage when one is configured, routed to its tenant when there are many."""
        sink = self.settings.sink
        if self._mapper is not None:
            return self._mapper.read(record, sink.kind, sink.api_version, validate=False, locate=self._locate)
        return decode(
            record,
            self.settings.kafka.max_message_bytes,
            sink.kind,
            sink.api_version,
            validate=False,
            locate=self._locate,
        )

    def _peek(self, record: Record) -> OrderChange | None:
        """What ``record`` stands for, without acting on it (None: it does not decode)."""
        try:
            return self._read(record)
        except Exception:
            return None

    async def _warmed(self, tp: TopicPartition) -> bool:
        """Whether the re-read of ``tp`` is over (what it remembers decides whether a replayed event
        is stale)."""
        part = self.assignment.get(tp)
        return part is not None and await self.membership.warm_done(part, self._handling)

    def _warm(self, part: OwnedPartition, record: Record) -> None:
        """A record of the re-read after an assignment. Below the committed offset it was resolved by a
        previous owner: its version is remembered, so that a late, older event is still recognised.
        From the committed offset on it may have been sent by the previous owner: its order's newest
        version there is noted (the lookahead), so that no older state of it is sent first."""
        start, until = part.start, part.warm_until
        assert start is not None
        assert until is not None
        if record.offset >= until - 1:
            self.membership.warmed(part)  # sought back to the committed offset
            self._reseek.add(part.tp)
        if record.offset >= until:
            return
        try:
            change = self._read(record)
        except Exception:  # it was, or will be, dead-lettered when read for real
            return
        if record.offset >= start:
            if part.lookahead is not None:
                part.lookahead.note(change)
            return
        # Only its version: an event before the committed offset may have been resolved without
        # being delivered (replaced, stale, dead-lettered, parked), so what the vendor holds is not
        # known, and no later event is skipped as identical to it; but it, or a newer state, was
        # the order's latest, so an older event is stale.
        self.coalescer.remember(change, delivered=False)

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
        if record.parked_at >= 0:
            done = self.park.resolve(record)
        else:
            done = self.assignment.resolve(record.tp, record.offset)
        if done:
            self._resolved_counters[why].inc()
            self._counts[why.value] += 1

    # -- delivery outcomes --------------------------------------------------------------------
    def claim(self, key: str) -> OrderChange | None:
        """The key's newest change, about to be sent, checked against the vendor model now (a change
        replaced before it is sent is never validated); the change it replaces is resolved. An invalid
        change is dead-lettered (stage ``validate``) and the key's next change, if any, is claimed."""
        while True:
            change, replaced = self.coalescer.claim(key)
            if replaced is not None:
                self._resolve(replaced.record, Resolution.REPLACED)
            if change is None:
                return None
            try:
                check(change, *self.tenancy.vendor_of(change.tenant))
            except InputError as exc:
                now = self.clock.wall()
                failure = Failure(exc, exc.stage, change.external_id, 0, now, now, change.tenant or None)
                self._dead_letter(change.record, failure)
                if self.coalescer.finish(key, delivered=False) is None:
                    return None
                continue
            for field in change.unknown:
                self._unknown_field(field, change)
            return change

    def report(self, outcome: Outcome) -> bool:
        """Resolve what ``outcome`` ended; True when the key has a newer change to send."""
        change = outcome.change
        if outcome.kind is OutcomeKind.ABANDONED or change is None:
            return False  # unresolved: the partition's next owner reads it again
        key = outcome.key
        if outcome.kind is OutcomeKind.DELIVERED:
            if debug_enabled():
                log.debug("delivered", external_id=change.external_id, op=change.op, **_where(change.record))
            self._resolve(change.record, Resolution.DELIVERED)
            return self.coalescer.finish(key, delivered=True) is not None
        error = outcome.error or RuntimeError("failed")
        if self.coalescer.has_waiting(key) and not self.settings.dlq.dead_letter_replaced:
            log.warning(
                "failed_event_replaced",
                error=str(error)[:300],
                external_id=change.external_id,
                **_where(change.record),
            )
            self._resolve(change.record, Resolution.REPLACED)
        else:
            failure = Failure(
                error,
                Stage.DELIVER,
                change.external_id,
                outcome.attempts,
                outcome.first_failure_ts,
                outcome.last_failure_ts,
                change.tenant or None,
            )
            self._dead_letter(change.record, failure)
        return self.coalescer.finish(key, delivered=False, unknown=outcome.ambiguous) is not None

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
        task = asyncio.create_task(self._write_dead_letter(record, failure))
        part = self.assignment.get(record.tp)
        if part is not None:  # its partition waits for it on revoke, and cancels it on stop
            tasks = part.dead_letters
            tasks[task] = None
            task.add_done_callback(lambda t: tasks.pop(t, None))

    async def _write_dead_letter(self, record: Record, failure: Failure) -> None:
        await self._dlq.publish(record, failure)
        self.metrics.dead_lettered.labels(failure.stage).inc()
        self._resolve(record, Resolution.DEAD_LETTERED)

    def _backpressure(self) -> None:
        k = self.settings.kafka
        owned = self.assignment
        held, size, unresolved = owned.held, owned.unresolved_bytes, owned.unresolved
        self.metrics.unresolved.set(unresolved)
        self.metrics.unresolved_bytes.set(size)
        self.metrics.held_offsets.set(held)
        over = self.membership.paused_for(PauseReason.READ_AHEAD)
        bounds = (
            (unresolved, k.max_unresolved_events),
            (size, k.max_unresolved_bytes),
            (held, k.max_held_offsets),
        )
        if not over and any(value >= bound for value, bound in bounds):
            log.info("read_ahead_paused", unresolved=unresolved, unresolved_bytes=size, held=held)
            self.membership.set_paused(PauseReason.READ_AHEAD, True)
        elif over and all(value <= bound // 2 for value, bound in bounds):
            log.info("read_ahead_resumed", unresolved=unresolved, unresolved_bytes=size, held=held)
            self.membership.set_paused(PauseReason.READ_AHEAD, False)

    def behind(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is still more than ``delivery.linger_lag_records`` records behind its log end
        while reading goes on: a job of ``tp`` lingers then, as newer events of its key are likely yet
        to be read. Never while reading is paused (the read-ahead bound, stopping), so a lingering job
        can never be what holds reading back."""
        part = self.assignment.get(tp)
        if self.membership.paused or self._source is None or part is None or not part.sending:
            return False
        end, read = self._source.log_end(tp), part.offsets.next_offset
        return end is not None and read is not None and end - read > self.settings.delivery.linger_lag_records

    @property
    def paused(self) -> bool:
        """Consumption is paused (read-ahead bound reached, or stopping)."""
        return self.membership.paused

    # -- the commit loop ----------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        interval = self.settings.kafka.commit_interval_seconds
        last_summary = self.clock.monotonic()
        soon = self.membership.commit_soon
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that arrives
            # as the event is set, and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await soon.wait()
            soon.clear()
            await self.membership.tick()
            for part in list(self.assignment):
                if part.status is PartitionStatus.WARMING:
                    await self.membership.warm_done(part, self._handling)
            self.park.check()
            gauges.refresh(
                self.metrics,
                self.clock.wall(),
                self.assignment,
                self.coalescer,
                self.tenancy,
                self.park,
                self._source,
            )
            if self.clock.monotonic() - last_summary >= SUMMARY_INTERVAL_S:
                last_summary = self.clock.monotonic()
                self._summary()

    def _summary(self) -> None:
        counts, self._counts = dict(self._counts), defaultdict(int)
        if counts:
            log.info(
                "progress",
                **counts,
                unresolved=self.assignment.unresolved,
                active_keys=self.coalescer.active,
            )

    # -- the loop -----------------------------------------------------------------------------
    async def run(self, source: Source, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain within the grace period and commit."""
        self._source = source
        self.membership.attach(source)
        self.metrics.ready = True  # connected; assigned or waiting for an assignment
        committer = asyncio.create_task(self._commit_loop(), name="commit-loop")
        try:
            while not stop.is_set():
                records = await source.fetch(self.settings.kafka.poll_timeout_ms)
                self.metrics.beat()
                await self._handle_all(records)
                self._backpressure()
            await self._drain()
        finally:
            committer.cancel()
            for part in self.assignment:
                for task in part.dead_letters:
                    task.cancel()  # still retrying an unwritable DLQ: its offset stays uncommitted
            with contextlib.suppress(asyncio.CancelledError):
                await committer
        await self.membership.commit(handover=True)
        self._summary()
        log.info(
            "stopped",
            unresolved=self.assignment.unresolved,
            committed={str(tp): o for tp, o in self.assignment.committed().items()},
        )

    async def _drain(self) -> None:
        """Stop fetching and deliver what was read, within the grace period; then cancel what is
        still in flight (its requests count as ambiguous in the hand-over)."""
        assert self._source is not None
        self.membership.set_paused(PauseReason.STOPPING, True)
        self.park.stopping = True
        await self.park.interrupt()
        grace = self.settings.shutdown_grace_seconds
        deadline = self.clock.monotonic() + grace
        log.info("draining", unresolved=self.assignment.unresolved, grace_s=grace)
        while self.assignment.unresolved and self.clock.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.metrics.beat()
        owned = self.membership.stop_all()
        await self.tenancy.drain(owned, timeout=0.0)
