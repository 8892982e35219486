"""Pacing: every request to the vendor waits for a tick of the account's budget.

The budget is ``B`` requests a second for the whole fleet. Time is cut into ticks ``k * (1 + s) / B``
seconds after the epoch (wall clock, the same on every member; ``s`` = :data:`SLACK`). Ticks are
dealt out to the subscribed topics in turn (topics in name order), and a topic's ticks to its
partitions in turn: each topic gets an equal share of the budget, and each of its partitions an equal
share of that (topics whose traffic differs get the same share: a member cannot see the others'
traffic, and an equal share cannot be starved by a busier topic). A member may use a tick only while it
holds a send lease on that tick's partition (:mod:`fence`), so two members never use one tick; and a
tick not used within :data:`LATE` of its time (the event loop was busy) is given up. So the fleet never
sends more than ``B`` requests in any window of one second, even seen from the vendor with a few
milliseconds of network jitter, with no coordination beyond Kafka's assignment: ``B + 1`` requests
are at least ``B`` ticks apart, ``1 + s`` seconds, minus at most ``LATE``. A member owning no partition
sends nothing; a dead member's ticks go to the partitions' next owners once its lease has run out.

When someone else spends the same key, the vendor answers 429: each request's outcome feeds the
member's :class:`~connector.adapt.Adaptation`, which sets the share of its ticks it uses. A cut it
makes is told to the rest of the fleet (:class:`Sharing`, :mod:`connector.fleetpace`), and a cut
another member made is followed (:meth:`Pacer.adopt`): the 429s may all fall on one member's requests,
but every member slows. A cut, and a ``Retry-After`` (the deliverer caps it), hold every request for a
while. Ticks are reserved one at a time and never reissued, so a change of rate never lets a burst
through.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Protocol

from connector.adapt import Adaptation, Cut, Estimating
from connector.clock import Clock
from connector.fence import Fence
from connector.structs import TopicPartition

_EPSILON = 1e-6
SLACK = 0.01
"""Ticks are ``(1 + SLACK) / B`` apart: at most 99% of the budget is used."""
LATE = 0.005
"""Seconds after its time a tick may still be used: ``B + 1`` requests are then at least
``1 + SLACK - LATE`` seconds apart, 5 ms of margin for the network's jitter. The pipeline yields to the
event loop every ~2 ms of work so that ticks are rarely this late."""


def phase_of(name: str) -> float:
    """Where in its spacing a budget's ticks fall, from the budget's name (a tenant): the same on
    every member, different between tenants, so that many tenants' ticks do not all come due at
    once (a thousand workers woken in the same millisecond use their ticks late, and give them up)."""
    return zlib.crc32(name.encode()) / 2**32


class Sharing(Protocol):
    """Where a pacer tells the fleet of the cuts it makes (:mod:`connector.fleetpace`)."""

    def publish(self, budget: str, cut: Cut) -> None:
        """Tell the other members that the pace of ``budget`` (a tenant's name) was cut."""
        ...


class Pacer:
    """The budget every request of this member waits on."""

    def __init__(
        self,
        budget_per_second: float,
        clock: Clock,
        fence: Fence,
        *,
        adaptation: Adaptation | None = None,
        on_wait: Callable[[float], None] | None = None,
        phase: float = 0.0,
        name: str = "",
    ) -> None:
        self.name = name  # the budget's name (a tenant; "" for the one budget of a single shop)
        self.sharing: Sharing | None = None  # set by the fleet's pace sharing, if any
        self.budget = budget_per_second
        self._spacing = (1.0 + SLACK) / budget_per_second
        self._grid = 0  # counts the changes of which tick is whose (layout, budget): see _still
        self._phase = phase % 1.0  # ticks at (phase + k) * spacing: see phase_of
        self._clock = clock
        self.fence = fence
        self.adaptation = adaptation or Estimating()
        self._on_wait = on_wait
        self._slots: dict[TopicPartition, tuple[int, int, int]] = {}  # topic index, partition, count
        self._topics = 0
        # The owned partitions' slots and send windows, and the share they add up to, as of the
        # fence's generation (None: to be worked out again): asked for every tick and every answer.
        self._owned: tuple[int, list[tuple[float, float, int, int, int, TopicPartition]], float] | None = None
        self._next_free = 0.0
        self._hold_until = 0.0
        self._credit = 1.0

    def set_budget(self, budget_per_second: float) -> None:
        """A new budget from the next tick on (a tenant's budget changed without a restart). The
        two grids of ticks meet once: in the second of the change, one tick more may be used."""
        self.budget = budget_per_second
        self._spacing = (1.0 + SLACK) / budget_per_second
        self._grid += 1

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
        topics = sorted(t for t, n in partitions.items() if n > 0)
        self._slots = {
            TopicPartition(topic, p): (index, p, partitions[topic])
            for index, topic in enumerate(topics)
            for p in range(partitions[topic])
        }
        self._topics = len(topics)
        self._owned = None
        self._grid += 1

    def _windows(self) -> tuple[list[tuple[float, float, int, int, int, TopicPartition]], float]:
        """Each owned partition of the layout as ``(begin, end, topic index, partition, count, tp)``,
        in partition order, and the share of the budget their ticks add up to."""
        generation = self.fence.generation
        if self._owned is None or self._owned[0] != generation:
            owned = []
            share = 0.0
            for tp in self.fence.partitions():
                slot = self._slots.get(tp)
                window = self.fence.window(tp)
                if slot is None or window is None:
                    continue
                owned.append((window[0], window[1], *slot, tp))
                share += 1 / (self._topics * slot[2])
            self._owned = (generation, owned, share)
        return self._owned[1], self._owned[2]

    @property
    def full_rate(self) -> float:
        """Requests a second this member's ticks allow (its share of the budget, at factor 1)."""
        return self._windows()[1] / self._spacing

    @property
    def rate(self) -> float:
        """Requests a second this member may send now."""
        return self.full_rate * self.adaptation.factor(self._clock.wall())

    @property
    def held_for(self) -> float:
        """Seconds every request is still held by a ``Retry-After`` (0: none)."""
        return max(0.0, self._hold_until - self._clock.wall())

    def observe(self, limited: bool) -> None:
        """A request came back, answered 429 (``limited``) or not: adapts the share of ticks used.
        A cut holds every request a while, and is told to the fleet."""
        cut = self.adaptation.observe(limited, self._clock.wall(), self.full_rate)
        if cut is None:
            return
        self._hold_until = max(self._hold_until, cut.hold_until)
        if self.sharing is not None:
            self.sharing.publish(self.name, cut)

    def adopt(self, cut: Cut) -> bool:
        """Another member cut the pace of this budget: follow it if it is newer than the last cut
        made or followed here (its factor from then on, and its hold). Returns whether it did."""
        if not self.adaptation.adopt(cut):
            return False
        self._hold_until = max(self._hold_until, cut.hold_until)
        return True

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the vendor's ``Retry-After``, or a backoff after a 429)."""
        self._hold_until = max(self._hold_until, self._clock.wall() + seconds)

    def _next_tick(self, start: float) -> tuple[float, TopicPartition] | None:
        """The earliest tick at or after ``start`` that this member may use, and its partition."""
        best: tuple[float, TopicPartition] | None = None
        spacing, topics, phase = self._spacing, self._topics, self._phase
        for begin, end, topic, partition, count, tp in self._windows()[0]:
            first = math.ceil(max(start, begin) / spacing - phase - _EPSILON)  # first tick's number
            turn = math.ceil((first - topic) / topics)  # the topic's turns are ticks topic + topics * j
            turn += (partition - turn) % count  # and its partition's are every count-th of those
            tick = (phase + topic + topics * turn) * spacing
            if tick < end and (best is None or tick < best[0]):
                best = (tick, tp)
        return best

    def _still(self, tick: float, tp: TopicPartition, grid: int) -> bool:
        """Whether ``tick``, found on grid ``grid``, is still ``tp``'s and ``tp`` still fenced for
        this member at it: the windows may have changed while waiting for it, and the layout or the
        budget (the grid: then which tick is whose is worked out again; found by the simulation, seed
        160 with a resync, partitions added while a spare tick was awaited: two members used it)."""
        if not self.fence.may_send(tp, tick):
            return False
        return grid == self._grid or self._next_tick(tick) == (tick, tp)

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
            found = self._next_tick(max(now, self._next_free, self._hold_until)) if self._topics else None
            if found is None:
                await asyncio.sleep(0.1)  # no lease yet, or no partition at all
                continue
            (tick, tp), grid = found, self._grid
            self._next_free = tick + _EPSILON
            # Below factor 1 only that share of the ticks is used: each tick looked at adds
            # ``factor`` credit and a grant spends one. Never more than one grant a tick, so credit
            # cannot turn into a burst; the cap only keeps it from growing without end.
            self._credit = min(2.0, self._credit + self.adaptation.factor(tick))
            if self._credit < 1.0 - _EPSILON:
                continue
            self._credit -= 1.0
            if tick > now:
                await asyncio.sleep(tick - now)
            # While waiting, a Retry-After may have come, the lease may have ended, the layout may
            # have changed (partitions added: the tick may be another partition's now), or the loop
            # may have been too busy to wake on time: then the tick is given up (never handed to
            # anyone else) and the next one is looked for.
            if self._hold_until <= tick and self._still(tick, tp, grid) and self.fresh(tick):
                break
        if self._on_wait is not None:
            self._on_wait(self._clock.monotonic() - started)
        return tick

    async def acquire_spare(self, within: float | None = None) -> float | None:
        """Wait for a tick no request of the live traffic took, and take it; returns its time, or
        None when none came within ``within`` seconds (None: wait as long as it takes).

        For work that may use only what live traffic leaves (the read-back audits): the next tick is
        looked at but not reserved, so a request that asks for a tick (:meth:`acquire`) before that
        tick's time takes it, and this waits for a later one. Nothing is taken while a cut slows the
        pace (someone else spends the key: a spare request might cost a 429 the live traffic would
        not have had) or a ``Retry-After`` holds every request. Live traffic can lose at most the
        :data:`LATE` grace of one tick to it: a request asking for a tick just after one was taken
        here waits for the next, as it would have if that tick had been given up."""
        deadline = math.inf if within is None else self._clock.wall() + within
        while True:
            now = self._clock.wall()
            if now >= deadline:
                return None
            if self._hold_until > now or self.adaptation.factor(now) < 1.0 - _EPSILON:
                await asyncio.sleep(min(max(self._spacing, self._hold_until - now), deadline - now))
                continue
            found = self._next_tick(max(now, self._next_free)) if self._topics else None
            if found is None or found[0] > deadline:
                await asyncio.sleep(min(0.1, deadline - now))
                continue
            (tick, tp), grid = found, self._grid
            if tick > now:
                await asyncio.sleep(tick - now)
            if self._next_free > tick:
                continue  # a live request reserved it meanwhile
            if self._hold_until <= tick and self._still(tick, tp, grid) and self.fresh(tick):
                self._next_free = tick + _EPSILON
                return tick
