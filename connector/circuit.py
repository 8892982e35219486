"""The outage circuit: tells an outage (stop sending, wait, probe) from a poison event (dead-letter it).

Closed: calls flow. It opens when most of the recent calls failed with retryable errors (5xx, 429,
timeouts, connection errors), or at once on any 401/403. While open, one call at a time is let through
as a probe every ``probe_interval`` seconds; the first success closes it. Failures seen while open never
count against an event's attempts: events caught in an outage wait, they are not dead-lettered.
Pure (the caller supplies the clock), so the policy is unit-tested without I/O.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from connector.errors import AuthError, ConnectorError


class State(StrEnum):
    """Circuit state, as exported by the ``connector_circuit_state`` metric (closed=0, open=1)."""

    CLOSED = "closed"
    OPEN = "open"


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
        self._next_probe = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True while the API is considered down."""
        return self.state is State.OPEN

    def record(self, error: BaseException | None, now: float) -> State | None:
        """Note a call's outcome; returns the new state when it changed."""
        if self.state is State.OPEN:
            self._probing = False
            if error is None:
                self.state, self.reason = State.CLOSED, ""
                self._outcomes.clear()
                return State.CLOSED
            self._next_probe = now + self.probe_interval
            if isinstance(error, AuthError):
                self.reason = str(error)
            return None
        if error is not None and isinstance(error, AuthError):
            return self._open(str(error), now)
        retryable = isinstance(error, ConnectorError) and error.retryable
        self._outcomes.append(retryable)
        failures = sum(self._outcomes)
        if len(self._outcomes) >= self._min_calls and failures / len(self._outcomes) > self._ratio:
            return self._open(
                f"{failures} of the last {len(self._outcomes)} calls failed; last: {error}", now
            )
        return None

    def _open(self, reason: str, now: float) -> State:
        self.state, self.reason = State.OPEN, reason
        self._next_probe = now + self.probe_interval
        self._probing = False
        return State.OPEN

    def may_call(self, now: float) -> bool:
        """Whether a call may start now: always when closed; one probe per interval when open."""
        if self.state is State.CLOSED:
            return True
        if not self._probing and now >= self._next_probe:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """A probe that was let through was not sent after all (its job was dropped)."""
        self._probing = False

    def wait_hint(self, now: float) -> float:
        """Seconds until a call might be allowed (0 when closed)."""
        return 0.0 if self.state is State.CLOSED else max(0.05, self._next_probe - now)
