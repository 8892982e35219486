"""The pace topic: members tell each other their cuts, on virtual time over an in-memory topic; the
wire format and what a reader does with what it cannot read; a missing topic or a broker hiccup
leaves each member pacing on its own 429s, with a log line, and never stops delivery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from connector.adapt import Cut, Estimating
from connector.fence import Fence
from connector.fleetpace import VERSION, FleetPace, PaceLog, Unreadable, decode, encode
from connector.instruments import NO_HOOKS
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.structs import TopicPartition
from tests.fakes import LoopClock
from tests.sim.loop import VirtualTimeLoop
from tests.sim.pace import PaceTopic

T = TypeVar("T")
START = 1_800_000_000.0
CUT = Cut(at=START + 1.5, estimate=0.8, factor=0.4, resume=0.68, hold_until=START + 3.5)


def virtual(main: Callable[[], Awaitable[T]]) -> T:
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        return runner.run(main())  # type: ignore[arg-type]


def pacer(name: str = "acme", partitions: tuple[int, ...] = (0, 1)) -> Pacer:
    """A member's pacer for budget ``name`` at 5/s, owning ``partitions`` of 4."""
    fence = Fence(LoopClock(), lease_seconds=10, settle_seconds=1)
    for p in partitions:
        fence.assign(TopicPartition("t", p), 0.0)
        fence.renew(TopicPartition("t", p), float("inf"))
    made = Pacer(5.0, LoopClock(), fence, adaptation=Estimating(), name=name)
    made.set_layout({"t": 4})
    return made


def member(
    log: AbstractAsyncContextManager[PaceLog] | None,
    name: str,
    group: str = "g",
    metrics: Metrics | None = None,
) -> FleetPace:
    return FleetPace(
        log, group=group, member=name, clock=LoopClock(), topic="orders.pace", hooks=metrics or NO_HOOKS
    )


def cuts(metrics: Metrics, origin: str) -> float | None:
    value: float | None = metrics.registry.get_sample_value("connector_pace_cuts_total", {"origin": origin})
    return value


# -- the wire format ------------------------------------------------------------------------------


def test_a_record_says_which_budget_who_and_the_cut() -> None:
    """Key ``<group>/<tenant>`` (compaction keeps each budget's newest cut); the value, version 1, is
    read back exactly."""
    key, value = encode("orders-connector", "acme", "m1", CUT)
    assert key == b"orders-connector/acme"
    assert json.loads(value) == {
        "v": 1,
        "group": "orders-connector",
        "tenant": "acme",
        "by": "m1",
        "at": CUT.at,
        "estimate": 0.8,
        "factor": 0.4,
        "resume": 0.68,
        "hold_until": CUT.hold_until,
    }
    assert decode(value) == ("orders-connector", "acme", "m1", CUT)


def test_fields_a_reader_does_not_know_are_ignored() -> None:
    """A field added within version 1 by a newer writer does not stop an older reader."""
    _, value = encode("g", "acme", "m1", CUT)
    assert decode(json.dumps({**json.loads(value), "reason": "429"}).encode())[3] == CUT


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 2, "group": "g"}', "version 2"),
        (b'{"group": "g"}', "version None"),
        (b'{"v": 1, "group": "g", "tenant": "a", "by": "m"}', "a field missing or invalid"),
        (json.dumps({**json.loads(encode("g", "a", "m", CUT)[1]), "factor": 0}).encode(), "a field"),
        (json.dumps({**json.loads(encode("g", "a", "m", CUT)[1]), "at": True}).encode(), "a field"),
        (json.dumps({**json.loads(encode("g", "a", "m", CUT)[1]), "at": "soon"}).encode(), "a field"),
    ],
)
def test_a_record_this_version_cannot_follow_is_named_why(value: bytes, kind: str) -> None:
    """Another version, or a broken record, is not followed (a factor of 0 would stop the budget)."""
    with pytest.raises(Unreadable) as caught:
        decode(value)
    assert caught.value.kind.startswith(kind)


