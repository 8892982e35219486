"""Sharing a key with a stranger, on virtual time: one budget per key across the fleet.

A fleet of one to three members paces at a budget ``B`` (six partitions dealt out round-robin, as
Kafka's assignor does) that the vendor enforces with a bucket of one second of budget. Another client
of the same key spends ``share`` of it, evenly (jitter 10%) or at random (Poisson); it competes for the
bucket's tokens as the connector does (its requests may be refused too). Each member's callers take
ticks, send, and report each outcome to their pacer; a 429 also holds that member for a first-attempt
backoff, as the deliverer does. With ``shared`` the members tell each other their cuts through an
in-memory pace topic (:class:`connector.fleetpace.FleetPace`, records visible 50 ms after they are
written); without it each member paces on its own 429s alone (the topic is missing).

Measured from the start, over the first 30 s, 90 s and 150 s: the connector's 429s per request the
vendor accepted, and what it got accepted over what the other client left (the budget over the time,
less what the other client got accepted). Then the other client leaves: how long until the fleet
uses 95% of the budget again.

``python -m tests.sim.sharing`` prints the comparison; ``test_sharing.py`` pins the goals.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from connector import logs
from connector.adapt import Adaptation, Estimating, Halving
from connector.fence import Fence
from connector.fleetpace import FleetPace
from connector.pacing import Pacer
from connector.structs import TopicPartition
from tests.sim.loop import VirtualTimeLoop
from tests.sim.pace import PaceTopic

START = 1_800_000_000.0
PARTITIONS = 6
WINDOWS = (30.0, 90.0, 150.0)


class _Clock:
    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return asyncio.get_running_loop().time()


@dataclass
class Sharing:
    """Every request of one run: ``(seconds since the start, accepted)``, the connector's and the
    other client's."""

    algorithm: str
    members: int
    budget: float
    ours: list[tuple[float, bool]] = field(default_factory=list)
    theirs: list[tuple[float, bool]] = field(default_factory=list)
    recovery_s: float | None = None
    followed: int = 0  # cuts members followed from the pace topic

    def share_429(self, until: float = 150.0, since: float = 0.0) -> float:
        """429s per accepted request of the connector, from ``since`` to ``until`` seconds."""
        accepted = sum(1 for t, ok in self.ours if since <= t < until and ok)
        limited = sum(1 for t, ok in self.ours if since <= t < until and not ok)
        return limited / max(1, accepted)

    def of_available(self, until: float = 150.0, since: float = 0.0) -> float:
        """Accepted requests of the connector over what the other client left, ``since`` to ``until``."""
        accepted = sum(1 for t, ok in self.ours if since <= t < until and ok)
        theirs = sum(1 for t, ok in self.theirs if since <= t < until and ok)
        return accepted / max(1.0, self.budget * (until - since) - theirs)


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
    make: Callable[[], Adaptation],
    members: int,
    budget: float,
    share: float,
    seconds: float,
    leave_at: float | None,
    bursty: bool,
    shared: bool,
    seed: int,
) -> Sharing:
    loop = asyncio.get_running_loop()
    rng = Random(seed)
    bucket = _Bucket(budget)
    result = Sharing(make().name + (" shared" if shared else ""), members, budget)
    until = START + (leave_at if leave_at is not None else seconds)

    async def stranger() -> None:
        while loop.time() < until:
            gap = 1 / (share * budget)
            await asyncio.sleep(rng.expovariate(1 / gap) if bursty else rng.uniform(0.9, 1.1) * gap)
            result.theirs.append((loop.time() - START, bucket.take(loop.time())))

    async def caller(pacer: Pacer) -> None:
        while loop.time() < START + seconds:
            await pacer.acquire()
            await asyncio.sleep(0.02)
            now = loop.time()
            accepted = bucket.take(now)
            await asyncio.sleep(0.02)
            pacer.observe(not accepted)
            result.ours.append((now - START, accepted))
            if not accepted:
                pacer.hold(rng.uniform(0, 0.2))

    topic = PaceTopic(delay=0.05, exists=shared)
    async with contextlib.AsyncExitStack() as stack:
        fleet = []
        for m in range(members):
            fence = Fence(_Clock(), lease_seconds=10, settle_seconds=1)
            for p in range(m, PARTITIONS, members):
                fence.assign(TopicPartition("t", p), 0.0)
                fence.renew(TopicPartition("t", p), float("inf"))
            pacer = Pacer(budget, _Clock(), fence, adaptation=make())
            pacer.set_layout({"t": PARTITIONS})
            pace = await stack.enter_async_context(
                FleetPace(topic.log_for(), group="g", member=f"m{m}", clock=_Clock())
            )
            pace.attach(pacer)
            fleet.append((pacer, pace))
        await asyncio.gather(stranger(), *(caller(p) for p, _ in fleet for _ in range(4)))
        result.followed = sum(pace.followed for _, pace in fleet)
    if leave_at is not None:
        accepted = [t for t, ok in result.ours if ok]
        for second in range(int(leave_at), int(seconds) - 10):
            window = sum(1 for t in accepted if second <= t < second + 10)
            if window >= 0.95 * budget * 10 / 1.01:
                result.recovery_s = second - leave_at
                break
    return result


def compare(
    make: Callable[[], Adaptation] = Estimating,
    members: int = 3,
    budget: float = 5.0,
    share: float = 0.5,
    seconds: float = 150.0,
    leave_at: float | None = None,
    bursty: bool = False,
    shared: bool = True,
    seed: int = 7,
) -> Sharing:
    """One run: ``members`` members with adaptation ``make``, telling each other their cuts when
    ``shared``; the other client takes ``share`` of the budget evenly, or at random when ``bursty``."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        return runner.run(_scenario(make, members, budget, share, seconds, leave_at, bursty, shared, seed))


def main() -> int:
    logs.configure("ERROR")
    print(f"{'':33} {'':16} {'429s per accepted':^23}   {'of what is left':^20}")
    print(f"{'algorithm':<10} {'members':>7} {'pace topic':>10}   {'other client':>16} {'30 s':>7} {'90 s':>7} "
          f"{'150 s':>7}   {'30 s':>6} {'90 s':>6} {'150 s':>6}  {'back to 95% once it left':>24}")  # fmt: skip
    rows: list[tuple[Callable[[], Adaptation], bool]] = [
        (Halving, True),
        (Estimating, False),
        (Estimating, True),
    ]
    for make, shared in rows:
        for members in (1, 2, 3):
            for share, bursty in ((0.5, False), (0.5, True), (0.25, False), (0.75, False)):
                r = compare(make, members, share=share, bursty=bursty, shared=shared)
                back = compare(
                    make, members, share=share, seconds=600.0, leave_at=300.0, bursty=bursty, shared=shared
                ).recovery_s
                other = f"{share:.0%} {'at random' if bursty else 'evenly'}"
                print(f"{make().name:<10} {members:>7} {'yes' if shared else 'no':>10}   {other:>16} "
                      + " ".join(f"{r.share_429(w):>7.1%}" for w in WINDOWS) + "   "
                      + " ".join(f"{r.of_available(w):>6.0%}" for w in WINDOWS)
                      + f"  {'-' if back is None else f'{back:.0f} s':>24}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
