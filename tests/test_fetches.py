"""A fetch aiokafka drops before its records were all taken is freed at once (``connector._fetches``),
not left, with its buffer, to the cyclic garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from connector._fetches import release_dropped_fetches

TP = TopicPartition("orders", 0)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees anything meanwhile."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def fetched(n: int) -> PartitionRecords:
    """A fetch of ``n`` records, as aiokafka keeps it (the batch parsed by its C extension)."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1024 * 1024,
    )  # fmt: skip
    for i in range(n):
        builder.append(i, timestamp=None, key=b"k", value=b"v" * 100, headers=[])
    records = MemoryRecords(bytes(builder.build()))
    return PartitionRecords(TP, records, [], 0, None, None, False, 0)


@dataclass
class Position:
    """A partition's state in the consumer's assignment, as a fetch reads it."""

    paused: bool
    position: int

    def consumed_to(self, offset: int) -> None:
        self.position = offset


@dataclass
class Assignment:
    """The consumer's assignment, as a fetch reads it: one partition's state."""

    state: Position
    active: bool = True

    def state_value(self, tp: Any) -> Position:
        return self.state


@pytest.mark.parametrize("paused", [True, False], ids=["paused", "sought"])
def test_a_fetch_dropped_before_its_records_were_taken_is_freed_at_once(
    paused: bool, no_collector: None
) -> None:
    """One record of the fetch was taken, then the partition was paused (the read-ahead bound) or
    sought elsewhere (the horizon): aiokafka drops the fetch, and its buffer goes with it."""
    assert release_dropped_fetches()
    records = fetched(5)
    next(records)  # its generator is suspended inside the fetch: the cycle aiokafka keeps
    gone = weakref.ref(records)
    state = Position(paused, 1 if paused else 7)
    result = FetchResult(TP, assignment=Assignment(state), partition_records=records, backoff=0)
    del records
    assert result.check_assignment(TP) is False, "dropped: paused or sought"
    assert gone() is None, "freed as it was dropped, not left to the garbage collector"


def test_a_fetch_still_read_is_kept_and_read_whole() -> None:
    assert release_dropped_fetches()
    state = Position(False, 0)
    result = FetchResult(TP, assignment=Assignment(state), partition_records=fetched(3), backoff=0)
    assert [r.offset for r in result.getall()] == [0, 1, 2]
    assert state.position == 3


def test_wrapping_twice_wraps_once() -> None:
    assert release_dropped_fetches()
    method = FetchResult.check_assignment
    assert release_dropped_fetches()
    assert FetchResult.check_assignment is method
