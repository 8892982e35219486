"""The outage circuit: opens on mostly-failing calls or any 401/403, probes, closes on success."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.circuit import Circuit, State
from connector.errors import AuthError, RateLimited, RejectedError, ServerError

FAIL, OK = ServerError("503", status=503), None


def test_opens_when_most_recent_calls_fail_retryably() -> None:
    """6 of 10 calls failing with 5xx opens the circuit."""
    c = Circuit(window=10, min_calls=10, failure_ratio=0.5)
    for e in [FAIL] * 6 + [OK] * 3:
        c.record(e, 0.0)
    assert not c.is_open, "fewer than min_calls seen"
    assert c.record(OK, 0.0) is State.OPEN


def test_stays_closed_below_the_ratio() -> None:
    """30% failures never open it."""
    c = Circuit(window=10, min_calls=10, failure_ratio=0.5)
    for e in [FAIL, OK, OK] * 10:
        c.record(e, 0.0)
    assert not c.is_open


def test_permanent_rejections_do_not_count_as_outage() -> None:
    """422s are the events' fault, not an outage."""
    c = Circuit(window=10, min_calls=10)
    for _ in range(20):
        c.record(RejectedError("422", status=422), 0.0)
    assert not c.is_open


def test_429s_never_count_toward_the_failure_ratio() -> None:
    """Found on the real broker (issue 20): another client on the key drew 429s that opened the
    circuit. A 429 is a pacing signal: fifty in a row leave it closed, and mixed with 5xx they do not
    count either way (4 failures among 10 other calls stay below the ratio)."""
    c = Circuit(window=10, min_calls=5, failure_ratio=0.5)
    for _ in range(50):
        assert c.record(RateLimited("429"), 0.0) is None
    assert not c.is_open
    for e in [FAIL, RateLimited("429"), OK, RateLimited("429")] * 4 + [OK, OK]:
        c.record(e, 0.0)
    assert not c.is_open
    assert any(c.record(FAIL, 0.0) is State.OPEN for _ in range(6)), "5xx still count"


def test_a_probe_answered_429_closes_the_circuit() -> None:
    """The API answered (it is up, only busy): the probe closes an outage opened by 5xx."""
    c = Circuit(window=10, min_calls=5, probe_interval=1.0)
    for _ in range(5):
        c.record(FAIL, 0.0)
    assert c.is_open
    assert c.may_call(1.0)
    assert c.record(RateLimited("429"), 1.1) is State.CLOSED


def test_a_read_probe_answered_429_after_a_403_keeps_it_open() -> None:
    """After a 403 the probe asks whether the key can read at all: a 429 does not say, so the circuit
    stays open and probes again after the interval."""
    c = Circuit(probe_interval=1.0)
    c.record(AuthError("403", status=403), 0.0)
    assert c.may_call(1.0)
    assert c.record(RateLimited("429"), 1.1) is None
    assert c.is_open
    assert c.forbidden
    assert not c.may_call(1.5)
    assert c.may_call(2.2)


def test_auth_failure_opens_at_once() -> None:
    """One 401 stops sending."""
    c = Circuit()
    assert c.record(AuthError("401 Unauthorized.", status=401), 0.0) is State.OPEN
    assert "Unauthorized" in c.reason


def test_open_circuit_lets_one_probe_through_per_interval() -> None:
    """While open: no call until the probe interval; then exactly one; a success closes it."""
    c = Circuit(probe_interval=5.0)
    c.record(AuthError("401", status=401), 100.0)
    assert not c.may_call(101.0)
    assert c.may_call(105.0)
    assert not c.may_call(105.0), "one probe at a time"
    assert c.record(AuthError("401", status=401), 105.5) is None
    assert not c.may_call(106.0)
    assert c.may_call(110.6)
    assert c.record(OK, 110.7) is State.CLOSED
    assert c.may_call(110.8)


def test_released_probe_frees_the_slot() -> None:
    """A probe whose job was dropped does not block the next probe."""
    c = Circuit(probe_interval=1.0)
    c.record(AuthError("401", status=401), 0.0)
    assert c.may_call(1.0)
    assert not c.may_call(1.0)  # half open: one probe at a time
    c.release(1.0)
    assert c.may_call(1.0)


@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_never_opens_on_success_only_windows(outcomes: list[bool]) -> None:
    """Whatever came before, a full window of successes leaves it closed (or closes it via probe)."""
    c = Circuit(window=10, min_calls=5, probe_interval=0.0)
    for failed in outcomes:
        if c.may_call(0.0):
            c.record(FAIL if failed else OK, 0.0)
    for _ in range(10):
        if c.may_call(0.0):
            c.record(OK, 0.0)
    assert not c.is_open
