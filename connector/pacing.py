"""Pacing: every request to the vendor waits for a slot of the account's budget.

The budget is ``B`` requests a second for the whole fleet. Time is cut into ticks ``k * (1 + s) / B``
seconds after the epoch (wall clock, the same on every member; ``s`` = 0.02 of slack), and tick ``k``
belongs to partition number ``k mod P`` of the subscribed topics (``P`` partitions in all, numbered
topic by topic in name order). A member may use a tick only while it holds a send lease on that tick's
partition (:mod:`fence`), so two members never use one tick; and a tick not used within
:data:`LATE` of its time (the event loop was busy) is given up. So the fleet never sends more than
``B`` requests in any window of one second, even seen from the vendor with a few milliseconds of
network jitter, with no coordination beyond Kafka's assignment: ``B + 1`` requests are at least
``B`` ticks apart, ``1 + s`` seconds, minus at most ``LATE``. A member's rate is ``B / (1 + s)`` times
the share of partitions it owns (98% of the budget for the fleet); a member owning none sends nothing.

A 429 halves this member's use of its ticks (``factor``, never below ``floor``) and may hold every
request for a while (the vendor's ``Retry-After``, capped); the factor then grows back by ``recovery``
a second (additive increase, multiplicative decrease). Ticks are reserved one at a time and never
reissued, so a change of rate never lets a burst through.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping

from connector.clock import Clock
from connector.fence import Fence
from connector.structs import TopicPartition

_EPSILON = 1e-6
SLACK = 0.02
"""Ticks are ``(1 + SLACK) / B`` apart."""
LATE = 0.01
"""Seconds after its time a tick may still be used."""


class Pacer:
    """The budget every request of this member waits on."""

    def __init__(
        self,
        budget_per_second: float,
        clock: Clock,
        fence: Fence,
        *,
        floor: float = 0.05,
        recovery: float = 0.1,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.budget = budget_per_second
        self._spacing = (1.0 + SLACK) / budget_per_second
        self._clock = clock
        self.fence = fence
        self._floor = floor
        self._recovery = recovery
        self._on_wait = on_wait
        self._index: dict[TopicPartition, int] = {}
        self._total = 0
        self._next_free = 0.0
        self._hold_until = 0.0
        self._factor_at = 1.0
        self._factor_since = 0.0
        self._credit = 1.0

    @classmethod
    def standalone(cls, rate_per_second: float, clock: Clock) -> Pacer:
        """A pacer for a lone client outside the group (``dlq redrive``): ``rate`` requests a second."""
        fence = Fence(clock, lease_seconds=float("inf"), settle_seconds=0.0)
        only = TopicPartition("", 0)
        fence.assign(only, 0.0)
        fence.renew(only, float("inf"))
        pacer = cls(rate_per_second, clock, fence)
        pacer.set_layout({"": 1})
        return pacer

    def set_layout(self, partitions: Mapping[str, int]) -> None:
        """The subscribed topics and their partition counts (the same on every member)."""
        self._index.clear()
        base = 0
        for topic in sorted(partitions):
            for p in range(partitions[topic]):
                self._index[TopicPartition(topic, p)] = base + p
            base += partitions[topic]
        self._total = base

    @property
    def factor(self) -> float:
        """The share of this member's ticks in use (1.0 unless 429s said to slow down)."""
        grown = self._factor_at + self._recovery * (self._clock.wall() - self._factor_since)
        return min(1.0, grown)

    @property
    def rate(self) -> float:
        """Requests a second this member may send now."""
        owned = sum(1 for tp in self.fence.partitions() if tp in self._index)
        return owned / self._spacing / self._total * self.factor if self._total else 0.0

    @property
    def held_for(self) -> float:
        """Seconds every request is still held by a ``Retry-After`` (0: none)."""
        return max(0.0, self._hold_until - self._clock.wall())

    def slow_down(self, hold_seconds: float = 0.0) -> None:
        """A 429: halve the pace and hold every request for ``hold_seconds``."""
        now = self._clock.wall()
        self._factor_at = max(self._floor, self.factor / 2)
        self._factor_since = now
        self._hold_until = max(self._hold_until, now + hold_seconds)

    def _next_tick(self, start: float) -> tuple[float, TopicPartition] | None:
        """The earliest tick at or after ``start`` that this member may use, and its partition."""
        best: tuple[float, TopicPartition] | None = None
        spacing, total = self._spacing, self._total
        for tp in self.fence.partitions():
            index = self._index.get(tp)
            window = self.fence.window(tp)
            if index is None or window is None:
                continue
            begin, end = window
            first = math.ceil(max(start, begin) / spacing - _EPSILON)
            tick = (first + (index - first) % total) * spacing
            if tick < end and (best is None or tick < best[0]):
                best = (tick, tp)
        return best

    def late(self, tick: float) -> float:
        """Seconds since ``tick``."""
        return self._clock.wall() - tick

    def fresh(self, tick: float) -> bool:
        """Whether a tick granted earlier may still be used now (not later than :data:`LATE`)."""
        return self.late(tick) <= LATE

    async def acquire(self) -> float:
        """Wait for this request's tick; returns its time (wall clock)."""
        started = self._clock.monotonic()
        while True:
            now = self._clock.wall()
            found = self._next_tick(max(now, self._next_free, self._hold_until)) if self._total else None
            if found is None:
                await asyncio.sleep(0.1)  # no lease yet, or no partition at all
                continue
            tick, tp = found
            self._next_free = tick + _EPSILON
            # Below factor 1 only that share of the ticks is used: each tick looked at adds
            # ``factor`` credit and a grant spends one. Never more than one grant a tick, so credit
            # cannot turn into a burst; the cap only keeps it from growing without end.
            self._credit = min(2.0, self._credit + self.factor)
            if self._credit < 1.0 - _EPSILON:
                continue
            self._credit -= 1.0
            if tick > now:
                await asyncio.sleep(tick - now)
            # While waiting, a Retry-After may have come, the lease may have ended, or the loop may
            # have been too busy to wake on time: then the tick is given up (never handed to anyone
            # else) and the next one is looked for.
            if (
                self._hold_until <= tick
                and self.fence.may_send(tp, tick)
                and self._clock.wall() - tick <= LATE
            ):
                break
        if self._on_wait is not None:
            self._on_wait(self._clock.monotonic() - started)
        return tick
