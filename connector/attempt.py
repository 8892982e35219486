"""One attempt of a delivery job: its request, sent on the tick it was granted.

The deliverer (``connector.deliver``) decides what a job sends and what each outcome means; this is
the request itself: an apply, or an audit's read-back (``Lane.AUDIT``), sent with the log context that
names the change's record, told to the hooks when it starts and when it ends, and run under a timeout
scope that a drain cancels (:class:`~connector.jobs.Call`). It is run by the worker itself, not as a
task of its own: its first request uses the tick just granted (``Prepaid``), and a task would start
only on the loop's next iteration, when the tick may be stale on a busy loop (it would then wait for
another).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from connector.clock import Clock
from connector.errors import status_class
from connector.instruments import CallEnded, CallHooks, CallSent
from connector.jobs import Call, Job, JobState, Lane
from connector.logs import name_in_logs, unname_in_logs
from connector.readback import Held, read_back
from connector.sinks import Prepaid, Sink
from connector.structs import OrderChange


@dataclass(frozen=True, slots=True)
class Attempted:
    """How an attempt ended: what the vendor holds (an audit's read), the error it ended in (None:
    answered), and whether a drain cancelled it (its request may have been sent all the same)."""

    held: Held | None
    error: BaseException | None
    cancelled: bool


def _names(change: OrderChange, tenant: str) -> dict[str, object]:
    """What log lines name while ``change`` is sent: its record, its order and its shop."""
    record = change.record
    names: dict[str, object] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "external_id": change.external_id,
    }
    if tenant:
        names["tenant"] = tenant
    return names


class Attempts:
    """Sends a job's requests to one shop's vendor client, reporting each to ``hooks``."""

    def __init__(self, sink: Sink, hooks: CallHooks, *, clock: Clock, tenant: str = "") -> None:
        self._sink = sink
        self._hooks = hooks
        self._clock = clock
        self._tenant = tenant

    async def send(self, job: Job, change: OrderChange) -> Attempted:
        """Send ``change`` for ``job`` on its tick (``job.tick``): the job is in flight meanwhile,
        its call (``job.call``) the handle a drain cancels it by."""
        job.attempts += 1
        job.state = JobState.IN_FLIGHT
        started = self._clock.monotonic()
        self._hooks.call_sent(CallSent(self._tenant))
        held: Held | None = None
        error: BaseException | None = None
        answered = False  # the request returned or raised (it was not cancelled)
        scope: asyncio.Timeout | None = None
        names = name_in_logs(_names(change, self._tenant))
        try:
            async with asyncio.timeout(None) as scope:
                call = job.call = Call(scope)
                try:
                    if job.lane is Lane.AUDIT:
                        held = await read_back(self._sink, change, Prepaid(job.tick))
                    else:
                        await self._sink.apply(change, Prepaid(job.tick))
                    answered = True
                except Exception as exc:  # classified by the deliverer
                    error, answered = exc, True
                finally:
                    call.end()
                    job.call = None
        except TimeoutError:
            pass  # cancelled by a drain (scope.expired(), below)
        finally:
            unname_in_logs(names)
            cancelled = scope is None or scope.expired()
            answer = status_class(error) if answered and not cancelled else None
            self._hooks.call_ended(CallEnded(self._tenant, answer, self._clock.monotonic() - started))
        return Attempted(held, error, cancelled)
