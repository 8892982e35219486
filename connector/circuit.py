"""The outage circuit: tells an outage (stop sending, wait, probe) from a poison event (dead-letter it).

::

    CLOSED ──(most recent calls failed retryably, or 401/403, or a wrong endpoint)──▶ OPEN
    OPEN ──(probe interval passed; one call let through)──▶ HALF_OPEN
    HALF_OPEN ──(the vendor answered anything but an outage)──▶ CLOSED
    HALF_OPEN ──(outage again, or the probe was not sent)──▶ OPEN

A 429 is a pacing signal (:mod:`connector.adapt`), never an outage: it is not counted, and a probe
answered 429 shows the API up (it closes the circuit), unless the circuit opened on a 403 and the
question is whether the key can read at all. A ``Retry-After`` longer than the connector waits in
place opens it through :meth:`Circuit.trip`, not here. While the circuit is not closed, failures never
count against an event's attempts: events caught in an outage wait, they are not dead-lettered. A
probe is any call that is due; while events are unresolved there is always one, so the circuit cannot
stay open without probing. Pure (the caller supplies the clock), so the policy is unit-tested without
I/O.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from connector.errors import AuthError, ConnectorError, EndpointError, RateLimited


class State(StrEnum):
    """Circuit state, as exported by the ``connector_circuit_state`` metric."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_outage(error: BaseException | None) -> bool:
    """Whether ``error`` says the API as a whole is unusable now, whatever the event."""
    return isinstance(error, AuthError | EndpointError)


class Circuit:
    """Sliding window of recent call outcomes, and the open/probe decision."""

    def __init__(
        self, window: int = 20, min_calls: int = 10, failure_ratio: float = 0.5, probe_interval: float = 5.0
    ) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._min_calls = min_calls
        self._ratio = failure_ratio
        self.probe_interval = probe_interval
        self.state = State.CLOSED
        self.reason = ""
        self.closures = 0  # how many times it closed: tells a per-event 403 from a revoked key
        self.forbidden = False  # opened by a 403: probe with a read (is it the key, or the operation?)
        self._next_probe = 0.0
        self.opened_at: float | None = None  # when it last opened (monotonic); None while closed

    @property
    def is_open(self) -> bool:
        """True while the API is considered down (open or probing)."""
        return self.state is not State.CLOSED

    def record(self, error: BaseException | None, now: float) -> State | None:
        """Note a call's outcome; returns the new state when it changed."""
        if isinstance(error, RateLimited):
            if self.state is State.CLOSED:
                return None  # not counted, either way
            if self.forbidden:  # a read probe answered 429: whether the key can read is not known yet
                self.state, self._next_probe = State.OPEN, now + self.probe_interval
                return None
            error = None  # the vendor answered: the API is up
        failed = is_outage(error) or (isinstance(error, ConnectorError) and error.retryable)
        if self.state is not State.CLOSED:
            if failed:
                self.state = State.OPEN
                self._next_probe = now + self.probe_interval
                if is_outage(error):
                    self.reason = str(error)
                    self.forbidden = getattr(error, "status", None) == 403
                return None
            self.state, self.reason, self.forbidden = State.CLOSED, "", False
            self.opened_at = None
            self.closures += 1
            self._outcomes.clear()
            return State.CLOSED
        if is_outage(error):
            self.forbidden = getattr(error, "status", None) == 403
            return self._open(str(error), now)
        self._outcomes.append(failed)
        failures = sum(self._outcomes)
        if len(self._outcomes) >= self._min_calls and failures / len(self._outcomes) > self._ratio:
            return self._open(
                f"{failures} of the last {len(self._outcomes)} calls failed; last: {error}", now
            )
        return None

    def trip(self, reason: str, now: float) -> State | None:
        """Open at once (the vendor asked for a pause longer than we wait in place)."""
        if self.state is State.OPEN:
            self._next_probe = max(self._next_probe, now + self.probe_interval)
            return None
        return self._open(reason, now)

    def _open(self, reason: str, now: float) -> State:
        self.state, self.reason, self.opened_at = State.OPEN, reason, now
        self._next_probe = now + self.probe_interval
        return State.OPEN

    def may_call(self, now: float) -> bool:
        """Whether a call may start now: always when closed; one probe per interval otherwise."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and now >= self._next_probe:
            self.state = State.HALF_OPEN
            return True
        return False

    def release(self, now: float) -> None:
        """A probe that was let through was not sent after all: another call may probe at once."""
        if self.state is State.HALF_OPEN:
            self.state = State.OPEN
            self._next_probe = now

    def wait_hint(self, now: float) -> float:
        """Seconds until a call might be allowed (0 when closed)."""
        if self.state is State.CLOSED:
            return 0.0
        if self.state is State.HALF_OPEN:
            return 0.05
        return max(0.05, self._next_probe - now)
