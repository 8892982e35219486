"""Parking's bookkeeping: which parking records are replayed for a partition, what its commits carry
so that the next owner replays exactly those, and how a partition's parking state is taken up from
its last commit (the flows themselves: the many-shop simulation and tests/integration/test_tenants.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from random import Random
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from connector import constants as wire
from connector import metadata
from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import Settings, TenantsSettings
from connector.fence import Fence
from connector.metadata import CommitMeta
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.park import Parking, ParkState, RecordsGone
from connector.parked import unpack as _unpack
from connector.structs import Record, TopicPartition
from connector.tenancy import Tenancy
from tests.fakes import ParkPorts

TP = TopicPartition("orders", 3)


class _Log:
    """A parking topic of two partitions, in memory."""

    def __init__(self) -> None:
        self.records: dict[int, list[Record]] = {0: [], 1: []}

    async def partitions(self) -> int:
        return len(self.records)

    async def end(self, partition: int) -> int:
        return len(self.records[partition])

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        return self.records[partition][offset : offset + max_records]

    async def append(self, partition: int, key: Any, value: Any, headers: Any, timestamp_ms: int) -> Any:
        log = self.records[partition]
        log.append(Record("orders.parked", partition, len(log), key, value, tuple(headers), timestamp_ms))
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(len(log) - 1)
        return done


@asynccontextmanager
async def _assigned(
    tmp_path: Path,
    log: _Log,
    meta: CommitMeta,
    committed: int | None = 50,
    warmed: bool = False,
    metrics: Metrics | None = None,
    assignment: Assignment | None = None,
    ports: ParkPorts | None = None,
) -> AsyncIterator[tuple[Parking, ParkState | None]]:
    """A member's parking, entered (its loops running), with ``TP`` assigned from a commit at
    ``committed`` carrying ``meta``; and the partition's parking state."""
    tenants = tmp_path / "tenants.toml"
    tenants.write_text('[acme]\nkind = "loop"\nbase_url = "http://acme"\napi_key = "k"\n')
    settings = Settings(tenants=TenantsSettings(path=str(tenants)))
    fence = Fence(SYSTEM_CLOCK, 10.0, 1.0)
    tenancy = Tenancy(settings, _no_sink, Metrics(), clock=SYSTEM_CLOCK, rng=Random(1), fence=fence)
    assignment = assignment if assignment is not None else Assignment()
    ports = ports if ports is not None else ParkPorts()
    ports.warm = warmed  # else the warm-up is never over: nothing is replayed while a test looks
    parking = Parking(
        settings,
        log,
        assignment,
        Coalescer(),
        tenancy,
        metrics or Metrics(),
        clock=SYSTEM_CLOCK,
        rng=Random(1),
    )
    ports.connect(parking)
    async with parking:
        parking.set_layout({"orders": 4})
        assignment.add(TP)
        assert await parking.assign(TP, meta, committed)
        part = assignment.get(TP)
        yield parking, part.park if part is not None else None


def _no_sink(*_: Any) -> Any:
    raise AssertionError("no vendor in these tests")


def _parked(
    offset: int, token: str, origin: TopicPartition = TP, at: int = 0, tenant: bytes = b"acme"
) -> Record:
    headers = (
        ("x-trace", b"abc"),
        (wire.H_PARKED_FROM, f"{origin.topic}/{origin.partition}/{offset}".encode()),
        (wire.H_TENANT, tenant),
        (wire.H_PARKED_BY, token.encode()),
    )
    return Record("orders.parked", 0, at, b"k", b"{}", headers, 1234)


def test_a_parking_record_gives_back_the_original_at_its_place() -> None:
    """Replayed, the event is the one read from its partition: same topic, partition and offset (so it
    is ordered, fenced and paced as its partition's), its own headers only, and where it was parked."""
    parked = _unpack(_parked(41, "aaaa0001", at=7))
    assert parked is not None
    assert (parked.tenant, parked.token, parked.hold_until) == ("acme", "aaaa0001", 0.0)
    r = parked.record
    assert (r.tp, r.offset, r.parked_at, r.headers, r.timestamp_ms) == (
        TP,
        41,
        7,
        (("x-trace", b"abc"),),
        1234,
    )
    assert _unpack(Record("orders.parked", 0, 3, b"k", b"{}")) is None, "not one of ours"


