"""The deliverer, on virtual time. With the real Loop client against a scripted vendor: a 429 is a
pacing signal, never an outage, and never the event's fault; a Retry-After longer than the connector
waits is an outage. With a vendor client and a work source of our own (``WorkSource``, ``Linger``): a
job sends its order's newest change once it may send (newer changes handed to it replace the one it
holds while nothing is in flight, and wait for its report while a call is), checks it against the
vendor model only then, goes on while its order has more, holds its order ``settle_seconds`` after an
ambiguous failure, retries by the error's class, lingers while its partition is behind, and is
abandoned (reported, unresolved) by a drain or a close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from random import Random
from typing import Any

import httpx
import pytest

from connector import errors
from connector.circuit import Circuit, State
from connector.config import SinkSettings
from connector.deliver import Deliverer, Outcome, OutcomeKind, status_class
from connector.errors import AuthError, MappingError, RejectedError, ServerError, SinkTimeout
from connector.fence import Fence
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.sinks import Prepaid
from connector.structs import OrderChange, Record, TopicPartition
from connector.vendors import Target, make_sink, target
from tests.fakes import Audit, Behind, LoopClock, Vendor
from tests.sim.loop import VirtualTimeLoop

START = 1_800_000_000.0


@dataclass
class Run:
    """What one run saw: the vendor's answers, the outcomes, the circuit's changes."""

    answers: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, status)
    outcomes: list[Outcome] = field(default_factory=list)
    circuit: list[tuple[float, State]] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)


def deliver(
    answer: Callable[[int], tuple[int, dict[str, str]]], orders: int = 3, max_retry_after: float = 60.0
) -> Run:
    """Deliver one change of each of ``orders`` orders; the vendor answers request number ``n`` with
    ``answer(n)`` (a status and headers; 200 carries the order). Returns once every change is delivered
    or given up (within ten virtual minutes)."""
    run = Run()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def vendor(request: httpx.Request) -> httpx.Response:
            status, headers = answer(len(run.answers))
            run.answers.append((loop.time() - START, status))
            body = {"order": {"id": 1, "external_id": "x"}} if status == 200 else {"message": "Too Many"}
            return httpx.Response(status, json=body, headers=headers)

        clock = LoopClock()
        pacer = Pacer.standalone(5.0, clock)
        settings = SinkSettings(base_url="http://vendor", api_key="k", rate_limit_per_second=5.0)
        pending = {
            f"o{i}": OrderChange(Record("", 0, i, b"o", b"{}"), f"o{i}", "upsert", {"external_id": f"o{i}"})
            for i in range(orders)
        }

        class Work:
            """Each order's one change, until its delivery ends (``connector.deliver.WorkSource``)."""

            def report(self, outcome: Outcome) -> OrderChange | None:
                run.outcomes.append(outcome)
                if outcome.kind is not OutcomeKind.ABANDONED:
                    pending.pop(outcome.key, None)
                return None

        def circuit_changed(tenant: str, state: State) -> None:
            run.circuit.append((loop.time() - START, state))

        sink = make_sink(settings, httpx.MockTransport(vendor), pacer)
        deliverer = Deliverer(
            sink,
            Work(),
            run.metrics,
            clock=clock,
            rng=Random(1),
            pacer=pacer,
            circuit=Circuit(window=10, min_calls=5, failure_ratio=0.5, probe_interval=1.0),
            policy=RetryPolicy(base_seconds=0.1, cap_seconds=1.0, max_attempts=3, rng=Random(2)),
            target=None,
            max_in_flight=2,
            max_retry_after=max_retry_after,
            on_circuit=circuit_changed,
        )
        async with sink, deliverer:
            for change in list(pending.values()):
                deliverer.submit(change)
            deadline = loop.time() + 600
            while pending and loop.time() < deadline:
                await asyncio.sleep(0.5)

    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        runner.run(main())
    return run


def test_a_stream_of_429s_never_opens_the_circuit_nor_gives_an_event_up() -> None:
    """Found on the real broker (issue 20): 429s counted toward the failure ratio, so another client
    spending the key opened the outage circuit ("26 of the last 50 calls failed ... 429") and parked
    the shop. Now 40 429s in a row (ten times the circuit's window, thirteen times the attempts an
    event may fail) leave the circuit closed, and every change is delivered once the vendor accepts."""
    run = deliver(lambda n: (429, {}) if n < 40 else (200, {}))
    assert [s for _, s in run.answers].count(429) == 40
    assert run.circuit == [], "the circuit never changed"
    assert [o.kind for o in run.outcomes] == [OutcomeKind.DELIVERED] * 3
    assert run.metrics.registry.get_sample_value("connector_api_rate_limited_total") == 40


