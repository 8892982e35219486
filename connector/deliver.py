"""Delivery: paced, concurrent calls to the vendor, retried by the error's class, stopped by outages.

One *job* per key with work. A fixed pool of ``max_in_flight`` workers takes jobs from one FIFO queue
(keys are served in the order they became ready, so the commit watermark keeps moving). Before each
attempt a worker waits for the job's order to settle, for its partition to catch up (a *linger*: while
the partition is more than ``delivery.linger_lag_records`` behind its log end and reading is not paused, a
new job waits up to ``delivery.linger_seconds``, so that a backlog is read and coalesced before it is
sent), for its partition's fence, for the outage :class:`~connector.circuit.Circuit` and for a tick of
the :class:`~connector.pacing.Pacer`; only then does it *claim* the key's newest change, so a key costs
one call however many events queued up behind it. A retry waits on a timer, not in a worker. Each
attempt ends in one :class:`Outcome` handed to the pipeline's ``report``, which answers whether the key
has more to send.

A job's life::

    QUEUED ─▶ GATED ─▶ IN_FLIGHT ─┬─▶ DONE (delivered, or failed for good: reported)
       ▲                          ├─▶ BACKOFF ──┐  (retryable failure)
       │                          └─▶ SETTLING ─┤  (ambiguous: the vendor may still apply it)
       └────────────────────────────────────────┘
    any state ─▶ ABANDONED (its partition was revoked, or the member is stopping)

After an ambiguous outcome (timeout, cut connection, 5xx, a call cancelled on revoke) the key sends
nothing until ``settle_seconds`` after that request started, so a late write can never land after a
newer one; then it sends its newest state again (see the README, "Guarantees").
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from random import Random
from types import TracebackType
from typing import Protocol, Self

import structlog

from connector.circuit import Circuit, State
from connector.clock import Clock
from connector.errors import (
    AuthError,
    ConnectorError,
    Forbidden,
    RateLimited,
    SinkConnectError,
    SinkCutOff,
    SinkError,
    SinkTimeout,
)
from connector.logs import get_logger
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.sinks import Prepaid, Sink
from connector.structs import OrderChange, TopicPartition

log = get_logger("connector.deliver")


class JobState(StrEnum):
    """Where a job is in its life (see the module docstring)."""

    QUEUED = "queued"
    GATED = "gated"
    IN_FLIGHT = "in_flight"
    BACKOFF = "backoff"
    SETTLING = "settling"
    DONE = "done"
    ABANDONED = "abandoned"


@dataclass(eq=False, slots=True)
class Job:
    """The delivery of one key's changes, with the failure history of its current change."""

    key: str
    tp: TopicPartition
    state: JobState = JobState.QUEUED
    change: OrderChange | None = None
    attempts: int = 0
    first_failure_ts: float = 0.0
    last_failure_ts: float = 0.0
    not_before: float = 0.0  # monotonic: an ambiguous request of this key may land until then
    ambiguous: bool = False  # an attempt since the key's last delivery ended without a known outcome
    linger_until: float = 0.0  # monotonic: while its partition is far behind, wait until then
    forbidden_at: int = -1  # the circuit's closure count when this job last got a 403
    probe: bool = False  # this attempt is the circuit's probe
    tick: float | None = None  # the budget tick granted for this attempt's first request
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    call: asyncio.Task[None] | None = field(default=None, repr=False)


class OutcomeKind(StrEnum):
    """How a change's delivery ended."""

    DELIVERED = "delivered"
    FAILED = "failed"  # for good: the pipeline dead-letters it, or lets a newer change replace it
    ABANDONED = "abandoned"  # unresolved: its partition was revoked or the member is stopping


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the deliverer tells the pipeline when a change's delivery ended."""

    kind: OutcomeKind
    key: str
    change: OrderChange | None
    error: BaseException | None = None
    attempts: int = 0
    first_failure_ts: float = 0.0
    last_failure_ts: float = 0.0
    ambiguous: bool = False  # FAILED: an attempt of its key since its last delivery may still land


class WorkSource(Protocol):
    """Where a deliverer takes the changes it sends and tells how each delivery ended
    (``connector.ledger.Ledger``)."""

    def claim(self, key: str) -> OrderChange | None:
        """The newest change of ``key``, taken just before it is sent (None: nothing to send)."""
        ...

    def report(self, outcome: Outcome) -> bool:
        """How a change's delivery ended; True when the key has more to send (the job goes on)."""
        ...


class Linger(Protocol):
    """Whether a partition's newer events are likely yet to be read (``connector.membership``)."""

    def behind(self, tp: TopicPartition) -> bool: ...


_LINGER_POLL_S = 0.1


