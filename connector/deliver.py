"""Delivery: paced, concurrent calls to the vendor, retried by the error's class, stopped by outages.

A fixed pool of ``max_in_flight`` workers takes ready changes from one FIFO queue (keys are served in
the order they became ready, so the commit watermark keeps moving). Every call waits on the shared
:class:`~connector.pacing.Pacer` (a 429 slows every worker) and on the outage
:class:`~connector.circuit.Circuit` (while open, only probes go out). A retry waits on a timer, not in a
worker, so a key being retried never blocks other keys. When a worker picks a job up it sends the newest
change of its key, so a key costs one call however many events queued up behind it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from connector.circuit import Circuit, State
from connector.decode import OrderChange
from connector.errors import ConnectorError, RateLimited, SinkError
from connector.logs import get_logger
from connector.metrics import Metrics
from connector.offsets import TopicPartition
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.sinks import Sink

log = get_logger("connector.deliver")


class DeliveryHooks(Protocol):
    """What the pipeline does when a call ends; called synchronously from the workers."""

    def delivered(self, change: OrderChange) -> None: ...
    def failed(self, job: Job, error: BaseException) -> None: ...
    def abandoned(self, change: OrderChange) -> None: ...
    def newer(self, change: OrderChange) -> OrderChange | None: ...
    def outage(self, down: bool, reason: str) -> None: ...


@dataclass(eq=False, slots=True)
class Job:
    """One change on its way to the vendor, with its failure history."""

    change: OrderChange
    tp: TopicPartition
    attempts: int = 0
    first_failure_ts: float = 0.0
    last_failure_ts: float = 0.0
    abandoned: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    call: asyncio.Future[None] | None = field(default=None, repr=False)


def status_class(error: BaseException | None) -> str:
    """A low-cardinality label for a call's outcome: 2xx, 4xx, 429, 5xx, timeout, connect, other."""
    if error is None:
        return "2xx"
    if isinstance(error, SinkError) and error.status is not None:
        return "429" if error.status == 429 else f"{error.status // 100}xx"
    name = type(error).__name__
    return {"SinkTimeout": "timeout", "SinkConnectError": "connect"}.get(name, "other")