async def test_records_parked_below_the_committed_offset_from_the_shops_replay_start_count(
    tmp_path: Path,
) -> None:
    """This assignment's own records count; another writer's only below the committed offset (above
    it the event is read again from the partition, and that copy counts), and only from where its
    shop's replay starts (before it, everything of the shop was resolved); another partition's never."""
    meta = CommitMeta(0.0, park_partition=1, parked=("acme",), replay_from=(("acme", 4), ("bolt", 9)))
    async with _assigned(tmp_path, _Log(), meta, committed=50) as (parking, part):
        assert part is not None
        own = part.token
        replay = parking.replay
        assert replay is not None

        def valid(
            offset: int, token: str, at: int, tenant: bytes = b"acme", origin: TopicPartition = TP
        ) -> bool:
            parked = _unpack(_parked(offset, token, origin, at, tenant))
            assert parked is not None
            return replay.valid(part, TP, parked, at)

        assert valid(49, "aaaa0001", at=4)
        assert not valid(50, "aaaa0001", at=4), "parked, then its member died before committing past it"
        assert not valid(49, "aaaa0001", at=3), "before the shop's replay start: resolved already"
        assert valid(49, "aaaa0001", at=9, tenant=b"bolt")
        assert not valid(49, "aaaa0001", at=8, tenant=b"bolt")
        assert not valid(10, "aaaa0001", at=20, tenant=b"cask"), "a shop with nothing to replay"
        assert valid(900, own, at=30)
        assert not valid(10, own, at=30, origin=TopicPartition("orders", 1))


async def test_a_commit_says_where_each_shops_replay_resumes(tmp_path: Path) -> None:
    """Each shop's replay resumes at its own first unresolved parked record, or where reading goes
    on; ``park_from`` (read by 0.1.0 members) is the earliest of them; the writer tokens (0.1.0's
    rule) end with this member's, up to the offset committed."""
    log = _Log()
    for _ in range(12):
        log.records[1].append(_parked(1, "other"))
    meta = CommitMeta(
        0.0, park_partition=1, parked=("acme", "bolt"), replay_from=(("acme", 2), ("bolt", 5)),
        tokens=(("aaaa0001", 20),),
    )  # fmt: skip
    async with _assigned(tmp_path, log, meta) as (_, part):
        assert part is not None
        assert (part.q, part.end_at_assign, part.position) == (1, 12, 2)
        first = part.commit_meta(30)
        assert first.replay_from == (("acme", 2), ("bolt", 5))
        assert (first.park_from, first.parked, first.park_partition) == (2, ("acme", "bolt"), 1)
        assert first.tokens == (("aaaa0001", 20), (part.token, 30))
        acme = part.scan("acme")
        for offset in (2, 3, 6):
            acme.track(offset)
        acme.resolve(2)
        part.position = 8
        later = part.commit_meta(31)
        assert later.replay_from == (("acme", 3), ("bolt", 8))
        assert later.park_from == 3


async def test_v1_state_replays_every_parked_shop_from_park_from_on_its_recomputed_partition(
    tmp_path: Path,
) -> None:
    """A commit of 0.1.0 names one replay start for all parked shops, and no parking partition: the
    partition is the one 0.1.0 computes (its index in the layout modulo the parking topic's)."""
    log = _Log()
    log.records[1].extend(_parked(1, "other") for _ in range(3))
    v1 = CommitMeta(0.0, version=1, park_from=1, parked=("acme", "bolt"), tokens=(("aaaa0001", 20),))
    async with _assigned(tmp_path, log, v1) as (_, part):
        assert part is not None
        assert part.q == 1, "partition 3 of 4, two parking partitions"
        assert part.starts == {"acme": 1, "bolt": 1}


