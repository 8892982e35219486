"""The gates a delivery job passes before each attempt, in order: its order settled, its partition
caught up (the linger), the partition fenced for this member, the outage circuit letting it through,
and a tick of the budget; then, the tick in hand, the circuit and the fence asked again. An audit's
read or repair does not pass them: it is sent on the spare tick the audit took if that tick may still
be used (:meth:`Gate.spare_tick`, :meth:`Gate.spare_read`), or given up.

Split out of the deliverer (``connector/deliver.py``), which checks the change against the vendor
model between :meth:`Gate.ready` and :meth:`Gate.ticked`: after every wait (a replaced change is
never judged) and before the tick (a tick is used at once; the loop is busiest when many shops
send, and a tick used later than ``pacing.LATE`` is given up). One per deliverer, stateless
besides the parts it asks; the job carries its own state (:class:`~connector.jobs.Job`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from connector.circuit import Circuit, State
from connector.clock import Clock
from connector.fence import Fence
from connector.jobs import Job, JobState
from connector.outages import Outages
from connector.pacing import Pacer
from connector.structs import TopicPartition


class Linger(Protocol):
    """Whether a partition's newer events are likely yet to be read (``connector.membership``)."""

    def behind(self, tp: TopicPartition) -> bool: ...

    async def caught_up(self, tp: TopicPartition, timeout: float) -> None:
        """Return once ``tp`` is no longer behind, or after ``timeout`` seconds."""
        ...


class Gate:
    """Waits until a job may send, in two steps around the deliverer's check of its change."""

    def __init__(self, *, clock: Clock, pacer: Pacer, outages: Outages, linger: Linger | None) -> None:
        self._clock = clock
        self._pacer = pacer
        self._fence: Fence = pacer.fence  # the pacer's ticks and the job's partition: one fence
        self._outages = outages
        self._circuit: Circuit = outages.circuit
        self._linger = linger

    async def ready(self, job: Job) -> bool:
        """Wait until ``job``'s order has settled, its partition is caught up (or its linger is
        over), the partition is fenced for this member and the circuit lets a call through. False
        when the job was abandoned meanwhile."""
        while True:
            if job.state is JobState.ABANDONED:
                return False
            now = self._clock.monotonic()
            if job.not_before > now:
                await asyncio.sleep(job.not_before - now)
            elif job.linger_until > now and self._linger is not None and self._linger.behind(job.tp):
                await self._linger.caught_up(job.tp, job.linger_until - now)
            elif not self._fence.may_send(job.tp):
                await asyncio.sleep(self._fence.wait_hint(job.tp))
            elif not self._circuit.may_call(now):
                await asyncio.sleep(self._circuit.wait_hint(now))
            else:
                return True

    async def ticked(self, job: Job) -> bool:
        """Take a budget tick for ``job`` (kept on it, for its first request) and ask again: True
        when it may send now; False when it must go through :meth:`ready` again (it was abandoned,
        the circuit or the fence changed while it waited, or its tick went to the circuit's read
        probe)."""
        job.probe = self._circuit.state is State.HALF_OPEN
        job.tick = await self._pacer.acquire()
        state = self._circuit.state
        allowed = state is State.CLOSED or (job.probe and state is State.HALF_OPEN)
        if job.state is JobState.ABANDONED or not allowed or not self._fence.may_send(job.tp):
            self.release_probe(job)
            return False
        if job.probe and self._circuit.forbidden:
            job.probe = False
            # A read (is it the key, or the operation?), then this job goes through the gate again.
            await self._outages.read_probe(job.tick)
            return False
        return True

    def spare_tick(self, job: Job) -> bool:
        """Whether an audit's repair may be sent now, on the spare tick it was queued with: the tick
        still fresh, its order settled, the partition fenced for this member and the circuit closed
        (or this job its probe: a repair without a tick took one at the gate). If not, it is given
        up, and a probe it held released."""
        tick = job.tick
        state = self._circuit.state
        sendable = (
            tick is not None
            and job.not_before <= self._clock.monotonic()
            and self._pacer.fresh(tick)
            and self._fence.may_send(job.tp, tick)
            and (state is State.CLOSED or (job.probe and state is State.HALF_OPEN))
        )
        if not sendable:
            self.release_probe(job)
        return sendable

    async def spare_read(self, job: Job) -> bool:
        """Whether an audit's read may be sent now, on the spare tick it was queued with: the tick
        still fresh and the partition fenced for this member, the circuit closed, or open with its
        probe due: the read is then its probe (``job.probe``), since an open circuit with no live
        traffic would never be probed again. After a 403 the probe is :meth:`Outages.read_probe`
        (is it the key, or the operation?), on this tick, and the read is not sent (found by the
        simulation, seed 175 with audits and a resync: a resent DELETE refused twice left the
        circuit open, the audits idle)."""
        tick = job.tick
        if tick is None or not self._pacer.fresh(tick) or not self._fence.may_send(job.tp, tick):
            return False
        circuit = self._circuit
        if circuit.state is State.CLOSED:
            return True
        job.probe = circuit.state is State.OPEN and circuit.may_call(self._clock.monotonic())
        if job.probe and circuit.forbidden:
            job.probe = False
            job.state = JobState.IN_FLIGHT  # a live change meanwhile follows it (found by review)
            await self._outages.read_probe(tick)
        return job.probe

    def release_probe(self, job: Job) -> None:
        """``job`` was the circuit's probe and will not call: another job may probe."""
        if job.probe:
            job.probe = False
            self._circuit.release(self._clock.monotonic())


__all__ = ["Gate", "Linger"]