class Deliverer:
    """Workers, pacing, circuit and retry timers for the vendor calls."""

    def __init__(
        self,
        sink: Sink,
        hooks: DeliveryHooks,
        metrics: Metrics,
        *,
        rate_per_second: float,
        max_in_flight: int,
        policy: RetryPolicy,
        circuit: Circuit | None = None,
    ) -> None:
        self._sink = sink
        self._hooks = hooks
        self._metrics = metrics
        self._policy = policy
        self.pacer = Pacer(rate_per_second, on_wait=metrics.limiter_wait.inc)
        self.circuit = circuit or Circuit()
        self._workers_n = max_in_flight
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._pending: defaultdict[TopicPartition, set[Job]] = defaultdict(set)
        self._draining: set[TopicPartition] = set()
        self._workers: list[asyncio.Task[None]] = []

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
        for jobs in self._pending.values():
            for job in jobs:
                if job.timer:
                    job.timer.cancel()

    def submit(self, change: OrderChange) -> None:
        """Queue ``change`` for delivery (its key has nothing else in flight)."""
        tp = TopicPartition(change.record.topic, change.record.partition)
        if tp in self._draining:
            self._hooks.abandoned(change)
            return
        job = Job(change, tp)
        self._pending[tp].add(job)
        self._queue.put_nowait(job)

    def _done(self, job: Job) -> None:
        jobs = self._pending.get(job.tp)
        if jobs is not None:
            jobs.discard(job)
            if not jobs:
                del self._pending[job.tp]

    def _abandon(self, job: Job) -> None:
        job.abandoned = True
        if job.timer:
            job.timer.cancel()
        self._done(job)
        self._hooks.abandoned(job.change)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job.abandoned:
                continue
            while not self.circuit.may_call(time.monotonic()):
                await asyncio.sleep(self.circuit.wait_hint(time.monotonic()))
            await self.pacer.acquire()
            if job.abandoned:
                self.circuit.release()
                continue
            self._take_newest(job)
            await self._call(job)

    def _take_newest(self, job: Job) -> None:
        """Send the newest change of the key: one that arrived while this job queued replaces it."""
        newest = self._hooks.newer(job.change)
        if newest is None:
            return
        self._done(job)
        job.change = newest
        job.tp = TopicPartition(newest.record.topic, newest.record.partition)
        job.attempts = 0
        job.first_failure_ts = job.last_failure_ts = 0.0
        self._pending[job.tp].add(job)

    async def _call(self, job: Job) -> None:
        job.attempts += 1
        job.call = asyncio.ensure_future(self._sink.apply(job.change))
        self._metrics.in_flight.inc()
        started = time.monotonic()
        try:
            await asyncio.wait({job.call})
        except asyncio.CancelledError:
            job.call.cancel()
            raise
        finally:
            self._metrics.in_flight.dec()
        if job.call.cancelled():
            self.circuit.release()
            self._abandon(job)
            return
        error = job.call.exception()
        job.call = None
        self._metrics.latency.observe(time.monotonic() - started)
        self._metrics.requests.labels(status_class(error)).inc()
        self._track_circuit(error)
        if error is None:
            self._done(job)
            self._hooks.delivered(job.change)
        else:
            self._failed(job, error)

    def _track_circuit(self, error: BaseException | None) -> None:
        changed = self.circuit.record(error, time.monotonic())
        if changed is State.OPEN:
            self._hooks.outage(True, self.circuit.reason)
        elif changed is State.CLOSED:
            self._hooks.outage(False, "")

    def _failed(self, job: Job, error: BaseException) -> None:
        now = time.time()
        job.first_failure_ts = job.first_failure_ts or now
        job.last_failure_ts = now
        record = job.change.record
        if isinstance(error, RateLimited):
            self._metrics.rate_limited.inc()
            hold = error.retry_after if error.retry_after is not None else self._policy.backoff(job.attempts)
            self.pacer.slow_down(hold)
        if self.circuit.is_open and isinstance(error, ConnectorError) and error.retryable:
            job.attempts -= 1  # an outage is not the event's fault: this failure does not count
            delay: float | None = self.circuit.probe_interval * random.uniform(0.5, 1.0)
        else:
            delay = self._policy.delay(error, job.attempts, now - job.first_failure_ts)
        if delay is None:
            self._done(job)
            self._hooks.failed(job, error)
            return
        self._metrics.retries.inc()
        log.debug(
            "delivery_retry", error=str(error)[:300], error_class=type(error).__name__,
            attempt=job.attempts, retry_in_s=round(delay, 3), topic=record.topic,
            partition=record.partition, offset=record.offset, external_id=job.change.external_id,
        )  # fmt: skip
        job.timer = asyncio.get_running_loop().call_later(delay, self._requeue, job)

    def _requeue(self, job: Job) -> None:
        job.timer = None
        if not job.abandoned:
            self._queue.put_nowait(job)

    async def drain(self, partitions: set[TopicPartition], timeout: float) -> None:
        """Stop delivering ``partitions``: drop queued and retrying jobs, let calls in flight finish
        within ``timeout``, then cancel them. Every dropped job is reported as abandoned."""
        self._draining |= partitions
        for tp in partitions:
            for job in list(self._pending.get(tp, ())):
                if job.call is None:
                    self._abandon(job)
        deadline = time.monotonic() + timeout
        while any(tp in self._pending for tp in partitions) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        while any(tp in self._pending for tp in partitions):
            for tp in partitions:
                for job in list(self._pending.get(tp, ())):
                    if job.call is None:
                        self._abandon(job)
                    else:
                        job.call.cancel()
            await asyncio.sleep(0.01)

    def undrain(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are owned again: accept their jobs."""
        self._draining -= partitions