# -- members sharing cuts -------------------------------------------------------------------------


def test_a_429_on_one_member_slows_every_member_of_the_budget() -> None:
    """Found on the real broker (issue 20): the member whose requests hit the empty bucket slowed
    while the other never saw a 429 and kept its whole share. Now the other follows the cut, tens of
    milliseconds later: the same factor, the same hold; a budget of another name is not touched."""

    seen = Metrics(), Metrics()

    async def main() -> tuple[Cut, Cut, float, float, float, int]:
        topic = PaceTopic(delay=0.05)
        async with (
            member(topic.log_for(), "m0", metrics=seen[0]) as a,
            member(topic.log_for(), "m1", metrics=seen[1]) as b,
        ):
            hit, other, unrelated = pacer(), pacer(partitions=(2, 3)), pacer("bolt", (2, 3))
            a.attach(hit)
            b.attach(other)
            b.attach(unrelated)
            await asyncio.sleep(1.0)
            hit.observe(True)
            await asyncio.sleep(0.2)
            made = hit.adaptation.last_cut  # type: ignore[attr-defined]
            followed = other.adaptation.last_cut  # type: ignore[attr-defined]
            return made, followed, other.held_for, other.rate, unrelated.rate, b.followed

    made, followed, held_for, rate, unrelated, count = virtual(main)
    assert followed == made
    assert made.factor == 0.5
    assert held_for == pytest.approx(2.0 - 0.2, abs=0.01)
    assert rate == pytest.approx(0.5 * 5.0 / 2 / 1.01, rel=0.01)
    assert unrelated == pytest.approx(5.0 / 2 / 1.01, rel=0.01)
    assert count == 1
    assert (cuts(seen[0], "429"), cuts(seen[1], "fleet")) == (1.0, 1.0)
    assert cuts(seen[1], "429") is None


def test_a_member_starting_later_follows_the_cut_in_force() -> None:
    """The topic is read from its beginning: a member that joins (or restarts) paces at the fleet's
    factor before its first request, even for a budget whose pacer is made after the cut was read."""

    async def main() -> tuple[Cut, Cut]:
        topic = PaceTopic(delay=0.05)
        async with member(topic.log_for(), "m0") as a:
            hit = pacer()
            a.attach(hit)
            await asyncio.sleep(1.0)
            hit.observe(True)
            await asyncio.sleep(5.0)
            async with member(topic.log_for(), "m1") as b:
                await asyncio.sleep(1.0)
                late = pacer(partitions=(2, 3))
                b.attach(late)
                return hit.adaptation.last_cut, late.adaptation.last_cut  # type: ignore[attr-defined]

    made, followed = virtual(main)
    assert followed == made


def test_cuts_of_another_group_are_not_followed() -> None:
    """Two deployments may share the topic (their budgets are their own)."""

    async def main() -> tuple[Cut, int, int]:
        topic = PaceTopic(delay=0.05)
        async with (
            member(topic.log_for(), "m0", group="g") as a,
            member(topic.log_for(), "x", group="h") as b,
        ):
            mine, theirs = pacer(), pacer()
            a.attach(mine)
            b.attach(theirs)
            await asyncio.sleep(1.0)
            mine.observe(True)
            await asyncio.sleep(1.0)
            return theirs.adaptation.last_cut, a.followed, b.followed  # type: ignore[attr-defined]

    cut, followed_a, followed_b = virtual(main)
    assert cut.at == float("-inf")
    assert (followed_a, followed_b) == (0, 0)