async def test_a_recorded_parking_partition_is_kept_whatever_the_layout_says(tmp_path: Path) -> None:
    """Once something was parked, the commit records the parking partition: partitions added to the
    source topic (or the parking topic grown) must not move it."""
    log = _Log()
    log.records[0].extend(_parked(1, "other") for _ in range(3))
    meta = CommitMeta(0.0, park_partition=0, parked=("acme",), replay_from=(("acme", 0),))
    async with _assigned(tmp_path, log, meta) as (_, part):
        assert part is not None
        assert part.q == 0


async def test_parking_state_waits_for_a_parking_topic_that_is_not_there(tmp_path: Path) -> None:
    """With parking state in its last commit, a partition cannot be taken up until the parking topic
    can be read (its replays would be lost); without it, it can."""

    class _Missing(_Log):
        async def partitions(self) -> int:
            return 0

    tenants = tmp_path / "tenants.toml"
    tenants.write_text('[acme]\nkind = "loop"\nbase_url = "http://acme"\napi_key = "k"\n')
    settings = Settings(tenants=TenantsSettings(path=str(tenants)))
    tenancy = Tenancy(
        settings, _no_sink, Metrics(), clock=SYSTEM_CLOCK, rng=Random(1), fence=Fence(SYSTEM_CLOCK, 10.0, 1.0)
    )
    assignment = Assignment()
    parking = Parking(
        settings, _Missing(), assignment, Coalescer(), tenancy, Metrics(), clock=SYSTEM_CLOCK, rng=Random(1)
    )
    ParkPorts(warm=False).connect(parking)
    async with parking:
        assignment.add(TP)
        stated = CommitMeta(0.0, park_partition=0, parked=("acme",), replay_from=(("acme", 0),))
        assert not await parking.assign(TP, stated, 10)
        assert await parking.assign(TP, CommitMeta(0.0), 10)


def test_a_commit_stays_within_the_brokers_limit_however_many_rebalances_went_by() -> None:
    """Found in review: with one parked record that never resolves, every rebalance added a writer
    token to the metadata (~19 bytes a partition); after some hundred the commit went over the broker's
    4 KB, was refused whole, and every partition of the member lost its lease. Tokens are read by 0.1.0
    members only: the newest eight are kept."""
    meta = CommitMeta(0.0, park_partition=0, parked=("acme",), replay_from=(("acme", 3),))
    sizes = []
    for rebalance in range(300):
        state = ParkState(0, f"{rebalance:08x}", start=1_000 + rebalance)
        state.parked, state.starts, state.tokens = (
            set(meta.parked),
            dict(meta.replay_starts),
            dict(meta.tokens),
        )
        state.scan("acme").track(3)  # stuck: never resolves
        meta = state.commit_meta(1_000 + rebalance)
        sizes.append(len(metadata.encode(meta).encode()))
    assert max(sizes) <= metadata.MAX_BYTES
    assert sizes[-1] == sizes[-2], "grows no more"
    assert len(meta.tokens) == 8
    assert meta.replay_from == (("acme", 3),)


def test_a_shop_is_parked_on_a_partition_only_while_its_metadata_fits() -> None:
    """Shop names of 64 characters: fewer fit than the 50 tenants.max_parked allows; the one that does
    not is refused (it holds the partition back as if parking were off) rather than making every commit
    of the partition refused."""
    state = ParkState(0, "0badcafe", start=0)
    budget = metadata.MAX_BYTES - 24 * 8
    parked = 0
    while state.fits_with(f"{parked:064d}", budget):
        state.parked.add(f"{parked:064d}")
        state.starts[f"{parked:064d}"] = 10**12
        parked += 1
    assert 15 < parked < 50
    state.tokens = {f"{i:08x}": 10**15 for i in range(8)}
    assert len(metadata.encode(state.commit_meta(10**15)).encode()) <= metadata.MAX_BYTES


