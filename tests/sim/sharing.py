"""Sharing a key with a stranger, on virtual time: how the 429 adaptations compare.

A fleet of three members paces at a budget ``B`` the vendor enforces with a bucket of one second of
budget. Another client of the same key (Poisson arrivals) spends ``share`` of it. Each member's
callers take ticks, send, and report each outcome to their pacer; a 429 also holds that member for a
first-attempt backoff, as the deliverer does. Measured after a warm-up: the 429s per accepted request,
and the accepted rate over what the stranger left. Then the stranger leaves: how long until the fleet
uses 95% of the budget again.

``python -m tests.sim.sharing`` prints the comparison; ``test_sharing.py`` pins the chosen one.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from random import Random

from connector.adapt import Adaptation, Estimating, Halving
from connector.fence import Fence
from connector.pacing import Pacer
from connector.structs import TopicPartition
from tests.sim.loop import VirtualTimeLoop

START = 1_800_000_000.0


class _Clock:
    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return asyncio.get_running_loop().time()


@dataclass
class Sharing:
    """Figures of one run."""

    algorithm: str
    accepted: int = 0
    limited: int = 0
    stranger_accepted: int = 0
    measured_s: float = 0.0
    budget: float = 0.0
    recovery_s: float | None = None

    @property
    def share_429(self) -> float:
        return self.limited / max(1, self.accepted)

    @property
    def of_available(self) -> float:
        available = self.budget * self.measured_s - self.stranger_accepted
        return self.accepted / max(1.0, available)


class _Bucket:
    """The vendor's limit: ``budget`` tokens a second, at most one second's worth saved."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._tokens = budget
        self._at = START

    def take(self, now: float) -> bool:
        self._tokens = min(self.budget, self._tokens + (now - self._at) * self.budget)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


async def _scenario(
    make: type[Halving] | type[Estimating],
    budget: float,
    share: float,
    seconds: float,
    leave_at: float | None,
    bursty: bool,
) -> Sharing:
    loop = asyncio.get_running_loop()
    rng = Random(7)
    bucket = _Bucket(budget)
    result = Sharing(make.name, budget=budget)
    warmup = 30.0
    measure_until = START + (leave_at if leave_at is not None else seconds)
    served: list[float] = []

    def measuring(now: float) -> bool:
        return START + warmup <= now < measure_until

    async def stranger() -> None:
        while loop.time() < START + (leave_at if leave_at is not None else seconds):
            gap = 1 / (share * budget)
            await asyncio.sleep(rng.expovariate(1 / gap) if bursty else rng.uniform(0.9, 1.1) * gap)
            if bucket.take(loop.time()) and measuring(loop.time()):
                result.stranger_accepted += 1

    async def caller(pacer: Pacer) -> None:
        while loop.time() < START + seconds:
            await pacer.acquire()
            await asyncio.sleep(0.02)
            now = loop.time()
            accepted = bucket.take(now)
            await asyncio.sleep(0.02)
            pacer.observe(not accepted)
            if accepted:
                served.append(now)
                if measuring(now):
                    result.accepted += 1
            else:
                if measuring(now):
                    result.limited += 1
                pacer.hold(rng.uniform(0, 0.2))

    pacers = []
    for owned in ((0, 1), (2, 3), (4, 5)):
        fence = Fence(_Clock(), lease_seconds=10, settle_seconds=1)
        for p in owned:
            fence.assign(TopicPartition("t", p), 0.0)
            fence.renew(TopicPartition("t", p), float("inf"))
        adaptation: Adaptation = make()
        pacer = Pacer(budget, _Clock(), fence, adaptation=adaptation)
        pacer.set_layout({"t": 6})
        pacers.append(pacer)
    await asyncio.gather(stranger(), *(caller(p) for p in pacers for _ in range(4)))
    result.measured_s = measure_until - START - warmup
    if leave_at is not None:
        for second in range(int(leave_at), int(seconds) - 10):
            window = sum(1 for t in served if START + second <= t < START + second + 10)
            if window >= 0.95 * budget * 10 / 1.01:
                result.recovery_s = second - leave_at
                break
    return result


def compare(
    make: type[Halving] | type[Estimating],
    budget: float = 5.0,
    share: float = 0.5,
    seconds: float = 300.0,
    leave_at: float | None = None,
    bursty: bool = False,
) -> Sharing:
    """One run of the scenario with adaptation ``make``; the other client sends evenly (jitter 10%),
    or at random (Poisson) when ``bursty``."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        return runner.run(_scenario(make, budget, share, seconds, leave_at, bursty))


def main() -> int:
    print(f"{'algorithm':<11} {'other client':>16} {'429/accepted':>13} {'of what is left':>16} "
          f"{'back to 95% after it left':>26}")  # fmt: skip
    for make in (Halving, Estimating):
        for bursty in (False, True):
            for share in (0.25, 0.5, 0.75):
                r = compare(make, share=share, bursty=bursty)
                back = compare(make, share=share, seconds=600.0, leave_at=300.0, bursty=bursty).recovery_s
                other = f"{share:.0%} {'at random' if bursty else 'evenly'}"
                print(f"{r.algorithm:<11} {other:>16} {r.share_429:>13.1%} {r.of_available:>16.1%} "
                      f"{'-' if back is None else f'{back:.0f} s':>26}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
