"""The parking topic's reader on the broker (``connector/park/log.py``, ``KafkaParkLog.read``), with
aiokafka's consumer reduced to what decides whether a read finds its records: a seek drops what was
fetched for the partition, and a fetch asked for after a seek lands only once the long poll then in
flight for the other parking partitions is over, later than one read waits."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition as KafkaTP

from connector.config import KafkaSettings
from connector.park.log import KafkaParkLog

TOPIC = "orders.parked"
LAG_S = 0.3  # a long poll (fetch_max_wait_ms 500) ahead of the fetch: longer than a read waits (200 ms)


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset, self.key, self.value, self.headers, self.timestamp = offset, b"k", b"{}", (), 0


_NO_WRITER = object()  # reads only: the writer is never asked


class _Consumer:
    """Records 0-9 on every partition; a partition's fetch lands ``LAG_S`` after its last seek,
    and a seek drops what had landed."""

    def __init__(self) -> None:
        self.position: dict[KafkaTP, int] = {}
        self.fetched: dict[KafkaTP, list[_Message]] = {}
        self.seeks = 0
        self._fetches: dict[KafkaTP, asyncio.TimerHandle] = {}
        self._landed = asyncio.Event()

    def assign(self, tps: list[KafkaTP]) -> None:
        self.position = {tp: self.position.get(tp, 0) for tp in tps}

    def seek(self, tp: KafkaTP, offset: int) -> None:
        self.seeks += 1
        self.position[tp] = offset
        self.fetched.pop(tp, None)
        if (pending := self._fetches.pop(tp, None)) is not None:
            pending.cancel()
        self._fetches[tp] = asyncio.get_running_loop().call_later(LAG_S, self._land, tp, offset)

    def _land(self, tp: KafkaTP, offset: int) -> None:
        self._fetches.pop(tp, None)
        self.fetched[tp] = [_Message(o) for o in range(offset, 10)]
        self._landed.set()

    async def getmany(self, tp: KafkaTP, timeout_ms: int, max_records: int) -> dict[KafkaTP, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while not self.fetched.get(tp) and loop.time() < deadline:
            self._landed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._landed.wait()
            except TimeoutError:
                break
        got = self.fetched.pop(tp, [])[:max_records]
        if got:
            self.position[tp] = got[-1].offset + 1
            return {tp: got}
        return {}


async def test_a_read_asked_again_at_the_same_offset_finds_what_was_fetched_meanwhile() -> None:
    """A read that came back empty (its fetch queued behind a long poll) and is asked again at the
    same offset is not sought again: a seek would drop what landed meanwhile and queue the fetch
    again, and at the replay's pace (one read of a parking partition a round) the partition could
    come back empty for minutes (upgrade test, many shops: a shop left parked on one partition)."""
    consumer = _Consumer()
    log = KafkaParkLog(KafkaSettings(), TOPIC, consumer, _NO_WRITER)  # type: ignore[arg-type]
    assert await log.read(2, 3, 500) == []  # its fetch lands after the read gave up
    await asyncio.sleep(LAG_S)  # the replay's next round: the records have landed
    again = await log.read(2, 3, 500)
    assert [r.offset for r in again] == list(range(3, 10))
    assert consumer.seeks == 1
    # Reading on where the last read ended needs no seek either; elsewhere it does.
    await log.read(2, 10, 500)
    assert consumer.seeks == 1
    await log.read(2, 5, 500)
    assert consumer.seeks == 2


async def test_a_partition_added_to_the_reader_seeks_every_one_again() -> None:
    """Assigning another parking partition resets the consumer's positions: the next read of one
    read before seeks again."""
    consumer = _Consumer()
    log = KafkaParkLog(KafkaSettings(), TOPIC, consumer, _NO_WRITER)  # type: ignore[arg-type]
    await log.read(2, 0, 500)
    await log.read(5, 0, 500)  # assigns partition 5 too
    before = consumer.seeks
    await log.read(2, 0, 500)
    assert consumer.seeks == before + 1
