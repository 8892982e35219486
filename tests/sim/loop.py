"""An asyncio event loop on virtual time: sleeping costs nothing, time jumps to the next timer.

Nothing in a simulation does real I/O, so whenever no callback is ready the loop moves its clock to
the earliest timer instead of waiting. If no callback is ready and no timer is set, every task waits
for something that will never happen: the loop raises :class:`Deadlock` instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class Deadlock(RuntimeError):
    """Every task is waiting and nothing is scheduled: the simulation cannot progress."""


class _Selector(selectors.DefaultSelector):
    """A real selector polled without waiting (for the loop's self-pipe); the wait becomes a jump of
    virtual time."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._loop.real_io:
            events = super().select(0)
            if events:
                return events
        if timeout is None:
            raise Deadlock("every task is waiting and no timer is set")
        if timeout > 0:
            self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual, starting at ``start``."""

    def __init__(self, start: float = 0.0, real_io: bool = False) -> None:
        self._now = start
        self.real_io = real_io  # poll real file descriptors too (nothing in a simulation uses them)
        super().__init__(selector=_Selector(self))
        self.slow_callback_duration = float("inf")
        # A timer is due when it is within the clock's resolution. Near the epoch times the runs use
        # (1.8e9 s) floats are 2.4e-7 s apart, so a nanosecond resolution would never see a timer
        # reached by ``advance`` as due, and the loop would spin.
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does, when it would have waited)."""
        self._now += seconds

    def run_in_executor(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no threads in a simulation: they would run on real time")
