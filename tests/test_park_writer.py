"""The parking writer (``connector/park/_writer.py``): what is handed to it lands on the parking topic
in order and is resolved only once acknowledged; an append that fails is tried again, one refused for
its size is dead-lettered, and nothing is written for a partition being revoked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Resolution
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.park._writer import ParkWriter
from connector.parked import ParkState, unpack
from connector.structs import Record, TopicPartition
from tests.fakes import ParkPorts

TP = TopicPartition("orders", 3)


class _Log:
    """A parking topic of one partition, in memory: ``refuse`` appends fail before they are sent,
    an append over ``limit`` bytes is refused for its size, and with ``hold`` set acknowledgements
    wait until it is cleared."""

    def __init__(self, refuse: int = 0, limit: int = 10_000) -> None:
        self.records: list[Record] = []
        self.refuse = refuse
        self.limit = limit
        self.acks: set[asyncio.Task[None]] = set()
        self.hold = asyncio.Event()
        self.hold.set()

    async def partitions(self) -> int:
        return 1

    async def end(self, partition: int) -> int:
        return len(self.records)

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        return self.records[offset : offset + max_records]

    async def append(self, partition: int, key: Any, value: Any, headers: Any, timestamp_ms: int) -> Any:
        if self.refuse:
            self.refuse -= 1
            raise KafkaConnectionError("the broker is away")
        if len(value or b"") > self.limit:
            raise MessageSizeTooLargeError("the message is larger than max_request_size")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def ack() -> None:
            await self.hold.wait()
            self.records.append(
                Record(
                    "orders.parked", partition, len(self.records), key, value, tuple(headers), timestamp_ms
                )
            )
            done.set_result(len(self.records) - 1)

        self.acks.add(asyncio.create_task(ack()))
        return done


class _Wakes:
    def __init__(self) -> None:
        self.count = 0

    def wake(self) -> None:
        self.count += 1


@asynccontextmanager
async def _writing(
    log: _Log, ports: ParkPorts, metrics: Metrics | None = None, wakes: _Wakes | None = None
) -> AsyncIterator[tuple[ParkWriter, ParkState, Assignment]]:
    """A writer running, with ``TP`` owned and parking on partition 0."""
    assignment = Assignment()
    owned = assignment.add(TP)
    owned.status = PartitionStatus.OWNED
    state = owned.park = ParkState(0, "0000beef", 50)
    writer = ParkWriter(log, assignment, metrics or Metrics(), SYSTEM_CLOCK, wakes)
    writer.connect(ports)
    task = asyncio.create_task(writer.run())
    try:
        yield writer, state, assignment
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in time")


def _record(offset: int, size: int = 10) -> Record:
    return Record("orders", 3, offset, f"A-{offset}".encode(), b"x" * size, (), 1234)


async def test_parked_records_land_in_order_and_are_resolved_once_acknowledged() -> None:
    """Each record is resolved ``parked`` only once the topic acknowledged it (before, it counts as
    being written); the shop's replay starts where its first append landed, and the replay is woken."""
    log, ports, wakes = _Log(), ParkPorts(), _Wakes()
    log.records.append(Record("orders.parked", 0, 0, b"other", b"{}"))  # already there: not replayed
    log.hold.clear()
    async with _writing(log, ports, wakes=wakes) as (writer, state, _):
        first, second = _record(60), _record(61)
        writer.put(first, "acme", 0.0, None, state)
        writer.put(second, "acme", 0.0, None, state)
        await asyncio.sleep(0.05)
        assert ports.resolved == []
        assert state.writing["acme"] == 2
        log.hold.set()
        await _until(lambda: len(ports.resolved) == 2)
        assert ports.resolved == [(first, Resolution.PARKED), (second, Resolution.PARKED)]
        assert state.writing["acme"] == 0
        assert state.starts == {"acme": 1}
        assert state.last_written == 2
        assert wakes.count == 2
        originals = [unpack(r) for r in log.records[1:]]
        assert [(p.record.offset, p.tenant, p.token) for p in originals if p is not None] == [
            (60, "acme", "0000beef"),
            (61, "acme", "0000beef"),
        ]


async def test_an_append_that_fails_is_tried_again_until_it_lands() -> None:
    log, ports, metrics = _Log(refuse=2), ParkPorts(), Metrics()
    async with _writing(log, ports, metrics) as (writer, state, _):
        writer.put(_record(60), "acme", 0.0, None, state)
        await _until(lambda: ports.resolved)
        assert [r.offset for r, _ in ports.resolved] == [60]
        assert metrics.registry.get_sample_value("connector_park_write_failures_total") == 2


async def test_a_record_too_large_for_the_topic_is_dead_lettered_and_the_next_one_parked() -> None:
    log, ports = _Log(limit=1_000), ParkPorts()
    async with _writing(log, ports) as (writer, state, _):
        writer.put(_record(60, size=5_000), "acme", 0.0, None, state)
        writer.put(_record(61), "acme", 0.0, None, state)
        await _until(lambda: ports.resolved)
        assert [(r.offset, f.stage, f.tenant) for r, f in ports.dead] == [(60, "park", "acme")]
        assert [r.offset for r, _ in ports.resolved] == [61]
        assert state.writing["acme"] == 0


async def test_nothing_is_written_for_a_partition_being_revoked_and_flush_waits_for_what_is_on_its_way() -> (
    None
):
    log, ports = _Log(), ParkPorts()
    log.hold.clear()
    async with _writing(log, ports) as (writer, state, assignment):
        writer.put(_record(60), "acme", 0.0, None, state)
        await asyncio.sleep(0.05)
        flushed = asyncio.create_task(writer.flush(TP, timeout=5.0))
        await asyncio.sleep(0.05)
        assert not flushed.done()  # the append is on its way
        log.hold.set()
        await asyncio.wait_for(flushed, 1.0)
        assert [r.offset for r, _ in ports.resolved] == [60]
        owned = assignment.get(TP)
        assert owned is not None
        owned.status = PartitionStatus.REVOKING
        writer.put(_record(61), "acme", 0.0, None, state)
        await asyncio.sleep(0.05)
        assert len(log.records) == 1  # the next owner reads it from the partition itself
        assert [r.offset for r, _ in ports.resolved] == [60]
