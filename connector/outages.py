"""What a deliverer does with its outage :class:`~connector.circuit.Circuit`, besides asking it whether a
call may start: feeding it each call's outcome, announcing its changes, telling a 403 about one kind of
operation from a key that lost its scopes, and the read probe that asks which it is.

The circuit itself is pure policy (``connector/circuit.py``); this part is its I/O side, split out of
the deliverer so that the deliverer's workers read as the job's path (gate, check, call, outcome)
while the rules for outages sit in one place. One per deliverer, so one per shop: its state is the
kinds of operation found forbidden, and the circuit it owns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from connector.circuit import Circuit, State
from connector.clock import Clock
from connector.errors import AuthError, Forbidden, RateLimited, status_class
from connector.instruments import CallHooks, OpenCircuits, ProbeAnswered, RetryAfterTooLong
from connector.logs import get_logger
from connector.sinks import Prepaid

log = get_logger("connector.deliver")  # the deliverer's log lines, as they were before the split


class Attempt(Protocol):
    """What :meth:`Outages.per_operation` keeps on a job (``connector.jobs.Job``) across its attempts."""

    forbidden_at: int  # the circuit's closure count when this job last got a 403 (-1: never)


class Prober(Protocol):
    """What :meth:`Outages.read_probe` asks of the vendor client (``connector.sinks.Sink.probe``)."""

    async def probe(self, prepaid: Prepaid | None = None) -> None: ...


class Outages:
    """The circuit's outcomes in, its changes out (log lines, the shop's callback or the metric)."""

    def __init__(
        self,
        circuit: Circuit,
        sink: Prober,
        hooks: CallHooks,
        clock: Clock,
        *,
        max_retry_after: float = 60.0,
        tenant: str = "",
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.circuit = circuit
        self._sink = sink
        self._hooks = hooks
        self._clock = clock
        self._max_retry_after = max_retry_after
        self._tenant = tenant
        self._on_change = on_change
        self._forbidden_ops: set[str] = set()  # the kinds of operation a 403 is about (a missing scope)

    def record(self, error: BaseException | None) -> None:
        """Note a call's outcome (None: it succeeded) in the circuit, and announce a change."""
        if isinstance(error, RateLimited) and self.beyond_ceiling(error):
            return  # an outage, but :meth:`trip_on_long_wait` opens the circuit for it (trip)
        self._announce(self.circuit.record(error, self._clock.monotonic()))

    def beyond_ceiling(self, error: RateLimited) -> bool:
        """Whether the vendor asked for a longer wait than ``delivery.max_retry_after_seconds``."""
        return error.retry_after is not None and error.retry_after > self._max_retry_after

    def trip_on_long_wait(self, error: RateLimited) -> bool:
        """Open the circuit when the vendor's ``Retry-After`` is beyond the ceiling: True when it was
        (the member then does not wait it in place)."""
        if not self.beyond_ceiling(error):
            return False
        assert error.retry_after is not None
        self._hooks.retry_after_too_long(RetryAfterTooLong(self._tenant, error.retry_after))
        reason = (
            f"the vendor asked to wait {error.retry_after:.0f}s (Retry-After), more than "
            f"delivery.max_retry_after_seconds={self._max_retry_after:g}: treated as an outage"
        )
        self._announce(self.circuit.trip(reason, self._clock.monotonic()))
        return True

    def per_operation(self, job: Attempt, op: str, error: BaseException | None) -> BaseException | None:
        """A 403 opens the circuit (the key may have lost its scopes). If the circuit closed since
        (other calls or a read succeed) and this event gets 403 again, the 403 is about this operation
        (a missing scope): returned as :class:`~connector.errors.Forbidden`, and from then on so is a
        403 for the same kind of operation (``op``). Any other outcome is returned as it is."""
        if error is None:
            self._forbidden_ops.discard(op)
            return None
        if not isinstance(error, AuthError) or error.status != 403:
            return error
        if op in self._forbidden_ops or 0 <= job.forbidden_at < self.circuit.closures:
            self._forbidden_ops.add(op)
            return Forbidden(str(error), status=403, body=error.body)
        job.forbidden_at = self.circuit.closures
        return error

    async def read_probe(self, tick: float | None) -> BaseException | None:
        """The circuit opened on a 403: ask with a read whether the key works at all. If it does, the
        circuit closes, and a 403 a job then gets again is about its operation. Returns the read's
        error (None: it succeeded), already recorded and reported to the hooks."""
        probe = asyncio.get_running_loop().create_task(self._sink.probe(Prepaid(tick)))
        await asyncio.wait({probe})
        error = probe.exception() if not probe.cancelled() else None
        self.record(error)
        self._hooks.probe_answered(ProbeAnswered(self._tenant, status_class(error)))
        return error

    def _announce(self, changed: State | None) -> None:
        if changed is None or changed is State.HALF_OPEN:
            return
        tenant = {"tenant": self._tenant} if self._tenant else {}
        if changed is State.OPEN:
            log.error(
                "api_outage",
                reason=self.circuit.reason[:500],
                action="calls stopped; nothing is dead-lettered; one probe per interval",
                probe_interval_s=self.circuit.probe_interval,
                **tenant,
            )
        else:
            log.warning("api_recovered", action="calls resumed", **tenant)
        if self._on_change is not None:
            self._on_change(self._tenant, changed)
        else:
            self._hooks.circuits_counted(OpenCircuits(1 if changed is State.OPEN else 0))