def test_429s_slow_the_pace_and_hold_it_after_a_cut() -> None:
    """A 429 cuts the pace and holds every request a while (the vendor's bucket refills): the request
    after the first 429 leaves at least a second later, though ticks come every 0.2 s."""
    run = deliver(lambda n: (429, {}) if n == 2 else (200, {}), orders=6)
    times = [t for t, _ in run.answers]
    first_429 = times[2]
    assert times[3] - first_429 >= 1.0
    assert [o.kind for o in run.outcomes] == [OutcomeKind.DELIVERED] * 6


def test_a_retry_after_above_the_ceiling_opens_the_circuit_and_a_probe_closes_it() -> None:
    """``Retry-After: 3600`` with ``delivery.max_retry_after_seconds = 60``: an outage, at once (one 429
    is enough); the next probe, accepted, closes it, and the change is delivered."""
    run = deliver(lambda n: (429, {"Retry-After": "3600"}) if n == 0 else (200, {}), orders=1)
    assert [state for _, state in run.circuit] == [State.OPEN, State.CLOSED]
    assert run.metrics.registry.get_sample_value("connector_retry_after_exceeded_total") == 1
    assert [o.kind for o in run.outcomes] == [OutcomeKind.DELIVERED]


def test_a_retry_after_within_the_ceiling_waits_in_place() -> None:
    """``Retry-After: 3`` is waited out with the circuit closed: no request for three seconds."""
    run = deliver(lambda n: (429, {"Retry-After": "3"}) if n == 0 else (200, {}), orders=2)
    assert run.circuit == []
    assert run.answers[1][0] - run.answers[0][0] >= 3.0
    assert [o.kind for o in run.outcomes] == [OutcomeKind.DELIVERED] * 2


class _SlowerTimeout(errors.SinkTimeout):
    """A subclass the label table never named."""


NAMED_LIKE_A_TIMEOUT: type[Exception] = type("SinkTimeout", (Exception,), {})
"""Not the connector's SinkTimeout, only named like it."""


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (None, "2xx"),
        (errors.RateLimited("x"), "429"),
        (errors.ServerError("x", status=502), "5xx"),
        (errors.RejectedError("x", status=422), "4xx"),
        (errors.SinkTimeout("x"), "timeout"),
        (_SlowerTimeout("x"), "timeout"),
        (errors.SinkConnectError("x"), "connect"),
        (errors.SinkCutOff("x"), "connect"),
        (NAMED_LIKE_A_TIMEOUT("x"), "other"),
        (RuntimeError("x"), "other"),
    ],
)
def test_a_calls_label_is_read_from_its_class_not_its_name(error: BaseException | None, label: str) -> None:
    """``connector_api_requests_total{status_class}``: the error's class (or its status) decides,
    subclasses included; an unrelated class with the same name is ``other``."""
    assert status_class(error) == label


# -- the deliverer's life of a job, with a vendor client and a work source of our own -----------------
TP = TopicPartition("orders", 0)


class Orders:
    """A work source of our own (``connector.deliver.WorkSource``), fed as the ledger feeds a
    deliverer: a key's first change starts its job; a newer one is handed to the job, which takes it
    while nothing of the key is in flight (the one it held is replaced, never sent), else it waits
    here for the job's report, whose answer hands it out."""

    def __init__(self) -> None:
        self.deliverer: Deliverer | None = None
        self.current: dict[str, OrderChange] = {}  # what each key's job holds
        self.waiting: dict[str, OrderChange] = {}
        self.replaced: list[OrderChange] = []
        self.outcomes: list[Outcome] = []

    def add(self, key: str, offset: int, status: str = "active", hold: float = 0.0) -> OrderChange:
        assert self.deliverer is not None
        record = Record(TP.topic, TP.partition, offset, key.encode(), b"{}")
        change = OrderChange(record, key, "upsert", {"external_id": key, "status": status})
        if key not in self.current:
            self.current[key] = change
            self.deliverer.submit(change, hold)
        elif self.deliverer.replace(change):
            self.replaced.append(self.current[key])
            self.current[key] = change
        else:
            if key in self.waiting:
                self.replaced.append(self.waiting[key])
            self.waiting[key] = change
        return change

    def report(self, outcome: Outcome) -> OrderChange | None:
        self.outcomes.append(outcome)
        following = self.waiting.pop(outcome.key, None)
        if outcome.kind is OutcomeKind.ABANDONED or following is None:
            self.current.pop(outcome.key, None)
            return None
        self.current[outcome.key] = following
        return following

    def kinds(self) -> list[tuple[str, OutcomeKind]]:
        return [(o.key, o.kind) for o in self.outcomes]


