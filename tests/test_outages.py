"""What a deliverer does with its outage circuit: the changes announced, a 403 about one operation told
from a key that lost its scopes, a long Retry-After as an outage, and the read probe after a 403."""

from __future__ import annotations

import asyncio

import pytest

from connector import errors
from connector.circuit import Circuit, State
from connector.metrics import Metrics
from connector.outages import Outages
from connector.sinks import Prepaid


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now


class Sink:
    """A vendor whose reads fail with ``read_error`` (None: they succeed) (``connector.outages.Prober``)."""

    def __init__(self) -> None:
        self.read_error: BaseException | None = None
        self.reads: list[Prepaid | None] = []

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        self.reads.append(prepaid)
        if self.read_error is not None:
            raise self.read_error


class Attempt:
    forbidden_at = -1


def forbidden() -> errors.AuthError:
    return errors.AuthError("403 Forbidden", status=403, body="missing scope")


Parts = tuple[Outages, list[tuple[str, State]], Clock, Sink, Metrics]


@pytest.fixture
def parts() -> Parts:
    changes: list[tuple[str, State]] = []
    clock, sink, metrics = Clock(), Sink(), Metrics()
    circuit = Circuit(window=4, min_calls=2, failure_ratio=0.5, probe_interval=5.0)
    outages = Outages(
        circuit,
        sink,
        metrics,
        clock,
        max_retry_after=60.0,
        tenant="acme",
        on_change=lambda tenant, state: changes.append((tenant, state)),
    )
    return outages, changes, clock, sink, metrics


def test_a_403_opens_the_circuit_and_a_success_closes_it(parts: Parts) -> None:
    outages, changes, clock, _, _ = parts
    outages.record(forbidden())
    assert changes == [("acme", State.OPEN)]
    assert outages.circuit.forbidden
    clock.now += 5.0
    assert outages.circuit.may_call(clock.now)  # the probe
    outages.record(None)
    assert changes == [("acme", State.OPEN), ("acme", State.CLOSED)]


def test_a_403_again_after_the_circuit_closed_is_about_the_operation(
    parts: Parts,
) -> None:
    outages, _, clock, _, _ = parts
    job = Attempt()
    first = forbidden()
    assert outages.per_operation(job, "upsert", first) is first, "the first 403 may be the key: an outage"
    outages.record(first)
    clock.now += 5.0
    outages.circuit.may_call(clock.now)
    outages.record(None)  # another call (or a read) succeeded: the key works
    again = outages.per_operation(job, "upsert", forbidden())
    assert isinstance(again, errors.Forbidden), "the same job's 403 again is about its operation"
    other = outages.per_operation(Attempt(), "upsert", forbidden())
    assert isinstance(other, errors.Forbidden), "and so is any 403 for that kind of operation"
    assert not isinstance(outages.per_operation(Attempt(), "delete", forbidden()), errors.Forbidden)
    assert outages.per_operation(Attempt(), "upsert", None) is None  # an upsert went through
    fresh = forbidden()
    assert outages.per_operation(Attempt(), "upsert", fresh) is fresh, "forgotten once one succeeds"


def test_other_errors_pass_through_unchanged(parts: Parts) -> None:
    outages, _, _, _, _ = parts
    error = errors.ServerError("502", status=502)
    assert outages.per_operation(Attempt(), "upsert", error) is error


def test_a_retry_after_beyond_the_ceiling_trips_the_circuit(
    parts: Parts,
) -> None:
    outages, changes, _, _, metrics = parts
    short = errors.RateLimited("429", retry_after=3.0)
    assert not outages.trip_on_long_wait(short)
    outages.record(short)  # a 429 is never an outage
    assert changes == []
    assert not outages.circuit.is_open
    long = errors.RateLimited("429", retry_after=3600.0)
    assert outages.beyond_ceiling(long)
    assert outages.trip_on_long_wait(long)
    assert changes == [("acme", State.OPEN)]
    assert "3600s (Retry-After)" in outages.circuit.reason
    assert metrics.registry.get_sample_value("connector_retry_after_exceeded_total") == 1
    outages.record(long)  # not counted again: the trip was the outage
    assert changes == [("acme", State.OPEN)]


def test_the_read_probe_closes_the_circuit_when_the_key_can_read(
    parts: Parts,
) -> None:
    outages, changes, clock, sink, _ = parts
    outages.record(forbidden())
    clock.now += 5.0
    outages.circuit.may_call(clock.now)
    sink.read_error = forbidden()
    assert asyncio.run(outages.read_probe(7.0)) is sink.read_error
    assert outages.circuit.state is State.OPEN, "the key itself is refused: still an outage"
    clock.now += 5.0
    outages.circuit.may_call(clock.now)
    sink.read_error = None
    assert asyncio.run(outages.read_probe(None)) is None
    assert [s for _, s in changes] == [State.OPEN, State.CLOSED]
    assert [p.take() if p else None for p in sink.reads] == [7.0, None]


def test_without_a_callback_the_change_is_the_metric() -> None:
    metrics, clock = Metrics(), Clock()
    outages = Outages(Circuit(probe_interval=1.0), Sink(), metrics, clock)
    outages.record(forbidden())
    assert metrics.registry.get_sample_value("connector_circuit_open") == 1
    clock.now += 1.0
    outages.circuit.may_call(clock.now)
    outages.record(None)
    assert metrics.registry.get_sample_value("connector_circuit_open") == 0