async def test_parked_records_deleted_by_retention_are_said_lost_not_skipped_silently(tmp_path: Path) -> None:
    """The parking reader used to reset to the log end when its offset was gone (aiokafka's default
    ``latest``), skipping parked events without a word. Now the loss is counted and logged, and the
    replay goes on from what is left."""

    class _Retained(_Log):
        async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
            if offset < 2:
                raise RecordsGone(2)
            return await super().read(partition, offset, max_records)

    log = _Retained()
    log.records[0].extend(_parked(1, "other", at=i) for i in range(4))
    meta = CommitMeta(0.0, park_partition=0, parked=("acme",), replay_from=(("acme", 0),))
    metrics = Metrics()
    async with _assigned(tmp_path, log, meta, warmed=True, metrics=metrics) as (_, part):
        assert part is not None
        for _ in range(100):
            if part.position is not None and part.position >= 2:
                break
            await asyncio.sleep(0.01)
        assert part.position is not None
        assert part.position >= 2
        assert part.starts["acme"] >= 2
        assert metrics.park_records_lost._value.get() == 2  # type: ignore[attr-defined]


async def test_nothing_parked_is_handed_over_while_its_partition_is_revoked(tmp_path: Path) -> None:
    """Found by the simulation (many-shop seed 807, before partitions had one owner): parked events
    were still handed over while their partition was being revoked, after its changes had been
    dropped; assigned the partition again, the member found them in its coalescer and skipped their
    replay as identical."""
    log = _Log()
    log.records[0].extend(_parked(i, "0000beef", at=i) for i in range(3))
    ports = ParkPorts()
    dispatched = ports.handed
    meta = CommitMeta(0.0, park_partition=0, parked=("acme",), replay_from=(("acme", 0),))
    assignment = Assignment()
    async with _assigned(tmp_path, log, meta, warmed=True, assignment=assignment, ports=ports) as (
        parking,
        part,
    ):
        owned = assignment.get(TP)
        assert owned is not None
        assert part is not None
        owned.status = PartitionStatus.REVOKING  # as the membership sets it when the revoke starts
        assert parking.replay.state(TP) is None
        await asyncio.sleep(0.5)
        assert dispatched == []
        owned.status = PartitionStatus.OWNED
        for _ in range(100):
            if dispatched:
                break
            await asyncio.sleep(0.01)
        assert dispatched, "handed over once owned again"


class _SmallLog(_Log):
    """A parking topic that refuses a record over 1,000 bytes: at once (the producer's own check), or
    once the broker answers (the topic's max.message.bytes)."""

    def __init__(self, at_once: bool) -> None:
        super().__init__()
        self.at_once = at_once

    async def append(self, partition: int, key: Any, value: Any, headers: Any, timestamp_ms: int) -> Any:
        if len(value or b"") <= 1_000:
            return await super().append(partition, key, value, headers, timestamp_ms)
        if self.at_once:
            raise MessageSizeTooLargeError("the message is larger than max_request_size")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_exception(MessageSizeTooLargeError("MESSAGE_SIZE_TOO_LARGE"))
        return done


@pytest.mark.parametrize("at_once", [True, False], ids=["producer", "broker"])
async def test_an_event_the_parking_topic_cannot_hold_is_dead_lettered_not_tried_for_ever(
    tmp_path: Path, at_once: bool
) -> None:
    """Issue 21: an append refused for its size is never tried again as it is (its partition would
    hold for good): the event is dead-lettered, stage park, and the events after it are parked."""
    log = _SmallLog(at_once)
    ports = ParkPorts()
    dead = ports.dead
    async with _assigned(tmp_path, log, CommitMeta(1.0), ports=ports) as (
        parking,
        state,
    ):
        assert state is not None
        state.parked.add("acme")
        big = Record("orders", 3, 60, b"A-1", b"x" * 5_000)
        after = Record("orders", 3, 61, b"A-2", b'{"external_id": "A-2"}')
        parking.park(big, "acme")
        parking.park(after, "acme")
        for _ in range(100):
            if dead and log.records[state.q]:
                break
            await asyncio.sleep(0.01)
        assert [(r.offset, f.stage, f.tenant) for r, f in dead] == [(60, "park", "acme")]
        assert [r.value for r in log.records[state.q]] == [after.value]
        assert state.writing["acme"] == 0
