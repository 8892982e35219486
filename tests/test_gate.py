"""The gates a delivery job passes before each attempt (``connector/gate.py``), on virtual time: its
order's settle time, the linger while its partition is behind, the fence, the circuit, then a budget
tick with the circuit and the fence asked again, and the read probe a circuit opened by a 403 sends
in place of the job's call; and whether an audit's read or repair may still use its spare tick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from connector import errors
from connector.circuit import Circuit, State
from connector.fence import Fence
from connector.gate import Gate
from connector.jobs import Job, JobState
from connector.metrics import Metrics
from connector.outages import Outages
from connector.pacing import Pacer
from connector.sinks import Prepaid
from connector.structs import TopicPartition
from tests.fakes import Behind, LoopClock
from tests.sim.loop import VirtualTimeLoop

START = 1_800_000_000.0
TP = TopicPartition("orders", 0)


class Reader:
    """A vendor that answers reads with ``error`` (None: they succeed) (``connector.outages.Prober``)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.reads = 0

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        self.reads += 1
        if self.error is not None:
            raise self.error


class Parts:
    """A gate over partition ``TP``, with the parts it asks."""

    def __init__(self, fenced: bool = True) -> None:
        clock = LoopClock()
        self.fence = Fence(clock, lease_seconds=float("inf"), settle_seconds=2.0)
        if fenced:
            self.fence.assign(TP, 0.0)
            self.fence.renew(TP, float("inf"))
        pacer = Pacer(10.0, clock, self.fence)
        pacer.set_layout({TP.topic: 1})
        self.pacer = pacer
        self.circuit = Circuit(window=4, min_calls=2, failure_ratio=0.5, probe_interval=1.0)
        self.reader, self.metrics, self.behind = Reader(), Metrics(), Behind()
        outages = Outages(self.circuit, self.reader, self.metrics, clock)
        self.gate = Gate(clock=clock, pacer=pacer, outages=outages, linger=self.behind)


