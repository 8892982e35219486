"""The pacer: even spacing at the share of the budget; a 429 halves the pace, which then recovers."""

from __future__ import annotations

import time

from connector.pacing import Pacer


async def test_calls_are_spaced_evenly_at_the_rate() -> None:
    """At 50/s, 11 acquisitions take about 0.2 s: no burst at the start."""
    pacer = Pacer(50.0)
    started = time.monotonic()
    for _ in range(11):
        await pacer.acquire()
    assert time.monotonic() - started >= 0.18


async def test_429_halves_the_pace_and_holds_everyone() -> None:
    """slow_down halves the rate (down to the floor) and holds callers for the given time."""
    pacer = Pacer(10.0, floor=0.2)
    pacer.slow_down(0.3)
    assert pacer.rate == 5.0
    started = time.monotonic()
    await pacer.acquire()
    assert time.monotonic() - started >= 0.28
    for _ in range(5):
        pacer.slow_down(0.0)
    assert pacer.rate == 2.0, "never below the floor"


async def test_pace_recovers_gradually() -> None:
    """Each second without a 429 gives back a tenth of the budget."""
    pacer = Pacer(10.0)
    pacer.slow_down(0.0)
    pacer._changed_at -= 1.0
    await pacer.acquire()
    assert pacer.rate == 6.0
    pacer._changed_at -= 1.0
    await pacer.acquire()
    assert pacer.rate == 7.0


def test_share_follows_the_assignment() -> None:
    """set_share changes the base pace (a rebalance); the 429 factor stays."""
    pacer = Pacer(5.0)
    pacer.slow_down(0.0)
    pacer.set_share(3.0)
    assert pacer.rate == 1.5
