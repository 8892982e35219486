"""Time, injected: the pipeline reads the clock through :class:`Clock` so that a simulation can run
it on virtual time (an hour of faults in well under a second) and a replay sees the same times."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """The two clocks the pipeline needs."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; the event loop's own timers use the same one."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch: record timestamps, dead-letter times, fleet-wide pacing slots."""
        ...


class SystemClock:
    """The real clocks (asyncio's default loop also runs on ``time.monotonic``)."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wall(self) -> float:
        """``time.time()``."""
        return time.time()


SYSTEM_CLOCK = SystemClock()

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]
