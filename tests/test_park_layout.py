"""The parking layout (``connector/park/_layout.py``): a source partition parks on its index in the
layout modulo the parking topic's partitions; a missing topic is reported as none (0 partitions)."""

from __future__ import annotations

import zlib

from connector.park._layout import ParkLayout
from connector.structs import Record, TopicPartition


class _Log:
    def __init__(self, partitions: int) -> None:
        self.count = partitions

    async def partitions(self) -> int:
        return self.count

    async def end(self, partition: int) -> int:
        return 0

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        return []

    async def append(self, *_: object) -> None:
        raise AssertionError("the layout writes nothing")


async def test_a_source_partition_parks_on_its_index_in_the_layout_modulo_the_topics_partitions() -> None:
    layout = ParkLayout(_Log(4), "orders.parked", may_park=True)
    await layout.find()
    assert layout.partitions == 4
    layout.set_layout({"returns": 2, "orders": 3})  # ordered by topic: orders 0..2, then returns 0..1
    got = [layout.queue_of(TopicPartition(t, p)) for t, p in [("orders", 0), ("orders", 2), ("returns", 1)]]
    assert got == [0, 2, 0]


async def test_a_partition_outside_the_layout_parks_by_a_hash_of_its_name() -> None:
    layout = ParkLayout(_Log(3), "orders.parked", may_park=True)
    await layout.find()
    layout.set_layout({"orders": 2})
    tp = TopicPartition("other", 7)
    assert layout.queue_of(tp) == zlib.crc32(str(tp).encode()) % 3


async def test_a_parking_topic_not_there_has_no_partitions_until_it_is_found() -> None:
    log = _Log(0)
    layout = ParkLayout(log, "orders.parked", may_park=False)
    await layout.find()
    assert layout.partitions == 0
    layout.set_layout({"orders": 4})
    assert {layout.queue_of(TopicPartition("orders", p)) for p in range(4)} == {0}
    log.count = 2  # created since
    await layout.find()
    assert layout.partitions == 2
    assert [layout.queue_of(TopicPartition("orders", p)) for p in range(4)] == [0, 1, 0, 1]
