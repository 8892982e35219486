"""The deliverer with the real Loop client against a scripted vendor, on virtual time: a 429 is a pacing
signal, never an outage, and never the event's fault; a Retry-After longer than the connector waits
is an outage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

import httpx
import pytest

from connector import errors
from connector.circuit import Circuit, State
from connector.config import SinkSettings
from connector.deliver import Deliverer, Outcome, OutcomeKind, status_class
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.retry import RetryPolicy
from connector.structs import OrderChange, Record
from connector.vendors import make_sink
from tests.sim.loop import VirtualTimeLoop

START = 1_800_000_000.0


class Clock:
    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return asyncio.get_running_loop().time()


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

        clock = Clock()
        pacer = Pacer.standalone(5.0, clock)
        settings = SinkSettings(base_url="http://vendor", api_key="k", rate_limit_per_second=5.0)
        pending = {
            f"o{i}": OrderChange(Record("", 0, i, b"o", b"{}"), f"o{i}", "upsert", {"external_id": f"o{i}"})
            for i in range(orders)
        }

        class Work:
            """Each order's one change, until its delivery ends (``connector.deliver.WorkSource``)."""

            def claim(self, key: str) -> OrderChange | None:
                return pending.get(key)

            def report(self, outcome: Outcome) -> bool:
                run.outcomes.append(outcome)
                if outcome.kind is not OutcomeKind.ABANDONED:
                    pending.pop(outcome.key, None)
                return False

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
            max_in_flight=2,
            max_retry_after=max_retry_after,
            on_circuit=circuit_changed,
        )
        async with sink, deliverer:
            for key, change in list(pending.items()):
                deliverer.submit(key, change.tp)
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


class SinkTimeout(Exception):
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
        (SinkTimeout("x"), "other"),
        (RuntimeError("x"), "other"),
    ],
)
def test_a_calls_label_is_read_from_its_class_not_its_name(error: BaseException | None, label: str) -> None:
    """``connector_api_requests_total{status_class}``: the error's class (or its status) decides,
    subclasses included; an unrelated class with the same name is ``other``."""
    assert status_class(error) == label
