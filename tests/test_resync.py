"""A member's side of the resync topic (:class:`connector.resync.Resyncer`), with an in-memory topic
and source: it resyncs the partitions it owns while a request of its group is active, leaves those
done, stops a partition revoked or a request cancelled, and reads past records it cannot read."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field

from connector.clock import SYSTEM_CLOCK
from connector.config import ResyncSettings
from connector.resync import Resyncer
from connector.resynclog import Progress, Request, State, Unreadable, decode, encode
from connector.structs import TopicPartition
from tests.test_resyncpart import Log, Newer, Reader, Shops

A, B = TopicPartition("orders", 0), TopicPartition("orders", 1)


@dataclass
class Topic:
    """The resync topic: what was written, read once each."""

    values: list[bytes] = field(default_factory=list)
    read_up_to: int = 0

    async def __aenter__(self) -> Topic:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def partitions(self) -> int:
        return 1

    async def publish(self, key: bytes, value: bytes) -> None:
        self.values.append(value)

    async def read(self) -> list[bytes]:
        new, self.read_up_to = self.values[self.read_up_to :], len(self.values)
        return new

    def progress(self) -> list[Progress]:
        out = []
        for value in self.values:
            with contextlib.suppress(Unreadable):
                if isinstance(record := decode(value), Progress):
                    out.append(record)
        return out


@dataclass
class Owned:
    partitions: set[TopicPartition] = field(default_factory=lambda: {A, B})
    tokens: dict[TopicPartition, object] = field(default_factory=dict)

    def owned(self) -> dict[TopicPartition, object]:
        return {tp: self.tokens.setdefault(tp, object()) for tp in self.partitions}

    def read_below(self, tp: TopicPartition, assignment: object) -> int | None:
        owned = tp in self.partitions and self.tokens.get(tp) is assignment
        return 10**9 if owned else None  # the live traffic has read everything

    def parked(self, tp: TopicPartition, tenant: str) -> bool:
        return False

    def reassign(self, tp: TopicPartition) -> None:
        """Revoked and assigned again between two looks."""
        self.tokens[tp] = object()


class Source:
    """Two partitions of one log each."""

    def __init__(self, keys: list[str]) -> None:
        self.logs = {A: Log(list(keys)), B: Log(list(keys))}

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return await self.logs[tp].bounds(tp)

    async def offset_at(self, tp: TopicPartition, since: float) -> int | None:
        return await self.logs[tp].offset_at(tp, since)

    async def read(self, tp: TopicPartition, offset: int) -> list:  # type: ignore[type-arg]
        return await self.logs[tp].read(tp, offset)


def member(topic: Topic, owned: Owned, shops: Shops, source: Source) -> Resyncer:
    resyncer = Resyncer(topic, source, group="g", member="m-1", settings=ResyncSettings(look_seconds=0.01),
                        clock=SYSTEM_CLOCK)  # fmt: skip
    resyncer.connect(owned=owned, shops=shops, reader=Reader(), newer=Newer())
    return resyncer


async def until(condition: object, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.01)


def test_it_resyncs_the_partitions_it_owns_of_its_groups_active_request() -> None:
    async def scenario() -> None:
        topic, owned, shops = Topic(), Owned({A}), Shops()
        topic.values.append(b"not a record")
        topic.values.append(encode(Request("another group", "r-9", None, None, 0.2, 0.0))[1])
        async with member(topic, owned, shops, Source(["a", "b"])):
            await asyncio.sleep(0.1)
            assert shops.shop.sent == [], "no request of its group yet"
            await topic.publish(*encode(Request("g", "r-1", None, None, 0.2, 0.0)))
            await until(lambda: any(p.done for p in topic.progress()))
            assert sorted(shops.shop.sent) == [("a", 0), ("b", 1)]
            assert {(p.topic, p.partition) for p in topic.progress()} == {(A.topic, A.partition)}
            owned.partitions = {A, B}  # B assigned: resynced; A, done, not again
            await until(lambda: len([p for p in topic.progress() if p.done]) == 2)
            await asyncio.sleep(0.1)
            assert len(shops.shop.sent) == 4

    asyncio.run(scenario())


def test_a_cancelled_request_or_a_revoked_partition_stops_its_resync() -> None:
    async def scenario() -> None:
        topic, owned, shops = Topic(), Owned({A, B}), Shops()
        source = Source(["a"] * 3)
        source.logs[A].keys = [f"k{i}" for i in range(50)]
        request = Request("g", "r-1", None, None, 0.2, 0.0)
        async with member(topic, owned, shops, source):
            await topic.publish(*encode(request))
            await until(lambda: any(p.done and p.partition == 1 for p in topic.progress()))
            owned.partitions = {B}  # A revoked mid-way
            await asyncio.sleep(0.1)
            sent = len(shops.shop.sent)
            await asyncio.sleep(0.2)
            assert len(shops.shop.sent) == sent, "nothing more for a partition revoked"
            assert not any(p.done and p.partition == 0 for p in topic.progress())
            owned.partitions = {A, B}
            await topic.publish(*encode(dataclasses.replace(request, state=State.CANCELLED)))
            await asyncio.sleep(0.3)
            assert not any(p.done and p.partition == 0 for p in topic.progress()), "cancelled: not resumed"

    asyncio.run(scenario())


@dataclass
class Forgetful(Shops):
    """A shop whose line forgets what it was handed (its partition was revoked) and never tells."""

    handed: list[str] = field(default_factory=list)

    def resending(self, tenant: str) -> Forgetful:
        return self

    def resend(self, change: object, told: object) -> None:
        self.handed.append(getattr(change, "key", ""))

    def withdraw(self, told: object) -> None:
        return None


def test_a_partition_revoked_and_assigned_again_between_two_looks_starts_again_from_its_progress() -> None:
    """Its shops' lines forgot what it handed them on the revoke: waiting for them would hang the
    partition's resync for good (found by the simulation: seed 3 with a resync, partitions added)."""

    async def scenario() -> None:
        topic, owned, shop = Topic(), Owned({A}), Forgetful()
        async with member(topic, owned, shop, Source(["a"])):  # type: ignore[arg-type]
            await topic.publish(*encode(Request("g", "r-1", None, None, 0.2, 0.0)))
            await until(lambda: shop.handed == ["a"])
            await asyncio.sleep(0.1)
            assert shop.handed == ["a"], "waits for it to end"
            owned.reassign(A)
            await until(lambda: shop.handed == ["a", "a"])

    asyncio.run(scenario())