@dataclass
class Desk:
    """One deliverer over partition ``TP`` (fenced for us for ever), its vendor and its work."""

    vendor: Vendor
    orders: Orders
    deliverer: Deliverer
    fence: Fence
    metrics: Metrics


def desk(
    max_in_flight: int = 2,
    settle: float = 2.0,
    linger: Behind | None = None,
    linger_seconds: float = 0.0,
    target: Target | None = None,
    pacer_type: type[Pacer] = Pacer,
    vendor: Vendor | None = None,
    audit: Audit | None = None,
) -> Desk:
    clock = LoopClock()
    fence = Fence(clock, lease_seconds=float("inf"), settle_seconds=settle)
    fence.assign(TP, 0.0)
    fence.renew(TP, float("inf"))
    pacer = pacer_type(100.0, clock, fence)
    pacer.set_layout({TP.topic: 1})
    vendor, orders, metrics = vendor or Vendor(), Orders(), Metrics()
    deliverer = Deliverer(
        vendor,
        orders,
        metrics,
        clock=clock,
        rng=Random(1),
        pacer=pacer,
        circuit=Circuit(window=10, min_calls=5, failure_ratio=0.5, probe_interval=1.0),
        policy=RetryPolicy(base_seconds=0.1, cap_seconds=0.5, max_attempts=3, rng=Random(2)),
        target=target,
        max_in_flight=max_in_flight,
        linger=linger,
        linger_seconds=linger_seconds,
        audit=audit,
    )
    orders.deliverer = deliverer
    return Desk(vendor, orders, deliverer, fence, metrics)


def sent_at(d: Desk) -> list[float]:
    """When each call of the vendor started, in seconds from the start."""
    return [t - START for t in d.vendor.called_at]


