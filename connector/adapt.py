"""How much of its budget ticks a member uses when someone else spends the same API key.

The vendor's budget is per key, and the merchant's other integrations use the same key: the connector
sees only the 429s. An :class:`Adaptation` turns each request's outcome (accepted, or answered 429)
into a *factor*, the share of the member's ticks it uses (:mod:`pacing`).

A 429 makes a :class:`Cut`: when it was made, the estimate of what is left, the factor it drops to and
how the factor grows back. The factor at any later time is a function of the last cut alone, so
members that tell each other their cuts (:mod:`connector.fleetpace`) and each follow the newest one
(:meth:`Adaptation.adopt`) use the same share of their ticks at every moment: the fleet paces as one
member would, whichever member's requests the vendor's 429s happened to fall on. A member that follows
a cut made elsewhere learns of the other client without drawing a 429 of its own.

Two adaptations, compared on a simulated key shared with another client (``python -m tests.sim.sharing``,
figures in ``docs/benchmarks.md``):

- :class:`Halving`, plain AIMD as TCP Reno does it: halve on a 429, add a tenth of the share a second.
  It oscillates around what is left, and every climb back ends in a 429.
- :class:`Estimating` (the one in use). Several 429s within :data:`DEBOUNCE` seconds are one signal.
  A 429 after :data:`MEMORY` seconds without one (at start, or when another client appears) knows
  nothing of how much the other client takes: the factor is halved (:data:`BLIND`), then climbs back
  by :data:`MEDIUM` a second up to :data:`BETA` of the factor the 429 came at (the *estimate*: what is
  left is below it). So does a 429 within :data:`QUICK` seconds of the end of the last hold (that cut
  was not enough, and by how much is not known). Any other 429 cuts to :data:`BETA` of the estimate.
  From there the factor probes upward by :data:`SLOW` a second up to :data:`NEAR` times the estimate,
  and by :data:`FAST` beyond it (the other client may have left). Every cut also holds every request
  for :data:`HOLD` seconds: the vendor's bucket is empty when it answers 429, and a slower pace resumed
  at once would keep colliding with the other client's requests until the bucket has refilled.

  An estimate from the rate the vendor accepted over the last seconds (what this adaptation did before)
  counts a member's own requests only: with the 429s falling on one member, its estimate is that of
  its own luck, and with three members sharing five requests a second, a few seconds hold too few
  requests to tell anything. The factor a 429 came at is the same on every member that follows the
  fleet's cuts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

BETA = 0.85
"""After a 429, the share used is this much of the estimate."""
BLIND = 0.5
"""A 429 out of the blue (see :data:`MEMORY`, :data:`QUICK`) multiplies the factor by this."""
MEMORY = 300.0
"""Seconds after a cut during which the other client is taken to be still there."""
MEDIUM = 0.005
"""Growth of the factor a second after a blind cut, back up to :data:`BETA` of the estimate."""
SLOW = 0.001
"""Growth of the factor a second up to a little above the last estimate (1 % of the share in 10 s)."""
FAST = 0.02
"""Growth of the factor a second above the last estimate."""
NEAR = 1.1
"""Growth stays slow up to this much of the last estimate."""
DEBOUNCE = 2.0
"""429s closer than this to the last cut count as the same signal."""
HOLD = 2.0
"""Seconds every request waits after a cut, while the vendor's bucket refills."""
FLOOR = 0.05
"""The least share of its ticks a member uses."""
QUICK = 4.0
"""A 429 this soon after the end of the last cut's hold halves the factor again."""