def test_a_record_of_an_unknown_version_is_skipped_with_one_log_line() -> None:
    """A newer writer's version 2: this member paces on its own 429s for it, and says so once."""

    async def main() -> tuple[Cut, list[dict[str, Any]]]:
        topic = PaceTopic(delay=0.05)
        with capture_logs() as logs:
            async with member(topic.log_for(), "m0") as a:
                own = pacer()
                a.attach(own)
                for _ in range(3):
                    _, value = encode("g", "acme", "m9", CUT)
                    topic.write(b"g/acme", json.dumps({**json.loads(value), "v": 2}).encode())
                await asyncio.sleep(1.0)
        return own.adaptation.last_cut, logs  # type: ignore[attr-defined]

    cut, logs = virtual(main)
    assert cut.at == float("-inf")
    skipped = [line for line in logs if line["event"] == "pace_signal_skipped"]
    assert len(skipped) == 1
    assert skipped[0]["reason"] == "version 2"
    assert skipped[0]["reads_version"] == VERSION


# -- when the topic is missing or unreachable -----------------------------------------------------


def test_without_the_topic_each_member_paces_on_its_own_429s() -> None:
    """The topic does not exist: one ``pace_topic_missing`` line, nothing written, and a member's own
    429s still cut its pace."""

    async def main() -> tuple[bool, float, int, list[dict[str, Any]]]:
        topic = PaceTopic(exists=False)
        with capture_logs() as logs:
            async with member(topic.log_for(), "m0") as a:
                own = pacer()
                a.attach(own)
                own.observe(True)
                await asyncio.sleep(0.5)
                return a.active, own.adaptation.factor(START), len(topic.records), logs  # type: ignore[attr-defined]

    active, factor, written, logs = virtual(main)
    assert not active
    assert factor == 0.5
    assert written == 0
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == ["pace_topic_missing"]


def test_a_topic_that_cannot_be_opened_is_logged_and_delivery_goes_on() -> None:
    """The broker refuses at start: ``pace_topic_unavailable``, and the member runs without it."""

    class Refusing:
        async def __aenter__(self) -> PaceLog:
            raise ConnectionError("broker unreachable")

        async def __aexit__(self, *exc: object) -> None:
            return None

    async def main() -> tuple[bool, list[dict[str, Any]]]:
        with capture_logs() as logs:
            async with member(Refusing(), "m0") as a:  # type: ignore[arg-type]
                a.attach(pacer())
                return a.active, logs

    active, logs = virtual(main)
    assert not active
    assert logs[0]["event"] == "pace_topic_unavailable"
    assert "broker unreachable" in logs[0]["error"]


def test_a_broker_hiccup_is_logged_once_and_sharing_resumes_after_it() -> None:
    """While the topic cannot be reached, writes and reads fail (one line each, nothing raised, the
    member's own cut still applies); once it can, the next cut reaches the other member."""

    async def main() -> tuple[Cut, Cut, Cut, list[str]]:
        topic = PaceTopic(delay=0.05)
        up = {"m0": True}
        async with AsyncExitStack() as stack:
            with capture_logs() as logs:
                a = await stack.enter_async_context(member(topic.log_for(lambda: up["m0"]), "m0"))
                b = await stack.enter_async_context(member(topic.log_for(), "m1"))
                hit, other = pacer(), pacer(partitions=(2, 3))
                a.attach(hit)
                b.attach(other)
                await asyncio.sleep(1.0)
                up["m0"] = False
                hit.observe(True)
                await asyncio.sleep(5.0)
                during = other.adaptation.last_cut  # type: ignore[attr-defined]
                first = hit.adaptation.last_cut  # type: ignore[attr-defined]
                up["m0"] = True
                await asyncio.sleep(60.0)
                hit.observe(True)
                await asyncio.sleep(1.0)
                after = other.adaptation.last_cut  # type: ignore[attr-defined]
                assert after == hit.adaptation.last_cut  # type: ignore[attr-defined]
        events = [line["event"] for line in logs if line["log_level"] in ("warning", "info")]
        return during, first, after, events

    during, first, after, events = virtual(main)
    assert during.at == float("-inf"), "the cut made while unreachable never arrived"
    assert first.factor == 0.5, "the member's own cut applied all the same"
    assert after.at > first.at
    assert events.count("pace_publish_failed") == 1
    assert events.count("pace_read_failed") == 1
    assert "pace_publish_recovered" in events
    assert "pace_read_recovered" in events
