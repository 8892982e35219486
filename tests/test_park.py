"""Parking, driven through its public surface with the parts around it simulated: the shops
(``connector.park.Shops``: their health, quiescing a shop's partitions), the ledger, read path and
membership (``tests.fakes.ParkPorts``) and the parking topic, in memory. Its decisions (which shop,
when), its appends and their replay, and its bookkeeping: which parking records are replayed for a
partition, what its commits carry so that the next owner replays exactly those, and how a partition's
parking state is taken up from its last commit (the flows themselves: the many-shop simulation and
tests/integration/test_tenants.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from random import Random
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from connector import constants as wire
from connector import metadata
from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer, Resolution
from connector.config import Settings, TenantsSettings
from connector.metadata import CommitMeta
from connector.metrics import Metrics
from connector.ownership import Assignment, PartitionStatus
from connector.park import Parking, ParkState, RecordsGone
from connector.park._replay import Replay
from connector.structs import Record, TopicPartition
from tests.fakes import HEALTHY, ParkPorts, Shops, read_change

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
    log: _Log,
    meta: CommitMeta,
    committed: int | None = 50,
    warmed: bool = False,
    metrics: Metrics | None = None,
    assignment: Assignment | None = None,
    ports: ParkPorts | None = None,
    shops: Shops | None = None,
    coalescer: Coalescer | None = None,
    **tenants: Any,
) -> AsyncIterator[tuple[Parking, ParkState | None]]:
    """A member's parking, entered (its loops running), with ``TP`` assigned from a commit at
    ``committed`` carrying ``meta`` and started (owned, as the membership then makes it); and the
    partition's parking state."""
    settings = Settings(tenants=TenantsSettings(**tenants))
    assignment = assignment if assignment is not None else Assignment()
    ports = ports if ports is not None else ParkPorts()
    ports.warm = warmed  # else the warm-up is never over: nothing is replayed while a test looks
    parking = Parking(
        settings,
        log,
        assignment,
        coalescer or Coalescer(),
        shops or Shops("acme"),
        metrics or Metrics(),
        clock=SYSTEM_CLOCK,
        rng=Random(1),
    )
    ports.connect(parking)
    async with parking:
        parking.set_layout({"orders": 4})
        part = assignment.add(TP)
        assert await parking.assign(TP, meta, committed)
        part.status = PartitionStatus.OWNED
        yield parking, part.park


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.01)


async def _park(parking: Parking, shops: Shops, tenant: str = "acme") -> None:
    """Park ``tenant`` as parking decides it: its circuit open for an hour."""
    shops.down(tenant, 3600.0)
    parking.check()
    await until(lambda: parking.parked(TP, tenant))


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


def _change(key: str, offset: int, tenant: str = "acme", age: float = 0.0) -> Any:
    """An event of ``tenant``'s order ``key`` read from ``TP`` at ``offset``, produced ``age`` seconds
    ago."""
    return read_change(TP, key, offset, tenant, age)


# -- decisions: which shop is parked, when ------------------------------------------------------------
async def test_a_shop_whose_circuit_stays_open_is_parked_and_what_it_has_in_hand_goes_to_the_topic() -> None:
    """Its circuit open longer than ``tenants.park_after_seconds``: its calls for the partition are
    quiesced, every event of it in hand is appended (with a hold: a request may still land) and
    resolved as parked once the topic acknowledged it, and the shop takes jobs again; a healthy shop
    on the same partition is left alone."""
    log, shops, coalescer, ports = _Log(), Shops("acme", "bolt"), Coalescer(), ParkPorts()
    for offset, (key, tenant) in enumerate([("A1", "acme"), ("B1", "bolt"), ("A2", "acme")], start=60):
        assert coalescer.offer(_change(key, offset, tenant)).start
    async with _assigned(log, CommitMeta(1.0), shops=shops, coalescer=coalescer, ports=ports) as (
        parking,
        state,
    ):
        assert state is not None
        shops.down("acme", 29.0)
        parking.check()
        await asyncio.sleep(0.05)
        assert not parking.parked(TP, "acme"), "not open long enough"
        await _park(parking, shops)
        await until(lambda: len(ports.resolved) == 2)
        assert shops.quiesced == [("acme", {TP})]
        assert shops.resumed == [("acme", {TP})]
        assert [(r.offset, why) for r, why in ports.resolved] == [
            (60, Resolution.PARKED),
            (62, Resolution.PARKED),
        ]
        appended = log.records[state.q]
        assert [dict(r.headers)[wire.H_PARKED_FROM] for r in appended] == [b"orders/3/60", b"orders/3/62"]
        assert all(wire.H_PARKED_HOLD in dict(r.headers) for r in appended)
        assert coalescer.current("bolt/B1") is not None
        assert coalescer.current("acme/A1") is None, "taken out: on the parking topic now"
        assert not parking.parked(TP, "bolt")
        assert parking.tenants() == {"acme"}