@dataclass(frozen=True, slots=True)
class Cut:
    """A drop of the pace after a 429, at ``at`` (wall clock): the vendor is estimated to accept
    ``estimate`` of the ticks; the factor drops to ``factor``, grows by :data:`MEDIUM` a second up to
    ``resume``, then by :data:`SLOW` up to :data:`NEAR` times the estimate, then by :data:`FAST`.
    Nothing is sent before ``hold_until``."""

    at: float
    estimate: float
    factor: float
    resume: float
    hold_until: float

    def factor_at(self, now: float) -> float:
        """The factor at ``now``, this cut being the last one."""
        if self.factor >= 1.0:  # it only grows: no cut (``NONE``), asked for every tick looked at
            return 1.0
        elapsed = max(0.0, now - self.at)
        level = self.factor
        medium = max(0.0, self.resume - level) / MEDIUM
        if elapsed <= medium:
            return min(1.0, level + MEDIUM * elapsed)
        elapsed -= medium
        level = max(level, self.resume)
        ceiling = min(1.0, self.estimate * NEAR)
        slow = max(0.0, ceiling - level) / SLOW
        if elapsed <= slow:
            return min(1.0, level + SLOW * elapsed)
        return min(1.0, max(level, ceiling) + FAST * (elapsed - slow))


NONE = Cut(at=float("-inf"), estimate=1.0, factor=1.0, resume=1.0, hold_until=float("-inf"))
"""No cut yet: the whole share."""


class Adaptation(Protocol):
    """Turns the outcomes of requests into the share of its ticks a member uses."""

    name: str

    def observe(self, limited: bool, now: float, full_rate: float) -> Cut | None:
        """A request came back: answered 429 (``limited``) or accepted. ``full_rate`` is the
        member's share of the budget, in requests a second, at factor 1. Returns the cut it made,
        if it made one (the fleet is told of it)."""
        ...

    def adopt(self, cut: Cut) -> bool:
        """Another member of the fleet made ``cut``: follow it if it is newer than the last cut this
        one made or followed. Returns whether it did."""
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
        self._last_cut = float("-inf")

    def observe(self, limited: bool, now: float, full_rate: float) -> Cut | None:
        """Halve on a 429 (once per :data:`DEBOUNCE` seconds)."""
        if not limited or now - self._last_cut < DEBOUNCE:
            return None
        self._at = max(self._floor, self.factor(now) / 2)
        self._since = self._last_cut = now
        return Cut(now, 1.0, self._at, self._at, now)

    def adopt(self, cut: Cut) -> bool:
        """Follow a newer cut (its factor; the recovery is this one's own)."""
        if cut.at <= self._last_cut:
            return False
        self._at, self._since, self._last_cut = cut.factor, cut.at, cut.at
        return True

    def factor(self, now: float) -> float:
        """Additive recovery since the last cut."""
        return min(1.0, self._at + self._recovery * max(0.0, now - self._since))

    def estimate(self, now: float) -> float:
        """This one keeps no estimate."""
        return 1.0


class Estimating:
    """Halve on a 429 out of the blue, else cut to :data:`BETA` of the factor the 429 came at; probe
    back upward (see the module docstring). Pure: the caller passes the time."""

    name = "estimating"

    def __init__(self) -> None:
        self._cut = NONE

    @property
    def last_cut(self) -> Cut:
        """The cut the factor follows now (:data:`NONE` before the first)."""
        return self._cut

    def observe(self, limited: bool, now: float, full_rate: float) -> Cut | None:
        """On a 429, cut (at most once per :data:`DEBOUNCE` seconds)."""
        if not limited or now - self._cut.at < DEBOUNCE:
            return None
        estimate = self.factor(now)
        if now - self._cut.at >= MEMORY or now - self._cut.hold_until < QUICK:
            # How much the other client takes is not known (new, or the last cut was not enough).
            factor = max(FLOOR, BLIND * estimate)
        else:
            factor = max(FLOOR, BETA * estimate)
        self._cut = Cut(now, estimate, factor, max(factor, BETA * estimate), now + HOLD)
        return self._cut

    def adopt(self, cut: Cut) -> bool:
        """Follow a newer cut: the same factor from then on, and the same hold."""
        if cut.at <= self._cut.at:
            return False
        self._cut = cut
        return True

    def factor(self, now: float) -> float:
        """The factor the last cut gives at ``now``."""
        return self._cut.factor_at(now)

    def estimate(self, now: float) -> float:
        """The share of the member's ticks the last 429 came at (1.0 before the first)."""
        return self._cut.estimate
