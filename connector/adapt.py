"""How much of its budget ticks a member uses when someone else spends the same API key.

The vendor's budget is per key, and the merchant's other integrations use the same key: the connector
sees only the 429s. An :class:`Adaptation` turns each request's outcome (accepted, or answered 429)
into a *factor*, the share of the member's ticks it uses (:mod:`pacing`).

Two were compared on the same simulated key, shared with a client taking half of it
(``python -m tests.sim.sharing``, figures in the README):

- :class:`Halving`, plain AIMD as TCP Reno does it: halve on a 429, add a tenth of the share a second.
  It oscillates around what is left, and every climb back ends in a 429.
- :class:`Estimating` (the one in use): on a 429, estimate what is left from the requests the vendor
  accepted over the last :data:`WINDOW` seconds, and drop to :data:`BETA` of that estimate; then probe
  upward by :data:`SLOW` a second up to :data:`NEAR` times the estimate, and by :data:`FAST` beyond it
  (the other client may have left). Several 429s within :data:`DEBOUNCE` seconds are one signal.

Against a client spending half the key evenly, Halving drew 25 429s for every 100 accepted requests,
Estimating 2, both taking all the other client left; against one sending at random (Poisson) they drew
22 and 3, Estimating then using 84% of what was left. The price of the slow probe: once the other
client leaves, the fleet is back at 95% of the budget after two to three and a half minutes.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

WINDOW = 10.0
"""Seconds of outcomes the estimate of the available rate is made from."""
BETA = 0.85
"""After a 429, the share used is this much of the estimate."""
SLOW = 0.001
"""Growth of the factor a second up to a little above the last estimate (1 % of the share in 10 s)."""
FAST = 0.02
"""Growth of the factor a second above the last estimate."""
NEAR = 1.1
"""Growth stays slow up to this much of the last estimate."""
DEBOUNCE = 2.0
"""429s closer than this to the last cut count as the same signal."""
FLOOR = 0.05
"""The least share of its ticks a member uses."""


class Adaptation(Protocol):
    """Turns the outcomes of requests into the share of its ticks a member uses."""

    name: str

    def observe(self, limited: bool, now: float, full_rate: float) -> None:
        """A request came back: answered 429 (``limited``) or accepted. ``full_rate`` is the
        member's share of the budget, in requests a second, at factor 1."""
        ...

    def factor(self, now: float) -> float:
        """The share of its ticks the member may use now (0 < factor <= 1)."""
        ...

    def estimate(self, now: float) -> float:
        """The estimated share of the member's ticks the vendor accepts (1.0 when unknown)."""
        ...


class Halving:
    """AIMD: a 429 halves the factor; each second gives back ``recovery`` of it."""

    name = "halving"

    def __init__(self, floor: float = FLOOR, recovery: float = 0.1) -> None:
        self._floor = floor
        self._recovery = recovery
        self._at = 1.0
        self._since = 0.0
        self._last_cut = -DEBOUNCE

    def observe(self, limited: bool, now: float, full_rate: float) -> None:
        """Halve on a 429 (once per :data:`DEBOUNCE` seconds)."""
        if limited and now - self._last_cut >= DEBOUNCE:
            self._at = max(self._floor, self.factor(now) / 2)
            self._since = self._last_cut = now

    def factor(self, now: float) -> float:
        """Additive recovery since the last cut."""
        return min(1.0, self._at + self._recovery * (now - self._since))

    def estimate(self, now: float) -> float:
        """This one keeps no estimate."""
        return 1.0


class Estimating:
    """Estimate what is left on a 429, use :data:`BETA` of it, probe upward slowly, then faster."""

    name = "estimating"

    def __init__(self) -> None:
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._at = 1.0
        self._since = 0.0
        self._estimate = 1.0
        self._last_cut = -DEBOUNCE

    def observe(self, limited: bool, now: float, full_rate: float) -> None:
        """Keep the last :data:`WINDOW` seconds of outcomes; on a 429, cut to the estimate."""
        self._outcomes.append((now, limited))
        while self._outcomes and self._outcomes[0][0] < now - WINDOW:
            self._outcomes.popleft()
        if not limited or now - self._last_cut < DEBOUNCE or full_rate <= 0:
            return
        accepted = sum(1 for _, was_limited in self._outcomes if not was_limited)
        span = max(1.0, min(WINDOW, now - self._outcomes[0][0])) if self._outcomes else WINDOW
        self._estimate = max(FLOOR, min(1.0, accepted / span / full_rate))
        self._at = max(FLOOR, min(self.factor(now), BETA * self._estimate))
        self._since = self._last_cut = now

    def factor(self, now: float) -> float:
        """Slow growth up to a little above the estimate, faster beyond it (the other client left)."""
        elapsed = now - self._since
        ceiling = min(1.0, self._estimate * NEAR)
        slow_until = max(0.0, (ceiling - self._at) / SLOW)
        if elapsed <= slow_until:
            return min(1.0, self._at + SLOW * elapsed)
        return min(1.0, max(self._at, ceiling) + FAST * (elapsed - slow_until))

    def estimate(self, now: float) -> float:
        """The share of this member's ticks the vendor accepted at the last 429."""
        return self._estimate
