"""Pacing: calls spaced evenly at this process's share of the API budget, slowed by every 429.

The pace is ``share * factor`` calls a second. A 429 halves ``factor`` (never below ``floor``) and holds
every caller for the backoff; each second without a 429 gives back ``recovery`` of the budget, so the
pace climbs back gradually instead of hitting the limit again at once (AIMD, as TCP does). One token
every ``1/pace`` seconds (aiolimiter with capacity 1): no bursts, so network jitter cannot crowd calls
into one of the vendor's windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter


class Pacer:
    """The shared budget every vendor call waits on."""

    def __init__(
        self,
        share_per_second: float,
        floor: float = 0.1,
        recovery: float = 0.1,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._on_wait = on_wait
        self.share = share_per_second
        self.factor = 1.0
        self._floor = floor
        self._recovery = recovery
        self._hold_until = 0.0
        self._changed_at = time.monotonic()
        self._limiter = AsyncLimiter(1, 1.0 / share_per_second)

    @property
    def rate(self) -> float:
        """Calls per second allowed now."""
        return self.share * self.factor

    def _apply(self) -> None:
        self._limiter = AsyncLimiter(1, 1.0 / self.rate)
        self._changed_at = time.monotonic()

    def set_share(self, share_per_second: float) -> None:
        """This process's share of the account's budget changed (a rebalance)."""
        if share_per_second > 0 and share_per_second != self.share:
            self.share = share_per_second
            self._apply()

    def slow_down(self, hold_seconds: float) -> None:
        """A 429: halve the pace and hold every caller for ``hold_seconds``."""
        self.factor = max(self._floor, self.factor / 2)
        self._hold_until = max(self._hold_until, time.monotonic() + hold_seconds)
        self._apply()

    def _recover(self) -> None:
        if self.factor < 1.0 and time.monotonic() - self._changed_at >= 1.0:
            self.factor = min(1.0, self.factor + self._recovery)
            self._apply()

    async def acquire(self) -> None:
        """Wait for this call's turn."""
        started = time.monotonic()
        while (hold := self._hold_until - time.monotonic()) > 0:
            await asyncio.sleep(hold)
        self._recover()
        await self._limiter.acquire()
        if self._on_wait is not None:
            self._on_wait(time.monotonic() - started)