def on_virtual_time(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        runner.run(scenario())


def since_start() -> float:
    return asyncio.get_running_loop().time() - START


def test_ready_waits_for_the_settle_time_then_the_linger_while_behind() -> None:
    """Held until 2 s (a request of its order may still land), then lingering while the partition is
    behind, at most until its linger ends at 5 s."""

    async def scenario() -> None:
        p = Parts()
        p.behind.now = True
        job = Job("A1", TP, not_before=START + 2.0, linger_until=START + 5.0)
        assert await p.gate.ready(job)
        assert since_start() >= 5.0
        assert since_start() < 5.2

    on_virtual_time(scenario)


def test_ready_stops_lingering_once_the_partition_caught_up() -> None:
    async def scenario() -> None:
        p = Parts()
        p.behind.now = True
        asyncio.get_running_loop().call_later(1.0, setattr, p.behind, "now", False)
        assert await p.gate.ready(Job("A1", TP, linger_until=START + 30.0))
        assert 1.0 <= since_start() < 1.2

    on_virtual_time(scenario)


def test_ready_waits_for_the_fence_and_the_circuit() -> None:
    """Not fenced for this member: it waits; fenced, it waits for an open circuit to let a probe
    through."""

    async def scenario() -> None:
        p = Parts(fenced=False)
        p.circuit.record(errors.AuthError("403", status=403), 0.0)  # opened at 0: a probe from 1 s

        def fenced() -> None:
            p.fence.assign(TP, 0.0)
            p.fence.renew(TP, float("inf"))

        asyncio.get_running_loop().call_later(3.0, fenced)
        ready = asyncio.ensure_future(p.gate.ready(Job("A1", TP)))
        await asyncio.sleep(2.9)
        assert not ready.done(), "not fenced for this member yet"
        assert await ready
        assert since_start() >= 3.0
        assert p.circuit.state is State.HALF_OPEN, "it is the probe"

    on_virtual_time(scenario)


def test_ready_is_false_once_the_job_is_abandoned() -> None:
    async def scenario() -> None:
        p = Parts()
        job = Job("A1", TP, not_before=START + 10.0)
        asyncio.get_running_loop().call_later(1.0, setattr, job, "state", JobState.ABANDONED)
        assert not await p.gate.ready(job)
        assert since_start() < 10.0 + 0.1

    on_virtual_time(scenario)


def test_ticked_takes_a_tick_and_lets_the_job_send() -> None:
    async def scenario() -> None:
        p = Parts()
        job = Job("A1", TP)
        assert await p.gate.ticked(job)
        assert job.tick is not None
        assert not job.probe

    on_virtual_time(scenario)


def test_ticked_is_false_when_the_circuit_opened_while_it_waited_for_its_tick() -> None:
    """The budget spent (10/s): the second job waits for its tick; the circuit opens meanwhile, so
    the job goes through the gate again instead of calling."""

    async def scenario() -> None:
        p = Parts()
        assert await p.gate.ticked(Job("A1", TP))
        now = asyncio.get_running_loop().time()
        asyncio.get_running_loop().call_later(0.01, p.circuit.trip, "down", now)
        assert not await p.gate.ticked(Job("A2", TP))

    on_virtual_time(scenario)


def test_a_circuit_opened_by_a_403_spends_the_probes_tick_on_a_read() -> None:
    """The half-open circuit's probe, after a 403: the tick goes to a read (is it the key?), the job
    does not call and goes through the gate again; the read's answer closes the circuit."""

    async def scenario() -> None:
        p = Parts()
        p.circuit.record(errors.AuthError("403", status=403), 0.0)
        job = Job("A1", TP)
        assert await p.gate.ready(job)
        assert not await p.gate.ticked(job)
        assert p.reader.reads == 1
        assert p.circuit.state is State.CLOSED, "the key can read: the 403 was about the operation"
        answered = p.metrics.registry.get_sample_value(
            "connector_api_requests_total", {"status_class": "2xx"}
        )
        assert answered == 1
        assert await p.gate.ticked(job)

    on_virtual_time(scenario)


def test_a_probe_that_will_not_call_is_released() -> None:
    async def scenario() -> None:
        p = Parts()
        p.circuit.record(errors.ServerError("503", status=503), 0.0)
        p.circuit.record(errors.ServerError("503", status=503), 0.0)
        job = Job("A1", TP)
        assert await p.gate.ready(job)
        job.state = JobState.ABANDONED
        assert not await p.gate.ticked(job)
        assert p.circuit.state is State.OPEN
        assert p.circuit.may_call(asyncio.get_running_loop().time()), "another job may probe at once"

    on_virtual_time(scenario)


def test_a_repair_uses_its_spare_tick_only_while_it_is_fresh_its_order_settled_and_the_circuit_closed() -> (
    None
):
    async def scenario() -> None:
        p = Parts()
        tick = await p.pacer.acquire()
        assert p.gate.spare_tick(Job("A1", TP, tick=tick))
        assert not p.gate.spare_tick(Job("A1", TP, tick=None)), "no tick"
        assert not p.gate.spare_tick(Job("A1", TP, tick=tick, not_before=START + 5.0)), "not settled"
        p.circuit.record(errors.ServerError("503", status=503), 0.0)
        p.circuit.record(errors.ServerError("503", status=503), 0.0)
        assert not p.gate.spare_tick(Job("A1", TP, tick=tick)), "the circuit is open"
        assert p.circuit.may_call(since_start() + START)  # half-open now: this job is its probe
        probe = Job("A1", TP, tick=tick, probe=True)
        assert p.gate.spare_tick(probe)
        await asyncio.sleep(1.0)
        assert not p.gate.spare_tick(probe), "the tick went stale"
        assert not probe.probe, "its probe released: another job may probe"
        assert p.circuit.may_call(asyncio.get_running_loop().time())

    on_virtual_time(scenario)


def test_an_audits_read_is_the_probe_of_an_open_circuit_but_not_after_a_403() -> None:
    """Closed: the read is sent. Open with its probe due: the read is the probe. Opened by a 403:
    the probe is a read of the key on this tick, and the audit's read is not sent. A stale tick or
    a partition not fenced for this member: not sent."""

    async def scenario() -> None:
        p = Parts()
        tick = await p.pacer.acquire()
        assert await p.gate.spare_read(Job("A1", TP, tick=tick))
        p.circuit.record(errors.ServerError("503", status=503), 0.0)
        p.circuit.record(errors.ServerError("503", status=503), 0.0)
        read = Job("A1", TP, tick=tick)
        assert await p.gate.spare_read(read)
        assert read.probe, "the read is the open circuit's probe"
        other = Job("A2", TP, tick=tick)
        assert not await p.gate.spare_read(other), "one probe at a time"
        assert not other.probe

        q = Parts()
        q.circuit.record(errors.AuthError("403", status=403), 0.0)
        tick = await q.pacer.acquire()
        forbidden = Job("A1", TP, tick=tick)
        assert not await q.gate.spare_read(forbidden)
        assert q.reader.reads == 1, "the key was read instead"
        assert forbidden.state is JobState.IN_FLIGHT, "a live change meanwhile follows it"
        assert not forbidden.probe

        tick = await q.pacer.acquire()
        q.fence.drop(TP)
        assert not await q.gate.spare_read(Job("A1", TP, tick=tick)), "not fenced for this member"
        q.fence.assign(TP, 0.0)
        q.fence.renew(TP, float("inf"))
        tick = await q.pacer.acquire()
        await asyncio.sleep(1.0)
        assert not await q.gate.spare_read(Job("A1", TP, tick=tick)), "a stale tick"

    on_virtual_time(scenario)