async def test_a_shop_far_behind_its_orders_is_parked() -> None:
    """More than ``tenants.park_max_keys`` of its orders waiting longer than
    ``tenants.park_after_seconds``: parked, though its circuit is closed."""
    shops, coalescer = Shops("acme"), Coalescer()
    for offset, key in enumerate(["A1", "A2", "A3"], start=60):
        coalescer.offer(_change(key, offset, age=120.0))
    async with _assigned(
        _Log(), CommitMeta(1.0), shops=shops, coalescer=coalescer, park_max_keys=2, park_after_seconds=60.0
    ) as (parking, _):
        parking.check()
        await until(lambda: parking.parked(TP, "acme"))


@pytest.mark.parametrize("park_after_seconds", [0.0, 60.0], ids=["parking-off", "on"])
async def test_a_shop_with_few_orders_waiting_or_with_parking_off_is_not_parked(
    park_after_seconds: float,
) -> None:
    shops, coalescer = Shops("acme"), Coalescer()
    for offset, key in enumerate(["A1", "A2"], start=60):
        coalescer.offer(_change(key, offset, age=120.0))
    async with _assigned(
        _Log(), CommitMeta(1.0), shops=shops, coalescer=coalescer, park_max_keys=2,
        park_after_seconds=park_after_seconds,
    ) as (parking, _):  # fmt: skip
        if not park_after_seconds:
            shops.down("acme", 3600.0)
        parking.check()
        await asyncio.sleep(0.05)
        assert not parking.parked(TP, "acme")
        assert shops.quiesced == []


# -- appends and replay -------------------------------------------------------------------------------
async def test_a_parked_event_comes_back_as_the_one_read_from_its_partition() -> None:
    """Appended, then replayed: the event is the one read from its partition, same topic, partition,
    offset and time (so it is ordered, fenced and paced as its partition's), its own headers only,
    and where it was parked; its offset was resolved as parked once the topic had it."""
    log, shops, ports = _Log(), Shops("acme"), ParkPorts()
    async with _assigned(log, CommitMeta(1.0), warmed=True, shops=shops, ports=ports) as (parking, state):
        assert state is not None
        await _park(parking, shops)
        event = Record(
            TP.topic, TP.partition, 60, b"A1", b'{"external_id": "A1"}', (("x-trace", b"abc"),), 1234
        )
        parking.park(event, "acme")
        await until(lambda: ports.handed)
        assert ports.resolved == [(event, Resolution.PARKED)]
        [back] = ports.handed
        assert (back.tp, back.offset, back.key, back.value, back.timestamp_ms) == (
            TP,
            60,
            b"A1",
            event.value,
            1234,
        )
        assert back.headers == (("x-trace", b"abc"),)
        assert back.parked_at == 0
        assert log.records[state.q][0].offset == 0


async def test_records_parked_below_the_committed_offset_from_the_shops_replay_start_are_replayed() -> None:
    """This assignment's own records are replayed; another writer's only below the committed offset
    (above it the event is read again from the partition, and that copy counts), and only from where
    its shop's replay starts (before it, everything of the shop was resolved); another partition's
    never."""
    log, ports = _Log(), ParkPorts()
    q = log.records[1]
    q += [_parked(1, "other", at=i) for i in range(3)]
    q += [
        _parked(48, "aaaa0001", at=3),  # before acme's replay start (4): resolved already
        _parked(49, "aaaa0001", at=4),  # below the committed offset (50): replayed
        _parked(50, "aaaa0001", at=5),  # parked, then its member died before committing past it
        _parked(20, "aaaa0001", TopicPartition("orders", 1), at=6),  # another partition's
        _parked(10, "aaaa0001", at=7, tenant=b"cask"),  # a shop with nothing to replay
        _parked(30, "aaaa0001", at=8, tenant=b"bolt"),  # before bolt's replay start (9)
        _parked(31, "aaaa0001", at=9, tenant=b"bolt"),  # replayed
    ]
    meta = CommitMeta(0.0, park_partition=1, parked=("acme",), replay_from=(("acme", 4), ("bolt", 9)))
    async with _assigned(log, meta, committed=50, warmed=True, ports=ports) as (_, state):
        assert state is not None
        q.append(_parked(900, state.token, at=10))  # this member's own: replayed
        await until(lambda: len(ports.handed) == 3)
        await asyncio.sleep(0.3)
        assert [(r.offset, r.parked_at) for r in ports.handed] == [(49, 4), (31, 9), (900, 10)]


async def test_a_commit_says_where_each_shops_replay_resumes() -> None:
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
    async with _assigned(log, meta) as (_, part):
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