def status_class(error: BaseException | None) -> str:
    """A low-cardinality label for a call's outcome: 2xx, 4xx, 429, 5xx, timeout, connect, other."""
    if error is None:
        return "2xx"
    if isinstance(error, SinkError) and error.status is not None:
        return "429" if error.status == 429 else f"{error.status // 100}xx"
    if isinstance(error, SinkTimeout):
        return "timeout"
    if isinstance(error, SinkConnectError | SinkCutOff):
        return "connect"
    return "other"


class Deliverer:
    """Workers, gates (settle, fence, circuit, budget) and retry timers for the vendor calls."""

    def __init__(
        self,
        sink: Sink,
        work: WorkSource,
        metrics: Metrics,
        *,
        clock: Clock,
        rng: Random,
        pacer: Pacer,
        circuit: Circuit,
        policy: RetryPolicy,
        max_in_flight: int,
        max_retry_after: float = 60.0,
        linger: Linger | None = None,
        linger_seconds: float = 0.0,
        tenant: str = "",
        on_circuit: Callable[[str, State], None] | None = None,
    ) -> None:
        self._sink = sink
        self._work_source = work
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self.pacer = pacer
        self.fence = pacer.fence
        self.circuit = circuit
        self._policy = policy
        self._max_retry_after = max_retry_after
        self._linger = linger
        self.tenant = tenant
        self._bound = {"tenant": tenant} if tenant else {}
        self.rate_limited_count = 0  # 429s seen (per-tenant metrics read it)
        self._on_circuit_change = on_circuit
        self._linger_s = linger_seconds if linger is not None else 0.0
        self._workers_n = max_in_flight
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._pending: dict[TopicPartition, dict[Job, None]] = {}
        self._draining: set[TopicPartition] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._forbidden_ops: set[str] = set()

    async def __aenter__(self) -> Self:
        self._workers = [
            asyncio.create_task(self._work(), name=f"deliver-{i}") for i in range(self._workers_n)
        ]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._closed = True
        for tp in sorted(self._pending):
            for job in list(self._pending.get(tp, ())):
                if job.call is not None:
                    job.call.cancel()
                self._abandon(job)

    # -- the queue ----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Jobs not finished (queued, waiting, in flight or retrying)."""
        return sum(len(jobs) for jobs in self._pending.values())

    def submit(self, key: str, tp: TopicPartition, hold: float = 0.0) -> None:
        """Start delivering ``key`` (it has a change and no job); nothing is sent for it during the
        first ``hold`` seconds (a request of an earlier attempt may still land until then)."""
        now = self._clock.monotonic()
        job = Job(key, tp, not_before=now + hold, linger_until=now + self._linger_s)
        if tp in self._draining:
            self._abandon(job)
            return
        self._pending.setdefault(tp, {})[job] = None
        self._queue.put_nowait(job)

    def _move(self, job: Job, tp: TopicPartition) -> None:
        if tp != job.tp:
            self._forget(job)
            job.tp = tp
            self._pending.setdefault(tp, {})[job] = None

    def _forget(self, job: Job) -> None:
        jobs = self._pending.get(job.tp)
        if jobs is not None:
            jobs.pop(job, None)
            if not jobs:
                del self._pending[job.tp]

    def _abandon(self, job: Job) -> None:
        job.state = JobState.ABANDONED
        if job.timer:
            job.timer.cancel()
            job.timer = None
        self._forget(job)
        self._work_source.report(Outcome(OutcomeKind.ABANDONED, job.key, job.change, attempts=job.attempts))

    def _requeue(self, job: Job) -> None:
        job.timer = None
        if job.state is JobState.ABANDONED:
            return
        if job.tp in self._draining:
            self._abandon(job)
            return
        job.state = JobState.QUEUED
        self._queue.put_nowait(job)

    # -- the workers --------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job.state is JobState.ABANDONED:
                continue
            job.state = JobState.GATED
            if not await self._gate(job):
                continue
            change = self._work_source.claim(job.key)
            if change is None:
                job.state = JobState.DONE
                self._forget(job)
                continue
            if change is not job.change:
                job.change = change
                job.attempts = 0
                job.first_failure_ts = job.last_failure_ts = 0.0
                job.forbidden_at = -1
                self._move(job, change.tp)
            await self._call(job, change)

    async def _gate(self, job: Job) -> bool:
        """Wait until the job may send: its order settled, its partition fenced for us, the circuit
        letting it through and a budget tick granted. False when it was abandoned meanwhile."""
        while True:
            if job.state is JobState.ABANDONED:
                return False
            now = self._clock.monotonic()
            if job.not_before > now:
                await asyncio.sleep(job.not_before - now)
                continue
            if job.linger_until > now and self._linger is not None and self._linger.behind(job.tp):
                await asyncio.sleep(min(_LINGER_POLL_S, job.linger_until - now))
                continue
            if not self.fence.may_send(job.tp):
                await asyncio.sleep(self.fence.wait_hint(job.tp))
                continue
            if not self.circuit.may_call(now):
                await asyncio.sleep(self.circuit.wait_hint(now))
                continue
            job.probe = self.circuit.state is State.HALF_OPEN
            job.tick = await self.pacer.acquire()
            now = self._clock.monotonic()
            state = self.circuit.state
            allowed = state is State.CLOSED or (job.probe and state is State.HALF_OPEN)
            if self._abandoned(job) or not allowed or not self.fence.may_send(job.tp):
                self._release_probe(job)
                continue
            if job.probe and self.circuit.forbidden:
                job.probe = False
                await self._read_probe(job.tick)  # a read, then this job goes through the gate again
                continue
            return True

    async def _read_probe(self, tick: float | None) -> None:
        """The circuit opened on a 403: ask with a read whether the key works at all. If it does, the
        circuit closes, and a 403 the job then gets again is about its operation (``Forbidden``)."""
        probe = asyncio.get_running_loop().create_task(self._sink.probe(Prepaid(tick)))
        await asyncio.wait({probe})
        error = probe.exception() if not probe.cancelled() else None
        self._metrics.requests.labels(status_class(error)).inc()
        self._track_circuit(error)

    @staticmethod
    def _abandoned(job: Job) -> bool:
        """Whether ``job`` was abandoned (by a revoke) while its worker waited."""
        return job.state is JobState.ABANDONED

    def _release_probe(self, job: Job) -> None:
        if job.probe:
            job.probe = False
            self.circuit.release(self._clock.monotonic())

    async def _call(self, job: Job, change: OrderChange) -> None:
        job.attempts += 1
        job.state = JobState.IN_FLIGHT
        context = contextvars.copy_context()  # the log lines of this call name its record
        record = change.record
        context.run(
            structlog.contextvars.bind_contextvars,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            external_id=change.external_id,
            **self._bound,
        )
        started = self._clock.monotonic()
        job.call = asyncio.get_running_loop().create_task(
            self._sink.apply(change, Prepaid(job.tick)),  # its first request uses the tick just granted
            context=context,
        )
        self._metrics.in_flight.inc()
        try:
            await asyncio.wait({job.call})
        except asyncio.CancelledError:
            job.call.cancel()
            raise
        finally:
            self._metrics.in_flight.dec()
        call, job.call = job.call, None
        # An ambiguous request was sent at some time before now (an apply may send several): it can
        # land until ``settle_seconds`` after now, counted from now to be safe.
        if call.cancelled():  # the partition is being revoked: the request may still land
            self.fence.note_ambiguous(job.tp, self._clock.wall())
            self._release_probe(job)
            self._abandon(job)
            return
        job.probe = False
        error = call.exception()
        self._metrics.latency.observe(self._clock.monotonic() - started)
        self._metrics.requests.labels(status_class(error)).inc()
        if isinstance(error, ConnectorError) and error.ambiguous:
            job.ambiguous = True
            job.not_before = self._clock.monotonic() + self.fence.settle_seconds
            self.fence.note_ambiguous(job.tp, self._clock.wall())
        error = self._per_event_forbidden(job, change, error)
        self._track_circuit(error)
        if error is None:
            job.ambiguous = False
            self._finish(job, Outcome(OutcomeKind.DELIVERED, job.key, change, attempts=job.attempts))
        else:
            self._failed(job, change, error)

    def _per_event_forbidden(
        self, job: Job, change: OrderChange, error: BaseException | None
    ) -> BaseException | None:
        """A 403 opens the circuit (the key may have lost its scopes). If the circuit closed since
        (other calls or a read succeed) and this event gets 403 again, the 403 is about this operation
        (a missing scope), and from then on so is a 403 for the same kind of operation."""
        if error is None:
            self._forbidden_ops.discard(change.op)
            return None
        if not isinstance(error, AuthError) or error.status != 403:
            return error
        if change.op in self._forbidden_ops or 0 <= job.forbidden_at < self.circuit.closures:
            self._forbidden_ops.add(change.op)
            return Forbidden(str(error), status=403, body=error.body)
        job.forbidden_at = self.circuit.closures
        return error

    def _track_circuit(self, error: BaseException | None) -> None:
        if isinstance(error, RateLimited) and self._beyond_ceiling(error):
            return  # an outage, but :meth:`_rate_limited` opens the circuit for it (trip)
        self._on_circuit(self.circuit.record(error, self._clock.monotonic()))

    def _beyond_ceiling(self, error: RateLimited) -> bool:
        """Whether the vendor asked for a longer wait than ``delivery.max_retry_after_seconds``."""
        return error.retry_after is not None and error.retry_after > self._max_retry_after

    def _on_circuit(self, changed: State | None) -> None:
        if changed is None or changed is State.HALF_OPEN:
            return
        tenant = {"tenant": self.tenant} if self.tenant else {}
        if changed is State.OPEN:
            log.error(
                "api_outage",
                reason=self.circuit.reason[:500],
                action="calls stopped; nothing is dead-lettered; one probe per interval",
                probe_interval_s=self.circuit.probe_interval,
                **tenant,
            )
        else:
            log.warning("api_recovered", action="calls resumed", **tenant)
        if self._on_circuit_change is not None:
            self._on_circuit_change(self.tenant, changed)
        else:
            self._metrics.circuit_open.set(1 if changed is State.OPEN else 0)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if self._work_source.report(outcome):
            job.linger_until = self._clock.monotonic() + self._linger_s
            self._requeue(job)
        else:
            job.state = JobState.DONE
            self._forget(job)

    def _failed(self, job: Job, change: OrderChange, error: BaseException) -> None:
        job.linger_until = 0.0  # a retry does not wait for the backlog
        now = self._clock.wall()
        job.first_failure_ts = job.first_failure_ts or now
        job.last_failure_ts = now
        if isinstance(error, RateLimited):
            self._rate_limited(job, error)
        if self.circuit.is_open and isinstance(error, ConnectorError) and error.retryable:
            job.attempts -= 1  # an outage is not the event's fault: this failure does not count
            delay: float | None = self.circuit.probe_interval * self._rng.uniform(0.5, 1.0)
        else:
            delay = self._policy.delay(error, job.attempts, now - job.first_failure_ts)
        if delay is None:
            outcome = Outcome(
                OutcomeKind.FAILED,
                job.key,
                change,
                error,
                job.attempts,
                job.first_failure_ts,
                now,
                job.ambiguous,
            )
            self._finish(job, outcome)
            return
        self._metrics.retries.inc()
        settle = job.not_before - self._clock.monotonic()
        job.state = JobState.SETTLING if settle > delay else JobState.BACKOFF
        record = change.record
        log.debug(
            "delivery_retry", error=str(error)[:300], error_class=type(error).__name__,
            attempt=job.attempts, retry_in_s=round(max(delay, settle), 3), topic=record.topic,
            partition=record.partition, offset=record.offset, external_id=change.external_id,
        )  # fmt: skip
        job.timer = asyncio.get_running_loop().call_later(delay, self._requeue, job)

    def _rate_limited(self, job: Job, error: RateLimited) -> None:
        self._metrics.rate_limited.inc()
        self.rate_limited_count += 1
        wait = error.retry_after
        if wait is not None and self._beyond_ceiling(error):
            self._metrics.retry_after_exceeded.inc()
            reason = (
                f"the vendor asked to wait {wait:.0f}s (Retry-After), more than "
                f"delivery.max_retry_after_seconds={self._max_retry_after:g}: treated as an outage"
            )
            self._on_circuit(self.circuit.trip(reason, self._clock.monotonic()))
            wait = None
        # The member waits the vendor's Retry-After, else a first attempt's backoff: the pace itself
        # adapts (``pacer.observe``), and this job's own retry waits its own backoff.
        self.pacer.hold(wait if wait is not None else self._policy.backoff(1))

    # -- revoke and shutdown ------------------------------------------------------------------
    async def drain(self, partitions: set[TopicPartition], timeout: float) -> None:
        """Stop delivering ``partitions``: drop queued and retrying jobs, let calls in flight finish
        within ``timeout``, then cancel them (their requests count as ambiguous for the fence).
        Every dropped job is reported as abandoned."""
        self._draining |= partitions
        if self._closed:
            return

        def in_flight() -> list[asyncio.Task[None]]:
            return [j.call for tp in sorted(partitions) for j in self._pending.get(tp, ()) if j.call]

        for tp in sorted(partitions):
            for job in list(self._pending.get(tp, ())):
                if job.call is None:
                    self._abandon(job)
        calls = in_flight()
        if calls:
            await asyncio.wait(calls, timeout=timeout)
        for call in in_flight():
            call.cancel()
        while any(tp in self._pending for tp in partitions):
            for tp in sorted(partitions):
                for job in list(self._pending.get(tp, ())):
                    if job.call is None and job.state is not JobState.IN_FLIGHT:
                        self._abandon(job)
            await asyncio.sleep(0.01)

    def undrain(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are owned again: accept their jobs."""
        self._draining -= partitions