def on_virtual_time(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        runner.run(scenario())


async def until(condition: Callable[[], object], within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.01)


def test_a_job_sends_its_orders_newest_change_once_it_may_send() -> None:
    """Submitted with a hold of two seconds, A1's job sends when the hold is over: the changes handed
    to it meanwhile are one call, the newest; the older ones are never sent."""

    async def scenario() -> None:
        d = desk()
        async with d.deliverer:
            d.orders.add("A1", 0, "active", hold=2.0)
            await asyncio.sleep(1.0)
            d.orders.add("A1", 1, "archived")
            newest = d.orders.add("A1", 2, "cancelled")
            await until(lambda: d.orders.outcomes)
            assert sent_at(d) == [pytest.approx(2.0, abs=0.05)]
            assert d.vendor.applied == [newest]
            assert [c.record.offset for c in d.orders.replaced] == [0, 1]
            assert d.orders.kinds() == [("A1", OutcomeKind.DELIVERED)]

    on_virtual_time(scenario)


def test_a_newer_change_waits_while_a_call_of_its_order_is_in_flight() -> None:
    """The job does not take a change while it is sending: the call in flight ends with the change it
    sent (delivered), and the report's answer, the newest of those that came meanwhile, is sent next
    with a history of its own."""

    async def scenario() -> None:
        d = desk(max_in_flight=1)
        async with d.deliverer:
            d.vendor.gate.clear()
            first = d.orders.add("A1", 0, "active")
            await until(lambda: d.vendor.calls == 1)
            d.orders.add("A1", 1, "archived")
            assert d.deliverer.replace(d.orders.waiting["A1"]) is False, "in flight: it waits"
            d.orders.add("A1", 2, "cancelled")
            d.vendor.gate.set()
            await until(lambda: len(d.orders.outcomes) == 2)
            assert d.orders.outcomes[0].change is first
            assert d.vendor.sent() == [("A1", "active"), ("A1", "cancelled")]
            assert [c.record.offset for c in d.orders.replaced] == [1]
            assert [o.attempts for o in d.orders.outcomes] == [1, 1]

    on_virtual_time(scenario)


def test_a_call_starts_in_the_loop_step_its_tick_was_granted_in() -> None:
    """The worker runs the call itself: its first request is written before the event loop runs
    anything else, so the tick it was granted is as fresh as when the pacer woke (a task of its own
    would start on the loop's next iteration, after everything already queued: on a busy loop, later
    than a tick may be used). Each grant queues a callback marking its tick: none has run when the
    call that uses the tick starts."""
    ran_on: set[float] = set()  # ticks after whose grant the loop ran something else
    seen: list[bool] = []

    class Granting(Pacer):
        async def acquire(self) -> float:
            tick = await super().acquire()
            asyncio.get_running_loop().call_soon(ran_on.add, tick)
            return tick

    class Seeing(Vendor):
        async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
            tick = prepaid.take() if prepaid is not None else None
            seen.append(tick is not None and tick not in ran_on)
            await super().apply(change, prepaid)

    async def scenario() -> None:
        d = desk(pacer_type=Granting, vendor=Seeing())
        async with d.deliverer:
            for key in ("A1", "B1", "C1"):
                d.orders.add(key, 0)
            await until(lambda: len(d.orders.outcomes) == 3)
        assert seen == [True, True, True]

    on_virtual_time(scenario)


def test_a_key_without_a_job_takes_no_change() -> None:
    """Nothing to replace: the ledger keeps the change (and starts a job when it may)."""

    async def scenario() -> None:
        d = desk()
        async with d.deliverer:
            record = Record(TP.topic, TP.partition, 0, b"Z9", b"{}")
            assert not d.deliverer.replace(OrderChange(record, "Z9", "upsert", {"external_id": "Z9"}))
            assert d.deliverer.pending == 0

    on_virtual_time(scenario)


def test_a_change_that_does_not_fit_the_vendor_model_is_reported_never_sent() -> None:
    """Checked against the Loop model only once it may be sent: an order whose ``created_at`` is not a
    timestamp is reported ``INVALID`` (never sent, no attempt counted; the ledger dead-letters it),
    and its order's next change is delivered."""

    async def scenario() -> None:
        d = desk(max_in_flight=1, target=target("loop"))
        async with d.deliverer:
            d.orders.add("A1", 0).body["created_at"] = "yesterday"
            await until(lambda: d.orders.outcomes)
            [invalid] = d.orders.outcomes
            assert (invalid.kind, invalid.attempts) == (OutcomeKind.INVALID, 0)
            assert "invalid order" in str(invalid.error)
            assert d.vendor.calls == 0, "never sent"
            assert d.deliverer.pending == 0
            valid = d.orders.add("A1", 1)
            await until(lambda: len(d.orders.outcomes) == 2)
            assert d.orders.kinds()[-1] == ("A1", OutcomeKind.DELIVERED)
            assert d.vendor.applied == [valid]

    on_virtual_time(scenario)


@dataclass
class Made:
    """A pending body (``connector.structs.Pending``) that ``make`` makes; its digest is fixed."""

    make: Callable[[], dict[str, Any]]

    def __call__(self) -> dict[str, Any]:
        return self.make()

    def digest(self, body: dict[str, Any] | None) -> bytes:
        return b"made"


def test_a_change_whose_body_fails_to_map_is_reported_never_sent() -> None:
    """A mapping file's ``order`` is made just before the call (``change.pending``); when it fails, the
    change is reported ``INVALID`` with the MappingError (stage ``map``), and nothing is sent."""

    def fails() -> dict[str, Any]:
        raise MappingError("mapping m.toml: order = '...': failed", mapping="m.toml", path="order")

    async def scenario() -> None:
        d = desk()
        async with d.deliverer:
            d.orders.add("A1", 0).pending = Made(fails)
            await until(lambda: d.orders.outcomes)
            [outcome] = d.orders.outcomes
            assert (outcome.kind, type(outcome.error)) == (OutcomeKind.INVALID, MappingError)
            assert d.vendor.calls == 0
            made = d.orders.add("B1", 1)
            made.pending = Made(lambda: {"external_id": "B1", "status": "archived"})
            await until(lambda: len(d.orders.outcomes) == 2)
            assert d.vendor.sent() == [("B1", "archived")], "the body made just before the call is sent"

    on_virtual_time(scenario)


def test_a_job_goes_on_while_its_order_has_more_to_send_then_ends() -> None:
    async def scenario() -> None:
        d = desk(max_in_flight=1)
        async with d.deliverer:
            d.vendor.gate.clear()
            d.orders.add("A1", 0, "active")
            await until(lambda: d.vendor.calls == 1)
            d.orders.add("A1", 1, "archived")
            d.vendor.gate.set()
            await until(lambda: len(d.orders.outcomes) == 2)
            assert d.vendor.sent() == [("A1", "active"), ("A1", "archived")]
            assert d.deliverer.pending == 0
            await asyncio.sleep(1.0)
            assert d.vendor.calls == 2, "its job ended: no call more"

    on_virtual_time(scenario)


def test_after_an_ambiguous_failure_its_order_waits_settle_seconds_and_the_fence_knows() -> None:
    """A timeout: the request may still land. Its order is sent again only ``settle_seconds`` (2 s)
    later, and the partition's commits announce that late writes may land until then."""

    async def scenario() -> None:
        d = desk(settle=2.0)
        async with d.deliverer:
            d.vendor.refuse["A1"] = SinkTimeout("no answer in time")
            d.orders.add("A1", 0)
            await until(lambda: d.vendor.calls == 1)
            first = sent_at(d)[0]
            assert d.fence.settle_by(TP, None) >= START + first + 2.0
            del d.vendor.refuse["A1"]
            await until(lambda: d.orders.outcomes)
            assert d.vendor.calls == 2
            [outcome] = d.orders.outcomes
            assert (outcome.kind, outcome.attempts) == (OutcomeKind.DELIVERED, 2)
            assert sent_at(d)[1] >= first + 2.0

    on_virtual_time(scenario)


def test_a_refused_change_is_reported_at_once_and_a_failing_one_after_max_attempts() -> None:
    """A 422 is the event's fault: failed for good, one attempt. A 500 may pass later: retried, then
    failed after ``max_attempts`` (3), its error and attempts in the outcome."""

    async def scenario() -> None:
        d = desk()
        async with d.deliverer:
            d.vendor.refuse = {"A1": RejectedError("422", status=422), "B1": ServerError("500", status=500)}
            d.orders.add("A1", 0)
            d.orders.add("B1", 1)
            await until(lambda: len(d.orders.outcomes) == 2)
            by_key = {o.key: o for o in d.orders.outcomes}
            assert (by_key["A1"].kind, by_key["A1"].attempts) == (OutcomeKind.FAILED, 1)
            assert (by_key["B1"].kind, by_key["B1"].attempts) == (OutcomeKind.FAILED, 3)
            assert isinstance(by_key["B1"].error, ServerError)
            assert by_key["B1"].ambiguous, "a 500 may have been applied"
            assert d.metrics.registry.get_sample_value("connector_api_retries_total") == 2

    on_virtual_time(scenario)


def test_a_drain_abandons_what_waits_and_cancels_what_is_in_flight_after_its_timeout() -> None:
    """Revoked: the queued job is abandoned at once; the call in flight gets the timeout (1 s), then
    is cancelled and abandoned too, and counts as ambiguous for the fence. A job submitted while the
    partition is drained is abandoned; once it is owned again, jobs are taken."""

    async def scenario() -> None:
        d = desk(max_in_flight=1, settle=2.0)
        loop = asyncio.get_running_loop()
        async with d.deliverer:
            d.vendor.hang.add("A1")
            d.orders.add("A1", 0)
            d.orders.add("B1", 1)
            await until(lambda: d.vendor.calls == 1)
            started = loop.time()
            await d.deliverer.drain({TP}, timeout=1.0)
            assert loop.time() - started == pytest.approx(1.0, abs=0.05)
            assert sorted(d.orders.kinds()) == [("A1", OutcomeKind.ABANDONED), ("B1", OutcomeKind.ABANDONED)]
            assert d.fence.settle_by(TP, None) >= started + 1.0 + 2.0
            assert d.deliverer.pending == 0
            d.orders.add("B1", 2)
            assert d.orders.kinds()[-1] == ("B1", OutcomeKind.ABANDONED)
            d.deliverer.undrain({TP})
            d.orders.add("B1", 3)
            await until(lambda: d.orders.kinds()[-1] == ("B1", OutcomeKind.DELIVERED))
            assert d.vendor.sent() == [("B1", "active")]

    on_virtual_time(scenario)


def test_a_job_lingers_while_its_partition_is_far_behind_its_log_end() -> None:
    """Newer events of its order are likely yet to be read: the first attempt waits up to
    ``linger_seconds`` (3 s) while the partition is behind, not at all once it has caught up."""

    async def scenario() -> None:
        behind = Behind(True)
        d = desk(linger=behind, linger_seconds=3.0)
        async with d.deliverer:
            d.orders.add("A1", 0)
            await until(lambda: d.orders.outcomes)
            assert sent_at(d)[0] == pytest.approx(3.0, abs=0.15)
            behind.now = False
            d.orders.add("B1", 1)
            await until(lambda: len(d.orders.outcomes) == 2)
            assert sent_at(d)[1] - sent_at(d)[0] < 0.1

    on_virtual_time(scenario)


def test_closing_the_deliverer_abandons_every_job_it_holds() -> None:
    async def scenario() -> None:
        d = desk(max_in_flight=1)
        async with d.deliverer:
            d.vendor.hang.add("A1")
            d.orders.add("A1", 0)
            d.orders.add("B1", 1)
            await until(lambda: d.vendor.calls == 1)
        assert sorted(d.orders.kinds()) == [("A1", OutcomeKind.ABANDONED), ("B1", OutcomeKind.ABANDONED)]
        assert d.deliverer.pending == 0

    on_virtual_time(scenario)


# -- the repair lane (read-back audits) ------------------------------------------------------------


def change_of(key: str, offset: int, status: str) -> OrderChange:
    record = Record(TP.topic, TP.partition, offset, key.encode(), b"{}")
    return OrderChange(record, key, "upsert", {"external_id": key, "status": status})


def test_a_delivery_is_told_to_the_audit_and_a_repair_is_reported_to_it_not_the_work_source() -> None:
    """The live lane's deliveries go to the audit (with whether an attempt was ambiguous first); a
    repair is sent like any change, and its end is the audit's to know: the ledger never hears of it
    (its record was resolved when it was first delivered)."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            sent = d.orders.add("A1", 0, "active")
            await until(lambda: d.orders.outcomes)
            assert [(c.key, ambiguous) for c, ambiguous in audit.delivered_changes] == [("A1", False)]
            assert d.deliverer.repair(sent, asyncio.get_running_loop().time())
            await until(lambda: audit.repairs)
            assert [o.kind for o in audit.repairs] == [OutcomeKind.DELIVERED]
            assert d.vendor.applied == [sent, sent]
            assert d.orders.kinds() == [("A1", OutcomeKind.DELIVERED)]
            assert len(audit.delivered_changes) == 1, "a repair is not a live delivery"

    on_virtual_time(scenario)


def test_a_repair_is_refused_while_its_key_has_a_job() -> None:
    """A key with a live job is on its way to its newest state: no repair is started beside it."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        d.vendor.gate.clear()
        async with d.deliverer:
            first = d.orders.add("A1", 0, "active")
            await asyncio.sleep(0.1)
            assert not d.deliverer.repair(first, asyncio.get_running_loop().time())
            d.vendor.gate.set()
            await until(lambda: d.orders.outcomes)
            assert d.vendor.applied == [first]

    on_virtual_time(scenario)


def test_a_live_change_takes_a_waiting_repair_over() -> None:
    """A repair not sent yet (behind live traffic that takes every tick) is taken over by a live
    change of its key: the live change is sent, the repair never is, and is told abandoned."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit, max_in_flight=1)
        async with d.deliverer:
            old = change_of("A1", 0, "active")
            for i in range(30):  # live traffic of other orders keeps every tick taken
                d.orders.add(f"B{i}", 100 + i, "active")
            assert d.deliverer.repair(old, asyncio.get_running_loop().time())
            newer = d.orders.add("A1", 1, "archived")
            await until(lambda: ("A1", OutcomeKind.DELIVERED) in d.orders.kinds())
            assert [c for c in d.vendor.applied if c.key == "A1"] == [newer]
            assert [o.kind for o in audit.repairs] == [OutcomeKind.ABANDONED]

    on_virtual_time(scenario)


def test_a_live_change_waits_for_the_repair_in_flight_then_is_sent() -> None:
    """A live change of a key whose repair is in flight follows it (one job per key): the vendor gets
    the repair, then the live change, never the other way round; newer live changes replace the one
    waiting."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            old = change_of("A1", 0, "active")
            d.vendor.gate.clear()
            assert d.deliverer.repair(old, asyncio.get_running_loop().time())
            await until(lambda: d.vendor.calls == 1)
            d.orders.add("A1", 1, "archived")
            newest = d.orders.add("A1", 2, "cancelled")
            d.vendor.gate.set()
            await until(lambda: d.orders.outcomes)
            assert d.vendor.applied == [old, newest]
            assert [o.kind for o in audit.repairs] == [OutcomeKind.DELIVERED]
            assert d.orders.kinds() == [("A1", OutcomeKind.DELIVERED)]
            assert [c.record.offset for c in d.orders.replaced] == [1]

    on_virtual_time(scenario)


def test_a_drain_abandons_a_repair_and_the_live_change_following_it_and_the_audit_forgets() -> None:
    """On revoke, the repair is told abandoned, the live change that was to follow it is reported
    abandoned (unresolved: the next owner reads it again), the audit forgets the partition, and the
    shop is idle again (it once counted the abandoned follower as live work for good, and its audits
    stopped until a restart)."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            d.vendor.gate.clear()
            assert d.deliverer.repair(change_of("A1", 0, "active"), asyncio.get_running_loop().time())
            await until(lambda: d.vendor.calls == 1)
            d.orders.add("A1", 1, "archived")
            await d.deliverer.drain({TP}, timeout=0.5)
            assert [o.kind for o in audit.repairs] == [OutcomeKind.ABANDONED]
            assert d.orders.kinds() == [("A1", OutcomeKind.ABANDONED)]
            assert audit.forgotten == [{TP}]
            assert not d.deliverer.repair(change_of("A1", 0, "active"), asyncio.get_running_loop().time()), (
                "draining: no repair"
            )
            assert d.deliverer.idle.is_set(), "nothing live in hand: the audits may go on"

    on_virtual_time(scenario)


def test_an_audits_read_is_sent_on_its_tick_and_told_to_the_audit_once_its_job_is_gone() -> None:
    """A read goes out on the spare tick the audit took (fresh), through the order's one job; when it
    is told, the order has no job any more, so a repair can start at once."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            sent = d.orders.add("A1", 0, "active")
            await until(lambda: d.orders.outcomes)
            assert d.deliverer.read(sent, asyncio.get_running_loop().time())  # a tick due now
            await until(lambda: audit.reads)
            ended = audit.reads[0]
            assert ended.sent
            assert ended.held is not None
            assert ended.held.found
            assert d.vendor.reads == ["A1"]
            assert d.deliverer.pending == 0
            assert d.deliverer.repair(sent, asyncio.get_running_loop().time())

    on_virtual_time(scenario)


def test_a_read_whose_tick_went_stale_is_not_sent() -> None:
    """A read waiting behind live jobs for a worker until its tick is stale is given up, never sent
    on a tick of the live traffic's."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            assert d.deliverer.read(change_of("A1", 0, "active"), asyncio.get_running_loop().time() - 1.0)
            await until(lambda: audit.reads)
            assert not audit.reads[0].sent
            assert d.vendor.reads == []

    on_virtual_time(scenario)


def test_a_live_change_follows_a_read_in_flight_never_beside_it() -> None:
    """One request per order at a time: a live change of an order being read waits for the read to
    end, then is sent; the read is told, and the order's live change is delivered as usual."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            d.vendor.gate.clear()
            tick = asyncio.get_running_loop().time()
            assert d.deliverer.read(change_of("A1", 0, "active"), tick)
            await until(lambda: d.vendor.reads)
            newer = d.orders.add("A1", 1, "archived")
            await asyncio.sleep(0.5)
            assert d.vendor.calls == 0, "not sent while the read is at the vendor"
            d.vendor.gate.set()
            await until(lambda: d.orders.outcomes)
            assert d.vendor.applied == [newer]
            assert [r.sent for r in audit.reads] == [True]
            assert d.orders.kinds() == [("A1", OutcomeKind.DELIVERED)]

    on_virtual_time(scenario)


def test_a_live_change_handed_over_makes_the_audit_unsure_of_its_order_until_delivered() -> None:
    """Found by the simulation (many-shop seed 170 with the audits on): an order whose live change
    was abandoned after an attempt timed out was repaired with its older state, over the delete that
    landed late. Now the audit drops an order as soon as a live change of it is handed over."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        d.vendor.refuse["A1"] = RejectedError("422", status=422)
        async with d.deliverer:
            d.orders.add("A1", 0, "active")
            await until(lambda: d.orders.outcomes)
            assert audit.unsure_keys == ["A1"]
            assert audit.delivered_changes == []

    on_virtual_time(scenario)


def test_a_repair_that_ended_unknown_holds_its_order_settle_seconds() -> None:
    """Found by review: a repair whose only attempt timed out ended, and a live change of its order
    was sent at once, while the repair's write could still land. Now the repair's job holds the order
    until settle_seconds after it (the ledger never heard of the repair, so only the job can)."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit, settle=2.0)
        async with d.deliverer:
            d.vendor.refuse["A1"] = SinkTimeout("no answer in time")
            assert d.deliverer.repair(change_of("A1", 0, "active"), asyncio.get_running_loop().time())
            await until(lambda: audit.repairs)
            assert [o.kind for o in audit.repairs] == [OutcomeKind.FAILED], "once: never retried"
            del d.vendor.refuse["A1"]
            d.orders.add("A1", 1, "archived")
            await until(lambda: d.orders.outcomes)
            first, second = sent_at(d)
            assert second - first >= 2.0

    on_virtual_time(scenario)


def test_a_repair_whose_tick_went_stale_is_given_up_never_sent_on_a_live_tick() -> None:
    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            stale = asyncio.get_running_loop().time() - 1.0
            assert d.deliverer.repair(change_of("A1", 0, "active"), stale)
            await until(lambda: audit.repairs)
            assert [o.kind for o in audit.repairs] == [OutcomeKind.ABANDONED]
            assert d.vendor.calls == 0
            assert d.deliverer.pending == 0

    on_virtual_time(scenario)


def test_idle_is_clear_while_a_live_change_is_in_hand_and_not_for_an_audits_read() -> None:
    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            assert d.deliverer.idle.is_set()
            d.vendor.gate.clear()
            d.orders.add("A1", 0, "active")
            assert not d.deliverer.idle.is_set()
            d.vendor.gate.set()
            await until(lambda: d.orders.outcomes)
            assert d.deliverer.idle.is_set()
            d.vendor.gate.clear()
            assert d.deliverer.read(change_of("B1", 0, "active"), asyncio.get_running_loop().time())
            await until(lambda: d.vendor.reads)
            assert d.deliverer.idle.is_set(), "an audit's read is not live work"
            d.orders.add("B1", 1, "archived")  # follows the read in flight, then is live work
            d.vendor.gate.set()
            await until(lambda: ("B1", OutcomeKind.DELIVERED) in d.orders.kinds())
            assert d.deliverer.idle.is_set()

    on_virtual_time(scenario)


def test_a_repair_without_a_tick_waits_for_one_as_live_work_does() -> None:
    """A resync's floor: the repair's job takes its own tick through the gate, and is sent."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            assert d.deliverer.repair(change_of("A1", 0, "active"), None)
            await until(lambda: audit.repairs)
            assert [o.kind for o in audit.repairs] == [OutcomeKind.DELIVERED]
            assert d.vendor.calls == 1

    on_virtual_time(scenario)


def test_a_live_change_taking_over_a_repair_waiting_at_the_gate_is_sent_as_live_work() -> None:
    """A resync's resend waits at the gate for its tick; a live change of its order comes meanwhile,
    held a while (a replay): the live change is sent once its hold is over, the resend never is (it
    was given up as a repair, and the live change with it, for good: many-shop seed 15)."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        async with d.deliverer:
            assert d.deliverer.repair(change_of("A1", 0, "active"), None)
            for _ in range(3):
                await asyncio.sleep(0)  # a worker took it: it waits at the gate for a tick
            newer = d.orders.add("A1", 1, "archived", hold=2.0)
            await until(lambda: d.orders.outcomes)
            assert d.orders.kinds() == [("A1", OutcomeKind.DELIVERED)]
            assert d.vendor.applied == [newer]
            assert [o.kind for o in audit.repairs] == [OutcomeKind.ABANDONED]

    on_virtual_time(scenario)


def test_after_a_403_with_no_live_traffic_an_audits_read_tick_carries_the_read_probe() -> None:
    """A repair refused with 403 opens the circuit (is it the key, or the operation?); with no live
    traffic only an audit's read comes: its tick carries the outages' read probe, the circuit closes
    (the key can read), and the audit's read is told not sent, to be read again. Before, nothing ever
    probed it, and the audits stayed idle for good (seed 175 with audits and a resync)."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        d.vendor.refuse["A1"] = AuthError("403: This action is unauthorized.", status=403)
        async with d.deliverer:
            assert d.deliverer.repair(change_of("A1", 0, "active"), asyncio.get_running_loop().time())
            await until(lambda: audit.repairs)
            assert d.deliverer.circuit.state is State.OPEN
            await asyncio.sleep(1.5)  # the probe interval is over
            assert d.deliverer.read(change_of("B1", 0, "active"), asyncio.get_running_loop().time())
            await until(lambda: audit.reads)
            assert d.deliverer.circuit.state is State.CLOSED
            assert not audit.reads[0].sent
            assert d.vendor.reads == []

    on_virtual_time(scenario)


def test_a_live_change_during_that_read_probe_follows_it_and_is_sent() -> None:
    """The read probe is on the wire for the audit's read job: a live change of the order that comes
    meanwhile follows it (one job per order), and is sent once the circuit closed. Before, it took
    the job over as if nothing were in flight, and the job ended with the probe: the change was never
    sent nor reported, and its partition's commit stuck there (found by review)."""

    async def scenario() -> None:
        audit = Audit()
        d = desk(audit=audit)
        d.vendor.probe_seconds = 0.2
        d.vendor.refuse["A1"] = AuthError("403: This action is unauthorized.", status=403)
        async with d.deliverer:
            assert d.deliverer.repair(change_of("A1", 0, "active"), asyncio.get_running_loop().time())
            await until(lambda: audit.repairs)
            await asyncio.sleep(1.5)  # the probe interval is over
            assert d.deliverer.read(change_of("B1", 0, "active"), asyncio.get_running_loop().time())
            await asyncio.sleep(0.05)  # its tick carries the read probe, on the wire
            live = d.orders.add("B1", 1, "archived")
            await until(lambda: d.orders.outcomes)
            assert d.orders.kinds() == [("B1", OutcomeKind.DELIVERED)]
            assert d.vendor.applied == [live]
            assert [r.sent for r in audit.reads] == [False], "told once, not sent"

    on_virtual_time(scenario)
