"""The deliverer's jobs: one per key with work (:class:`Job`, its life in ``connector.deliver``), and
the book of those not finished (:class:`JobBook`).

The book is kept by partition because a partition is what a revoke takes away: when one is drained,
its queued and retrying jobs are dropped and its calls in flight are waited for, and while it is
being drained no job of it is accepted. Split out of the deliverer so that its workers, gates and
timers read apart from this bookkeeping; the deliverer owns one book and is the only one to write it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from connector.structs import OrderChange, TopicPartition


class JobState(StrEnum):
    """Where a job is in its life (see ``connector.deliver``'s module docstring)."""

    QUEUED = "queued"
    GATED = "gated"
    IN_FLIGHT = "in_flight"
    BACKOFF = "backoff"
    SETTLING = "settling"
    DONE = "done"
    ABANDONED = "abandoned"


class Lane(StrEnum):
    """Whose work a job does: the live traffic's (an order's newest change, handed over by the ledger
    and reported back to it), an audit's read of the order (on a spare tick the audit took), or a
    repair's (an audit found the vendor's copy drifted, and the change last delivered is sent again);
    the last two are reported back to the audit. A live change for the key takes an audit's job over
    (:attr:`Job.following` while its request is in flight): one job per key, so no two requests of
    an order are at the vendor together, and the key's order of writes holds across the lanes."""

    LIVE = "live"
    AUDIT = "audit"
    REPAIR = "repair"


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
    checked: OrderChange | None = field(default=None, repr=False)  # the change last found to fit
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    call: Call | None = field(default=None, repr=False)
    lane: Lane = Lane.LIVE
    following: OrderChange | None = field(default=None, repr=False)  # live, after the repair in flight
    following_hold: float = 0.0  # monotonic: not before then (the live change's hold)
    told: bool = False  # an audit's read or repair: its end was told to the audit


class Call:
    """One attempt's call in flight. The worker runs it itself, in the step its tick woke it in (a
    task of its own would start a loop iteration later, and on a busy loop its tick would be stale);
    a drain cancels it through its timeout scope (:meth:`cancel`: the worker sees ``TimeoutError``,
    not a cancellation of itself) and waits for it through :attr:`ended`."""

    __slots__ = ("_scope", "cancelled", "ended")

    def __init__(self, scope: asyncio.Timeout) -> None:
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.cancelled = False  # by :meth:`cancel`: the request may have been sent
        self._scope = scope

    def cancel(self) -> None:
        """Stop the call now (its partition is being revoked): it ends as cancelled."""
        if not self.ended.done() and not self.cancelled:
            self.cancelled = True
            self._scope.reschedule(asyncio.get_running_loop().time())

    def end(self) -> None:
        """The call is over (answered, failed or cancelled): whoever waits for it goes on."""
        if not self.ended.done():
            self.ended.set_result(None)


class JobBook:
    """The jobs not finished (queued, waiting, in flight or retrying), by the partition of the change
    each one sends, and the partitions being drained (their jobs are not accepted); how many of them
    are live work, and :attr:`idle` while none is (an audit reads only then)."""

    def __init__(self) -> None:
        self._jobs: dict[TopicPartition, dict[Job, None]] = {}  # insertion-ordered sets
        self._by_key: dict[str, Job] = {}
        self._draining: set[TopicPartition] = set()
        self._live = 0
        self.idle = asyncio.Event()
        """Set while no live job is in the book: the audits may read."""
        self.idle.set()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._jobs.values())

    def add(self, job: Job) -> None:
        """``job`` is not finished (under its partition)."""
        self._jobs.setdefault(job.tp, {})[job] = None
        self._by_key[job.key] = job

    def get(self, key: str) -> Job | None:
        """The unfinished job of ``key``, if it has one."""
        return self._by_key.get(key)

    def make_live(self, job: Job) -> None:
        """``job`` is (now) live work: the ledger's change, or one that took an audit's job over."""
        job.lane = Lane.LIVE
        self._live += 1
        self.idle.clear()

    def take(self, job: Job, change: OrderChange) -> None:
        """``job`` sends ``change`` next, with no failure history (the settle time of an ambiguous
        attempt of its key stays: that request may still land)."""
        job.change = change
        job.attempts = 0
        job.first_failure_ts = job.last_failure_ts = 0.0
        job.forbidden_at = -1
        if change.tp != job.tp:  # a key's newer change may come from another partition
            self._remove(job)
            job.tp = change.tp
            self.add(job)

    def forget(self, job: Job) -> None:
        """``job`` is finished (done or abandoned): out of the book, and of the live count if it was
        live work."""
        if job.lane is Lane.LIVE and self._by_key.get(job.key) is job:
            self._live -= 1
            if self._live <= 0:
                self._live = 0
                self.idle.set()
        self._remove(job)

    def _remove(self, job: Job) -> None:
        if self._by_key.get(job.key) is job:
            del self._by_key[job.key]
        jobs = self._jobs.get(job.tp)
        if jobs is not None:
            jobs.pop(job, None)
            if not jobs:
                del self._jobs[job.tp]

    def partitions(self) -> list[TopicPartition]:
        """The partitions with unfinished jobs, in order."""
        return sorted(self._jobs)

    def of(self, tp: TopicPartition) -> list[Job]:
        """The unfinished jobs of ``tp`` now, oldest first (a copy: the caller may finish them)."""
        return list(self._jobs.get(tp, ()))

    def each(self, partitions: Iterable[TopicPartition]) -> Iterator[Job]:
        """The unfinished jobs of ``partitions``, partition by partition in order, each partition's
        taken when it is reached (the caller may finish them as it goes)."""
        for tp in sorted(partitions):
            yield from self.of(tp)

    def calls(self, partitions: Iterable[TopicPartition]) -> list[Call]:
        """The calls in flight of ``partitions``' jobs."""
        return [job.call for job in self.each(partitions) if job.call]

    def any_of(self, partitions: Iterable[TopicPartition]) -> bool:
        """Whether a job of ``partitions`` is not finished."""
        return any(tp in self._jobs for tp in partitions)

    def draining(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is being drained (its jobs are abandoned, not accepted)."""
        return tp in self._draining

    def drain(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are being drained (revoked, or their shop quiesced)."""
        self._draining |= partitions

    def undrain(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` take jobs again."""
        self._draining -= partitions
