"""Delivery: paced, concurrent calls to the vendor, retried by the error's class, stopped by outages.

One *job* per key with work, holding the change it sends next: the ledger hands it the key's first
change (:meth:`Deliverer.submit`) and, while nothing of the key is in flight, each newer one in its
place (:meth:`Deliverer.replace`), so a key costs one call however many events queued up behind it. A
fixed pool of ``max_in_flight`` workers takes jobs from one FIFO queue (keys are served in the order
they became ready, so the commit watermark keeps moving). Before each attempt a worker takes the job
through its :class:`~connector.gate.Gate`: the order's settle time, the partition's *linger* (while it
has records not yet read and reading is not paused, a new job waits up to ``delivery.linger_seconds``,
so that a backlog is read and coalesced before it is sent), the partition's fence and the outage
:class:`~connector.circuit.Circuit`; then the change is checked against the vendor model
(:func:`connector.conform.check`: a change replaced while it waited is never judged), and only then is a
tick of the :class:`~connector.pacing.Pacer` taken and the change sent. A retry waits on a timer, not in
a worker. Each attempt's story ends in one :class:`Outcome` handed to the :class:`WorkSource` (the
ledger), whose answer is the key's next change to send, if any: the deliverer never asks an earlier
stage for work.

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
from collections.abc import Callable
from random import Random
from types import TracebackType
from typing import Self

from connector._outcomes import Audits, Outcome, OutcomeKind, WorkSource
from connector.attempt import Attempted, Attempts
from connector.circuit import Circuit, State
from connector.clock import Clock
from connector.conform import check, complete
from connector.errors import ConnectorError, InputError, RateLimited, status_class
from connector.gate import Gate, Linger
from connector.instruments import CallHooks, RetryScheduled, Throttled
from connector.jobs import Job, JobBook, JobState, Lane
from connector.logs import get_logger
from connector.outages import Outages
from connector.pacing import Pacer
from connector.readback import ReadEnded
from connector.retry import RetryPolicy
from connector.sinks import Sink
from connector.structs import OrderChange, TopicPartition
from connector.vendors import Target

log = get_logger("connector.deliver")

__all__ = [
    "Audits",
    "Deliverer",
    "Job",  # defined in ``connector.jobs``, with the book of unfinished jobs
    "JobState",
    "Lane",
    "Linger",  # defined in ``connector.gate``, which the workers' jobs pass before each attempt
    "Outcome",  # defined in ``connector._outcomes``, with what the deliverer tells whom
    "OutcomeKind",
    "WorkSource",
    "status_class",  # defined in ``connector.errors``
]


_BUSY = frozenset({JobState.IN_FLIGHT, JobState.DONE, JobState.ABANDONED})


class Deliverer:
    """Workers and retry timers for the vendor calls. Its unfinished jobs are kept in a
    :class:`~connector.jobs.JobBook`, the waits before each attempt by a :class:`~connector.gate.Gate`,
    each attempt's request sent by :class:`~connector.attempt.Attempts`, what it does with its
    circuit besides asking it by an :class:`~connector.outages.Outages`."""

    def __init__(
        self,
        sink: Sink,
        work: WorkSource,
        hooks: CallHooks,
        *,
        clock: Clock,
        rng: Random,
        pacer: Pacer,
        circuit: Circuit,
        policy: RetryPolicy,
        target: Target | None,
        max_in_flight: int,
        max_retry_after: float = 60.0,
        linger: Linger | None = None,
        linger_seconds: float = 0.0,
        tenant: str = "",
        on_circuit: Callable[[str, State], None] | None = None,
        audit: Audits | None = None,
    ) -> None:
        self._audit = audit
        self._work_source = work
        self._hooks = hooks
        self._clock = clock
        self._rng = rng
        self._pacer = pacer
        self._fence = pacer.fence
        self.circuit = circuit
        self._outages = Outages(  # the circuit's outcomes in, its changes out
            circuit,
            sink,
            hooks,
            clock,
            max_retry_after=max_retry_after,
            tenant=tenant,
            on_change=on_circuit,
        )
        self._gates = Gate(clock=clock, pacer=pacer, outages=self._outages, linger=linger)
        self._attempts = Attempts(sink, hooks, clock=clock, tenant=tenant)
        self._policy = policy
        self._target = target  # what changes are checked against (None: sent as they are)
        self.tenant = tenant
        self.rate_limited_count = 0  # 429s seen (per-tenant metrics read it)
        self._linger_s = linger_seconds if linger is not None else 0.0
        self._workers_n = max_in_flight
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._jobs = JobBook()
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

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
        for job in self._jobs.each(self._jobs.partitions()):
            if job.call is not None:
                job.call.cancel()
            self._abandon(job)

    # -- the queue ----------------------------------------------------------------------------
    @property
    def idle(self) -> asyncio.Event:
        """Set while no live job is in hand: the audits may read."""
        return self._jobs.idle

    @property
    def pending(self) -> int:
        """Jobs not finished (queued, waiting, in flight or retrying)."""
        return len(self._jobs)

    def submit(self, change: OrderChange, hold: float = 0.0) -> None:
        """Start delivering ``change``'s key (it has no job); nothing is sent for it during the first
        ``hold`` seconds (a request of an earlier attempt may still land until then)."""
        now = self._clock.monotonic()
        job = Job(
            change.key, change.tp, change=change, not_before=now + hold, linger_until=now + self._linger_s
        )
        if self._audit is not None:
            self._audit.unsure(change.key)  # until it is delivered: an attempt may land, or be abandoned
        if self._jobs.draining(change.tp):
            self._abandon(job)
            return
        repairing = self._jobs.get(change.key)
        if repairing is not None:  # only a repair's job: the ledger starts one job per key
            self._take_over(repairing, change, now + hold)
            return
        self._jobs.add(job)
        self._jobs.make_live(job)
        self._queue.put_nowait(job)

    @property
    def closed(self) -> bool:
        """Whether the circuit is closed (a repair on a spare tick may be sent now)."""
        return self.circuit.state is State.CLOSED

    def repair(self, change: OrderChange, tick: float | None) -> bool:
        """Send ``change`` (the key's last delivered change, or a resync's) again, once, on ``tick``
        (a spare tick the audit took): only while the tick is fresh, the order settled, the partition
        fenced for this member and the circuit closed, else it is given up (never retried here: the
        audit reads the order again, a resync puts it back in line). Without a tick (a resync's
        floor) the job waits for one as live work does. Its end is told to the audit. False when the
        key has a job (its newest change is on its way) or its partition is being drained."""
        return self._audit_job(change, tick, Lane.REPAIR)

    def read(self, change: OrderChange, tick: float) -> bool:
        """Read back what the vendor holds for ``change``'s order, on ``tick`` (a spare tick the audit
        took; given up if it is stale by the time a worker takes the job); its end is told to the
        audit. False when the key has a job or its partition is being drained."""
        return self._audit_job(change, tick, Lane.AUDIT)

    def _audit_job(self, change: OrderChange, tick: float | None, lane: Lane) -> bool:
        """Queue an audit's job (a read or a repair) of ``change``'s order on ``tick``; False when
        the order has a job or its partition is being drained."""
        if self._closed or self._jobs.get(change.key) is not None or self._jobs.draining(change.tp):
            return False
        job = Job(change.key, change.tp, change=change, lane=lane, tick=tick)
        self._jobs.add(job)
        self._queue.put_nowait(job)
        return True

    def _take_over(self, job: Job, change: OrderChange, not_before: float) -> None:
        """A live change for a key whose audit's read or repair has a job: it takes the job over
        (after its request, if one is in flight), so the key's requests stay one at a time, in order."""
        if job.state is JobState.IN_FLIGHT:
            job.following, job.following_hold = change, not_before
            return
        self._told(job, Outcome(OutcomeKind.ABANDONED, job.key, job.change))
        self._hand_over(job, change, not_before)

    def _hand_over(self, job: Job, change: OrderChange, not_before: float) -> None:
        """``job`` sends ``change`` next, as live work: the ledger's next change of its key, or a
        live change taking an audit's read or repair over, not before ``not_before`` (a request of
        the key may still land until then). The one place a job changes lanes."""
        if job.lane is not Lane.LIVE:
            self._jobs.make_live(job)
        self._jobs.take(job, change)
        job.not_before = max(job.not_before, not_before)
        job.linger_until = self._clock.monotonic() + self._linger_s

    def replace(self, change: OrderChange) -> bool:
        """A newer change of a key: True when the key's job took it in place of the one it held (that
        one was never sent, or its attempts ended and a retry waits); False when the key has no job
        here, or a call of it is in flight (the change waits for the job's next turn)."""
        job = self._jobs.get(change.key)
        if job is not None and job.following is not None:
            job.following = change  # after the repair in flight
            return True
        if job is None or job.state in _BUSY or self._jobs.draining(change.tp):
            return False
        self._jobs.take(job, change)
        return True

    def _abandon(self, job: Job) -> None:
        job.state = JobState.ABANDONED
        if job.timer:
            job.timer.cancel()
            job.timer = None
        self._jobs.forget(job)
        following = self._report(
            job, Outcome(OutcomeKind.ABANDONED, job.key, job.change, attempts=job.attempts)
        )
        if following is not None:  # the live change that was to follow a repair: unresolved too
            self._work_source.report(Outcome(OutcomeKind.ABANDONED, job.key, following))

    def _report(self, job: Job, outcome: Outcome) -> OrderChange | None:
        """Tell whose work ``job`` did how it ended (the ledger, or the audit for an audit's read or
        repair); the key's next change to send, if any: the ledger's next, or the live change that
        waited for the audit's request in flight (set only then). The caller hands it over
        (:meth:`_hand_over`) or reports it abandoned."""
        if job.lane is Lane.LIVE:
            return self._work_source.report(outcome)
        self._told(job, outcome)
        following, job.following = job.following, None
        return following

    def _told(self, job: Job, outcome: Outcome) -> None:
        if self._audit is None or job.change is None or job.told or job.lane is Lane.LIVE:
            return
        job.told = True
        if job.lane is Lane.REPAIR:
            self._audit.repair_ended(outcome)
        elif job.lane is Lane.AUDIT:
            self._audit.read_ended(ReadEnded(job.change, None, outcome.error, sent=False))

    def _requeue(self, job: Job) -> None:
        job.timer = None
        if job.state is JobState.ABANDONED:
            return
        if self._jobs.draining(job.tp):
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
            if job.lane is Lane.AUDIT:
                await self._read(job)
                continue
            if job.lane is Lane.REPAIR:
                if job.tick is None and not await self._gate(job):  # a resync's floor
                    continue
                if job.lane is Lane.REPAIR:
                    if self._repairable(job):
                        assert job.change is not None
                        await self._call(job, job.change)
                    continue
                # A live change took it over while it waited at the gate (with a hold of its own,
                # maybe): it goes through the gate again as live work (found by the simulation,
                # many-shop seed 15 with audits and a resync: it was given up as a repair, and the
                # live change with it, for good).
                self._gates.release_probe(job)
            if not await self._gate(job):
                continue
            change = self._conformed(job)
            if change is None:
                self._gates.release_probe(job)
                continue
            await self._call(job, change)

    def _conformed(self, job: Job) -> OrderChange | None:
        """The change ``job`` sends now, checked against the vendor model; one that does not fit is
        reported (it is dead-lettered) and the key's next change, if any, takes its place. None: the
        job has nothing left to send (it is done)."""
        change = job.change
        while change is not None:
            if change is job.checked:
                return change  # checked before the tick, not replaced while it waited for it
            try:
                if self._target is not None:
                    check(change, self._target)
                else:
                    complete(change)
                job.checked = change
                return change
            except InputError as exc:
                now = self._clock.wall()
                change = self._report(job, Outcome(OutcomeKind.INVALID, job.key, change, exc, 0, now, now))
                if change is not None:
                    self._jobs.take(job, change)
        job.state = JobState.DONE
        self._jobs.forget(job)
        return None

    def _repairable(self, job: Job) -> bool:
        """Whether a repair may be sent now, on the audit's tick; if not, it is given up (told as
        abandoned: the audit reads the order again later)."""
        if not self._gates.spare_tick(job):
            self._abandon(job)
            return False
        return self._conformed(job) is not None

    async def _gate(self, job: Job) -> bool:
        """Wait until the job may send (``connector/gate.py``), its change checked after every wait
        and before the tick. False when it was abandoned meanwhile, or has nothing left to send."""
        while await self._gates.ready(job):
            if self._conformed(job) is None:
                return False
            if await self._gates.ticked(job):
                return True
        return False

    async def _attempt(self, job: Job, change: OrderChange) -> Attempted:
        """Send ``job``'s request on its tick (:class:`~connector.attempt.Attempts`). One that a drain
        cancelled was sent at some time before now (an apply may send several): it may land until
        ``settle_seconds`` after now, counted from now to be safe, and the job is abandoned."""
        attempted = await self._attempts.send(job, change)
        if attempted.cancelled:  # the partition is being revoked: the request may still land
            self._fence.note_ambiguous(job.tp, self._clock.wall())
            self._gates.release_probe(job)
            self._abandon(job)
        return attempted

    async def _read(self, job: Job) -> None:
        """An audit's read: sent only on its own tick while still fresh, the partition fenced for this
        member and the circuit closed (or its probe due: the read is the probe), else given up;
        either way told to the audit once the key's job is gone (or taken over by a live change that
        came meanwhile)."""
        change = job.change
        assert change is not None
        ended = ReadEnded(change, None, sent=False)
        if await self._gates.spare_read(job):
            attempted = await self._attempt(job, change)
            if attempted.cancelled:
                return
            held, error = attempted.held, attempted.error
            if job.probe:
                job.probe = False
                self._outages.record(error)
            ended = ReadEnded(change, held, error)
            if isinstance(error, ConnectorError) and error.ambiguous:  # it may be at the vendor still
                job.not_before = self._clock.monotonic() + self._fence.settle_seconds
                self._fence.note_ambiguous(job.tp, self._clock.wall())
        following, job.following = job.following, None
        settle = job.not_before - self._clock.monotonic()
        if following is not None:
            self._hand_over(job, following, job.following_hold)
            self._requeue(job)
        elif settle > 0:  # the order's job stays until then: nothing else of it is sent meanwhile
            job.state = JobState.SETTLING
            job.timer = asyncio.get_running_loop().call_later(settle, self._settled, job)
        else:
            job.state = JobState.DONE
            self._jobs.forget(job)
        job.told = True
        if self._audit is not None:
            try:
                self._audit.read_ended(ended)
            except Exception:  # the audit's fault must not stop a worker
                log.exception("audit_read_ended_failed", external_id=change.external_id)

    def _settled(self, job: Job) -> None:
        """An audit's read or repair that ended unknown has settled: the job goes on if a live change
        took it over meanwhile, else it ends."""
        job.timer = None
        if job.lane is Lane.LIVE:
            self._requeue(job)
        elif job.state is not JobState.ABANDONED:
            job.state = JobState.DONE
            self._jobs.forget(job)

    async def _call(self, job: Job, change: OrderChange) -> None:
        attempted = await self._attempt(job, change)
        if attempted.cancelled:
            return
        error = attempted.error
        job.probe = False
        if isinstance(error, ConnectorError) and error.ambiguous:
            job.ambiguous = True
            job.not_before = self._clock.monotonic() + self._fence.settle_seconds
            self._fence.note_ambiguous(job.tp, self._clock.wall())
        error = self._outages.per_operation(job, change.op, error)
        self._outages.record(error)
        if error is None:
            if self._audit is not None and job.lane is Lane.LIVE:
                self._audit.delivered(change, job.ambiguous, job.tick)
            job.ambiguous = False
            self._finish(job, Outcome(OutcomeKind.DELIVERED, job.key, change, attempts=job.attempts))
        else:
            self._failed(job, change, error)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        hold = job.following_hold if job.following is not None else 0.0
        following = self._report(job, outcome)
        settle = job.not_before - self._clock.monotonic()
        if following is not None:
            self._hand_over(job, following, hold)
            self._requeue(job)
        elif job.lane is not Lane.LIVE and settle > 0:
            # A repair that ended unknown: the ledger never heard of it, so its job holds the order
            # until its request may have landed (a live one's is held by the ledger's next hold).
            job.state = JobState.SETTLING
            job.timer = asyncio.get_running_loop().call_later(settle, self._settled, job)
        else:
            job.state = JobState.DONE
            self._jobs.forget(job)

    def _failed(self, job: Job, change: OrderChange, error: BaseException) -> None:
        job.linger_until = 0.0  # a retry does not wait for the backlog
        now = self._clock.wall()
        job.first_failure_ts = job.first_failure_ts or now
        job.last_failure_ts = now
        if isinstance(error, RateLimited):
            self._rate_limited(job, error)
        if job.lane is Lane.REPAIR:
            delay: float | None = None  # once: the audit reads the order again
        elif self.circuit.is_open and isinstance(error, ConnectorError) and error.retryable:
            job.attempts -= 1  # an outage is not the event's fault: this failure does not count
            delay = self.circuit.probe_interval * self._rng.uniform(0.5, 1.0)
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
        self._hooks.retry_scheduled(RetryScheduled(self.tenant))
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
        self._hooks.throttled(Throttled(self.tenant))
        self.rate_limited_count += 1
        wait = None if self._outages.trip_on_long_wait(error) else error.retry_after
        # The member waits the vendor's Retry-After, else a first attempt's backoff: the pace itself
        # adapts (``pacer.observe``), and this job's own retry waits its own backoff.
        self._pacer.hold(wait if wait is not None else self._policy.backoff(1))

    # -- revoke and shutdown ------------------------------------------------------------------
    async def drain(self, partitions: set[TopicPartition], timeout: float, revoked: bool = True) -> None:
        """Stop delivering ``partitions``: drop queued and retrying jobs, let calls in flight finish
        within ``timeout``, then cancel them (their requests count as ambiguous for the fence).
        Every dropped job is reported as abandoned. When the partitions are ``revoked`` (not only
        quiesced for a shop being parked), the audit forgets what was delivered for them."""
        self._jobs.drain(partitions)
        if self._audit is not None and revoked:
            self._audit.forget(partitions)
        if self._closed:
            return
        for job in self._jobs.each(partitions):
            if job.call is None:
                self._abandon(job)
        calls = self._jobs.calls(partitions)
        if calls:
            await asyncio.wait([call.ended for call in calls], timeout=timeout)
        for call in self._jobs.calls(partitions):
            call.cancel()
        while self._jobs.any_of(partitions):
            for job in self._jobs.each(partitions):
                if job.call is None and job.state is not JobState.IN_FLIGHT:
                    self._abandon(job)
            await asyncio.sleep(0.01)

    def undrain(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are owned again: accept their jobs."""
        self._jobs.undrain(partitions)
