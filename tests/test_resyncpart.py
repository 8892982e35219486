"""One partition's part of a resync, on an in-memory log: each order's newest record in range is
handed over once, orders with a newer record past the range or a newer state seen are skipped, the
progress is written after each batch and a new owner goes on from it; empty reads after a seek and
retention are lived through."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from connector._resends import Resent
from connector._resyncpart import PartitionResync, TooManyOrders
from connector.config import ResyncSettings
from connector.resynclog import Progress, Request, decode
from connector.structs import OrderChange, Record, TopicPartition

TP = TopicPartition("orders", 0)


@dataclass
class Log:
    """A partition: ``records[i]`` at offset ``first + i``; every other read comes back empty."""

    keys: list[str]
    first: int = 0
    empty_next: bool = True

    @property
    def end(self) -> int:
        return len(self.keys)

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return self.first, self.end

    async def offset_at(self, tp: TopicPartition, since: float) -> int | None:
        return int(since) if since < self.end else None

    async def read(self, tp: TopicPartition, offset: int) -> list[Record]:
        self.empty_next = not self.empty_next
        if not self.empty_next:
            return []
        offset = max(offset, self.first)
        return [
            Record(tp.topic, tp.partition, o, self.keys[o].encode(), json.dumps({"v": o}).encode())
            for o in range(offset, min(offset + 3, self.end))
        ]


class Reader:
    def peek(self, record: Record) -> OrderChange | None:
        key = (record.key or b"").decode()
        if key == "bad":
            return None
        tenant, _, order = key.rpartition("/")
        return OrderChange(record, order, "upsert", {"external_id": order}, tenant=tenant)


@dataclass
class Newer:
    keys: set[str] = field(default_factory=set)

    def supersedes(self, change: OrderChange) -> bool:
        return change.key in self.keys


@dataclass
class Shop:
    sent: list[tuple[str, int]] = field(default_factory=list)
    withdrawn: int = 0

    def resend(self, change: OrderChange, told: PartitionResync) -> None:
        self.sent.append((change.key, change.record.offset))
        asyncio.get_running_loop().call_soon(told.ended, change, Resent.SENT)

    def withdraw(self, told: PartitionResync) -> None:
        self.withdrawn += 1


@dataclass
class Shops:
    shop: Shop = field(default_factory=Shop)

    def resending(self, tenant: str) -> Shop | None:
        return self.shop if tenant != "gone" else None


@dataclass
class Out:
    written: list[Progress] = field(default_factory=list)

    async def publish(self, key: bytes, value: bytes) -> None:
        record = decode(value)
        assert isinstance(record, Progress)
        self.written.append(record)


def part(
    log: Log, request: Request, progress: Progress | None = None, newer: Newer | None = None, **settings: int
) -> tuple[PartitionResync, Shops, Out]:
    shops, out = Shops(), Out()
    resync = PartitionResync(
        request, TP, progress, source=log, out=out, reader=Reader(), newer=newer or Newer(), shops=shops,
        settings=ResyncSettings(**settings), member="m-1", wall=lambda: 100.0,
    )  # fmt: skip
    return resync, shops, out


ALL = Request("g", "r-1", None, None, 0.2, 0.0)


def test_each_orders_newest_record_in_range_is_handed_over_once_and_progress_ends_done() -> None:
    log = Log(["a", "b", "a", "bad", "c", "b", "a"])
    resync, shops, out = part(log, ALL, batch=2)
    last = asyncio.run(resync.run())
    assert sorted(shops.shop.sent) == [("a", 6), ("b", 5), ("c", 4)]
    assert last.done
    assert last.at == last.until == 7
    assert (last.orders, last.sent, last.skipped) == (3, 3, 0)
    assert [p.at for p in out.written] == sorted(p.at for p in out.written), "progress only moves on"
    assert len(out.written) >= 4, "begun, counted, a batch at a time, done"
    assert shops.shop.withdrawn == 1


def test_since_a_newer_state_seen_a_shop_not_served_and_one_shop_only() -> None:
    log = Log(["s/a", "s/b", "s/c", "gone/d", "t/e"])
    resync, shops, _ = part(log, Request("g", "r-1", None, 1.0, 0.2, 0.0), newer=Newer({"s/c"}))
    last = asyncio.run(resync.run())
    assert shops.shop.sent == [("s/b", 1), ("t/e", 4)]
    assert (last.start, last.orders, last.sent, last.skipped) == (1, 4, 2, 2)
    resync, shops, _ = part(Log(["s/a", "t/b"]), Request("g", "r-1", "t", None, 0.2, 0.0))
    asyncio.run(resync.run())
    assert shops.shop.sent == [("t/b", 1)]


def test_a_new_owner_goes_on_from_the_progress_and_orders_past_the_range_are_the_live_trafficss() -> None:
    log = Log(["a", "b", "c", "d", "b"])  # b's record at 4 is past the range [0, 4)
    begun = Progress("g", "r-1", TP.topic, TP.partition, 0, 4, 2, sent=2)
    resync, shops, _ = part(log, ALL, progress=begun)
    last = asyncio.run(resync.run())
    assert shops.shop.sent == [("c", 2), ("d", 3)]
    assert (last.sent, last.skipped) == (4, 0), "counted on from the progress"
    done = Progress("g", "r-1", TP.topic, TP.partition, 0, 4, 4, done=True)
    resync, shops, out = part(log, ALL, progress=done)
    asyncio.run(resync.run())
    assert shops.shop.sent == []
    assert out.written == []


def test_records_deleted_by_retention_are_skipped_and_too_many_orders_stop_it() -> None:
    log = Log(["a", "b", "c", "d"], first=2)
    resync, shops, _ = part(log, ALL)
    asyncio.run(resync.run())
    assert shops.shop.sent == [("c", 2), ("d", 3)]
    resync, _, _ = part(Log(["a", "b", "c"]), ALL, max_orders_per_partition=2)
    with pytest.raises(TooManyOrders, match="max_orders_per_partition"):
        asyncio.run(resync.run())