async def test_v1_state_replays_every_parked_shop_from_park_from_on_its_recomputed_partition() -> None:
    """A commit of 0.1.0 names one replay start for all parked shops, and no parking partition: the
    partition is the one 0.1.0 computes (its index in the layout modulo the parking topic's)."""
    log = _Log()
    log.records[1].extend(_parked(1, "other") for _ in range(3))
    v1 = CommitMeta(0.0, version=1, park_from=1, parked=("acme", "bolt"), tokens=(("aaaa0001", 20),))
    async with _assigned(log, v1) as (_, part):
        assert part is not None
        assert part.q == 1, "partition 3 of 4, two parking partitions"
        assert part.starts == {"acme": 1, "bolt": 1}


async def test_a_recorded_parking_partition_is_kept_whatever_the_layout_says() -> None:
    """Once something was parked, the commit records the parking partition: partitions added to the
    source topic (or the parking topic grown) must not move it."""
    log = _Log()
    log.records[0].extend(_parked(1, "other") for _ in range(3))
    meta = CommitMeta(0.0, park_partition=0, parked=("acme",), replay_from=(("acme", 0),))
    async with _assigned(log, meta) as (_, part):
        assert part is not None
        assert part.q == 0


async def test_parking_state_waits_for_a_parking_topic_that_is_not_there() -> None:
    """With parking state in its last commit, a partition cannot be taken up until the parking topic
    can be read (its replays would be lost); without it, it can."""

    class _Missing(_Log):
        async def partitions(self) -> int:
            return 0

    assignment = Assignment()
    parking = Parking(
        Settings(),
        _Missing(),
        assignment,
        Coalescer(),
        Shops("acme"),
        Metrics(),
        clock=SYSTEM_CLOCK,
        rng=Random(1),
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


async def test_parked_records_deleted_by_retention_are_said_lost_not_skipped_silently() -> None:
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
    async with _assigned(log, meta, warmed=True, metrics=metrics) as (_, part):
        assert part is not None
        for _ in range(100):
            if part.position is not None and part.position >= 2:
                break
            await asyncio.sleep(0.01)
        assert part.position is not None
        assert part.position >= 2
        assert part.starts["acme"] >= 2
        assert metrics.registry.get_sample_value("connector_park_records_lost_total") == 2


async def test_nothing_parked_is_handed_over_while_its_partition_is_revoked() -> None:
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
    async with _assigned(log, meta, warmed=True, assignment=assignment, ports=ports) as (
        parking,
        part,
    ):
        owned = assignment.get(TP)
        assert owned is not None
        assert part is not None
        owned.status = PartitionStatus.REVOKING  # as the membership sets it when the revoke starts
        assert parking.replay is not None
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
    at_once: bool,
) -> None:
    """Issue 21: an append refused for its size is never tried again as it is (its partition would
    hold for good): the event is dead-lettered, stage park, and the events after it are parked."""
    log, ports, shops = _SmallLog(at_once), ParkPorts(), Shops("acme")
    dead = ports.dead
    async with _assigned(log, CommitMeta(1.0), ports=ports, shops=shops) as (parking, state):
        assert state is not None
        await _park(parking, shops)
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


async def test_a_parked_shop_gets_one_event_while_its_circuit_is_open_then_park_replay_events() -> None:
    """The replay on its own: while the shop's circuit is open it is handed one parked event at a
    time (its probe), the rest held back (and said to be, by their age); closed, up to
    ``tenants.park_replay_events`` (3) at once; each one resolved makes room for the next."""
    log, ports, shops = _Log(), ParkPorts(warm=True), Shops("acme")
    log.records[0] += [_parked(i, "0badcafe", at=i) for i in range(6)]  # parked below offset 50
    assignment = Assignment()
    part = assignment.add(TP)
    part.status = PartitionStatus.OWNED
    state = ParkState(0, "0000beef", start=50)
    state.parked, state.starts, state.end_at_assign = {"acme"}, {"acme": 0}, 6
    state.begin(0)
    part.park = state  # what Parking.assign takes up from the partition's last commit
    shops.down("acme", 60.0)
    settings = Settings(tenants=TenantsSettings(park_replay_events=3))
    replay = Replay(settings, log, assignment, shops, Metrics(), SYSTEM_CLOCK)
    replay.connect(ports, ports, ports)
    running = asyncio.create_task(replay.run())
    try:
        await until(lambda: ports.handed)
        await asyncio.sleep(0.3)
        assert [r.offset for r in ports.handed] == [0]
        assert replay.tenants() == {"acme"}
        assert replay.oldest() == {"acme": 1.234}, "the record time of the first one held back"
        shops.healths["acme"] = HEALTHY
        replay.wake()
        await until(lambda: len(ports.handed) == 3)
        await asyncio.sleep(0.3)
        assert len(ports.handed) == 3
        assert replay.resolve(ports.handed[0])
        assert not replay.resolve(ports.handed[0]), "resolved once"
        await until(lambda: len(ports.handed) == 4)
        assert [r.parked_at for r in ports.handed] == [0, 1, 2, 3]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
