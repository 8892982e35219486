"""A simulated Kafka cluster: partition logs, one consumer group with eager rebalances, committed
offsets with metadata, and a dead-letter topic that can refuse writes.

The group behaves as aiokafka's does where the pipeline can tell: every rebalance first awaits each
member's revoke callback (a member that overruns the rebalance timeout is expelled), then assigns the
partitions round-robin and awaits the assign callbacks; a member that stops heartbeating (killed, or cut
off from the broker) is expelled after the session timeout, and learns it lost its partitions only when
it reconnects. Commits succeed only from a member of the current generation that owns the partition.

Where the real broker and aiokafka are unkind, so is this one (each drawn from the schedule's seed):
a fetch right after a seek (an assignment, or the warm-up's) may return nothing or only part of what
is there, as a fetch slower than its wait does; a fetch returns at most ``fetch_bytes`` per partition
(always one record); a commit whose metadata of any partition exceeds the broker's
``offset.metadata.max.bytes`` (4096) is refused whole, as aiokafka fails the whole request with
``OffsetMetadataTooLargeError``; partitions can be added to the topic while running (every member
rejoins); a read of the parking topic right after its seek may return nothing, or part; the group
coordinator may be unavailable for a few seconds (commits and committed-offset lookups fail while
fetches from the partition leaders go on, and the group holds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from types import TracebackType
from typing import Self, TypeVar

from connector.metadata import Origin, decode
from connector.source import Committed, PartitionsCallback
from connector.structs import Record, TopicPartition
from tests.sim.pace import MemoryPaceLog, PaceTopic

METADATA_MAX_BYTES = 4096
"""The broker's ``offset.metadata.max.bytes`` (its default)."""
T = TypeVar("T")


class Unreachable(Exception):
    """The broker cannot be reached from this member (or the member is dead)."""


@dataclass
class CommitEvent:
    """One accepted commit."""

    at: float
    member: str
    tp: TopicPartition
    offset: int
    metadata: str


@dataclass
class DeadLetterEvent:
    """One acknowledged dead-letter write."""

    at: float
    member: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class ParkAppend:
    """One acknowledged append to the parking topic."""

    at: float
    member: str
    record: Record


@dataclass(eq=False)
class Member:
    """One group member as the cluster sees it, and its side of the Source protocol."""

    cluster: SimCluster
    name: str
    on_revoked: PartitionsCallback
    on_assigned: PartitionsCallback
    alive: bool = True
    connected: bool = True
    joined: bool = False
    expelled: bool = False
    generation: int = -1
    owned: set[TopicPartition] = field(default_factory=set)
    epochs: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)
    sought: set[TopicPartition] = field(default_factory=set)  # a seek since the last fetch
    rebalancing: bool = False
    legacy: bool = False  # speaks the previous release's commit metadata (v1): see to_v1
    closed: bool = False  # its consumer was stopped: it never joins again
    callbacks: set[asyncio.Task[None]] = field(default_factory=set)
    _wake: asyncio.Future[None] | None = None

    # -- Source protocol ----------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self.cluster.join(self)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True
        if self.alive:
            self.cluster.leave(self)

    async def fetch(self, timeout_ms: int) -> list[Record]:
        if not self.alive:
            raise Unreachable("dead")
        if self.cluster.fetch_seconds:
            # A slow read: the records are taken when it ends, at the positions of that time (aiokafka
            # drops what it fetched for a partition reassigned meanwhile).
            await asyncio.sleep(self.cluster.fetch_seconds)
            if not self.alive:
                raise Unreachable("dead")
        out: list[Record] = []
        if self.connected and not self.rebalancing:
            logs = self.cluster.logs
            for tp in sorted(self.owned - self.paused):
                log = logs[tp]
                pos = self.positions[tp]
                take = self.cluster.fetched(log[pos : pos + self.cluster.max_poll_records - len(out)])
                if tp in self.sought:
                    self.sought.discard(tp)
                    take = self.cluster.after_seek(take)
                out.extend(take)
                self.positions[tp] = pos + len(take)
                if len(out) >= self.cluster.max_poll_records:
                    break
        if not out:
            await self._sleep(timeout_ms / 1000)
        return out

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        handle = loop.call_later(seconds, self.wake)
        try:
            await self._wake
        finally:
            handle.cancel()
            self._wake = None

    def wake(self) -> None:
        """New records, a new assignment or a resume: a waiting fetch returns at once."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def log_end(self, tp: TopicPartition) -> int | None:
        return len(self.cluster.logs[tp])

    def partition_counts(self) -> dict[str, int]:
        return dict(self.cluster.partition_counts)

    def pause(self, partitions: set[TopicPartition]) -> None:
        self.paused |= partitions

    def resume(self, partitions: set[TopicPartition]) -> None:
        self.paused -= partitions
        self.wake()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = max(0, offset)
        self.sought.add(tp)

    async def commit(self, offsets: Committed) -> bool:
        if self.legacy:
            offsets = {tp: (o, to_v1(meta)) for tp, (o, meta) in offsets.items()}
        return self.cluster.commit(self, offsets)

    async def position(self, tp: TopicPartition) -> int | None:
        await asyncio.sleep(0.002)  # a round trip to the broker (a reset: the log start)
        if not self.alive or not self.connected or tp not in self.owned:
            return None
        return self.positions.get(tp, 0)

    async def committed(self, partitions: set[TopicPartition]) -> Committed:
        await asyncio.sleep(0.002)  # a round trip to the broker
        if not self.alive or not self.connected or self.cluster.coordinator_down:
            raise Unreachable("broker unreachable")
        found = {tp: self.cluster.committed[tp] for tp in partitions if tp in self.cluster.committed}
        if self.legacy:
            found = {tp: (o, to_v1(meta)) for tp, (o, meta) in found.items()}
        return found


class SimCluster:
    """Logs, the group and the dead-letter topic, on the running (virtual-time) loop."""

    def __init__(
        self,
        topic: str,
        partitions: int,
        *,
        wall: Callable[[], float],
        session_timeout: float,
        rebalance_timeout: float,
        max_poll_records: int = 100,
        fetch_seconds: float = 0.0,
        rng: Random | None = None,
        fetch_gaps: float = 0.0,
        fetch_bytes: int = 0,
    ) -> None:
        self.topic = topic
        self.partition_counts = {topic: partitions}
        self.logs: dict[TopicPartition, list[Record]] = {
            TopicPartition(topic, p): [] for p in range(partitions)
        }
        self.committed: dict[TopicPartition, tuple[int, str]] = {}
        self.commits: list[CommitEvent] = []
        self.dead_letters: list[DeadLetterEvent] = []
        self.dlq_refusing = False  # the dead-letter and parking topics refuse writes
        self.parked: dict[int, list[Record]] = {p: [] for p in range(partitions)}  # the parking topic
        self.park_appends: list[ParkAppend] = []
        self.pace = PaceTopic()  # the pace topic: every cut a member made after a 429
        self.resync = PaceTopic()  # the resync topic: requests and progress (compaction not modelled)
        self.members: dict[str, Member] = {}
        self.generation = 0
        self.epochs: dict[TopicPartition, int] = dict.fromkeys(self.logs, 0)
        self.rebalances = 0
        self.expulsions = 0
        self.on_commit: Callable[[CommitEvent], None] | None = None
        self._wall = wall
        self._session_timeout = session_timeout
        self._rebalance_timeout = rebalance_timeout
        self.max_poll_records = max_poll_records
        self.fetch_seconds = fetch_seconds  # how long a fetch that returns records takes
        self.rng = rng or Random(0)
        self.fetch_gaps = fetch_gaps  # chance that a fetch right after a seek returns nothing or part
        self.fetch_bytes = fetch_bytes  # bytes a fetch returns per partition at most (0: no cap)
        self.refused_commits = 0  # refused whole: some partition's metadata was over the limit
        self.coordinator_down = False  # the group coordinator moves: commits fail, fetches go on
        self._joined: list[str] = []
        self._wanted = asyncio.Event()
        self._coordinator: asyncio.Task[None] | None = None
        self._expiries: dict[str, asyncio.TimerHandle] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Run the group coordinator."""
        self._coordinator = asyncio.get_running_loop().create_task(self._coordinate())

    async def close(self) -> None:
        """Stop the coordinator."""
        if self._coordinator is not None:
            self._coordinator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._coordinator

    def member(self, name: str, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> Member:
        """A new member (its source); it joins when entered."""
        m = Member(self, name, on_revoked, on_assigned)
        self.members[name] = m
        return m

    def produce(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> Record:
        """Append a record; members waiting for data are woken."""
        tp = TopicPartition(self.topic, partition)
        log = self.logs[tp]
        record = Record(tp.topic, tp.partition, len(log), key, value, headers, int(self._wall() * 1000))
        log.append(record)
        for m in self.members.values():
            if tp in m.owned:
                m.wake()
        return record

    def fetched(self, records: list[Record]) -> list[Record]:
        """What one fetch of a partition returns of ``records`` under the size cap (at least one,
        as a broker returns a record larger than the cap whole)."""
        if not self.fetch_bytes or not records:
            return records
        total, n = 0, 0
        for r in records:
            total += r.size
            if n and total > self.fetch_bytes:
                break
            n += 1
        return records[:n]

    def after_seek(self, records: list[T]) -> list[T]:
        """The first fetch after a seek: nothing (slower than its wait) or part, sometimes."""
        if records and self.rng.random() < self.fetch_gaps:
            return records[: self.rng.randrange(len(records))]
        return records

    def add_partitions(self, count: int) -> None:
        """``count`` partitions added to the topic: every member rejoins (aiokafka sees the metadata
        change of a subscribed topic), and the parking topic is not grown with it."""
        first = self.partition_counts[self.topic]
        self.partition_counts[self.topic] = first + count
        for p in range(first, first + count):
            tp = TopicPartition(self.topic, p)
            self.logs[tp] = []
            self.epochs[tp] = 0
        if self._joined:
            self._wanted.set()

    # -- membership ---------------------------------------------------------------------------
    def join(self, m: Member) -> None:
        """``m`` asks to join: a rebalance follows."""
        if m.closed or not m.alive:
            return
        m.joined, m.expelled = True, False
        self._joined.append(m.name)
        self._wanted.set()

    def leave(self, m: Member) -> None:
        """``m`` leaves on purpose (after its own revoke and last commit)."""
        self._remove(m)
        m.owned.clear()

    def _remove(self, m: Member) -> None:
        if m.name in self._joined:
            self._joined.remove(m.name)
            self._wanted.set()
        m.joined = False
        timer = self._expiries.pop(m.name, None)
        if timer is not None:
            timer.cancel()

    def kill(self, m: Member) -> None:
        """``kill -9``: no callback, no commit; the group notices after the session timeout."""
        m.alive = False
        for task in list(m.callbacks):
            task.cancel()
        self._go_dark(m)

    def disconnect(self, m: Member) -> None:
        """``m`` is cut off from the broker (it still reaches the vendor)."""
        m.connected = False
        self._go_dark(m)

    def reconnect(self, m: Member) -> None:
        """The cut heals. An expelled member learns it lost its partitions, then rejoins."""
        m.connected = True
        if not m.alive:
            return  # a dead member still sends no heartbeat: its session expires all the same
        timer = self._expiries.pop(m.name, None)
        if timer is not None:
            timer.cancel()
        if m.alive and m.expelled and not m.closed:
            self._spawn(m, self._lost_then_rejoin(m))
        m.wake()

    def _go_dark(self, m: Member) -> None:
        if m.name in self._expiries or not m.joined:
            return
        loop = asyncio.get_running_loop()
        self._expiries[m.name] = loop.call_later(self._session_timeout, self._expel, m)

    def _expel(self, m: Member) -> None:
        timer = self._expiries.pop(m.name, None)
        if timer is not None:
            timer.cancel()  # called by the rebalance, not by the session timer itself
        if m.joined:
            self.expulsions += 1
            self._remove(m)
            m.expelled = True

    async def _lost_then_rejoin(self, m: Member) -> None:
        lost, m.owned = set(m.owned), set()
        m.rebalancing = True
        try:
            await m.on_revoked(lost)
        finally:
            m.rebalancing = False
        if m.alive:
            self.join(m)

    def _spawn(self, m: Member, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        m.callbacks.add(task)
        task.add_done_callback(m.callbacks.discard)
        return task

    # -- the group coordinator ----------------------------------------------------------------
    async def _coordinate(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self._rebalance()

    async def _rebalance(self) -> None:
        self.rebalances += 1
        for m in [self.members[n] for n in self._joined if not self.members[n].connected]:
            self._expel(m)  # cannot rejoin within the rebalance timeout
        members = [self.members[n] for n in self._joined]
        revoking = [(m, self._spawn(m, self._revoke(m))) for m in members if m.owned]
        if revoking:
            _, late = await asyncio.wait([t for _, t in revoking], timeout=self._rebalance_timeout)
            for m, task in revoking:
                if task in late:  # overran the rebalance timeout: out of the group, callback still running
                    self.expulsions += 1
                    self._remove(m)
                    m.expelled = True
        members = [self.members[n] for n in self._joined if self.members[n].alive]
        self.generation += 1
        tps = sorted(self.logs)
        plan: dict[str, set[TopicPartition]] = {m.name: set() for m in members}
        names = sorted(plan)
        for i, tp in enumerate(tps):
            if names:
                plan[names[i % len(names)]].add(tp)
        assigning = []
        for m in members:
            m.generation = self.generation
            m.owned = plan[m.name]
            m.paused = set()  # as in aiokafka: a new assignment starts unpaused
            for tp in m.owned:
                self.epochs[tp] += 1
                m.epochs[tp] = self.epochs[tp]
                m.positions[tp] = self.committed.get(tp, (0, ""))[0]
                m.sought.add(tp)
            assigning.append(self._spawn(m, self._assign(m)))
        if assigning:
            await asyncio.wait(assigning)

    async def _revoke(self, m: Member) -> None:
        m.rebalancing = True
        try:
            await m.on_revoked(set(m.owned))
        finally:
            m.owned = set()
            if m.expelled:  # it overran the rebalance timeout: it finds out now, and joins again
                m.rebalancing = False
                if m.alive and m.connected:
                    self.join(m)

    async def _assign(self, m: Member) -> None:
        # As aiokafka's fetcher does, records of the new assignment can be fetched (from the
        # committed offset) while the assign callback runs.
        m.rebalancing = False
        m.wake()
        await m.on_assigned(set(m.owned))

    # -- commits and dead letters -------------------------------------------------------------
    def commit(self, m: Member, offsets: Committed) -> bool:
        """Accept ``offsets`` only from a live, connected member of the current generation that owns
        every partition in them (as the broker's generation check does)."""
        ok = (
            m.alive
            and m.connected
            and m.joined
            and m.generation == self.generation
            and all(tp in m.owned for tp in offsets)
        )
        if not ok or self.coordinator_down:
            return False
        if any(len(meta.encode()) > METADATA_MAX_BYTES for _, meta in offsets.values()):
            self.refused_commits += 1
            return False  # OffsetMetadataTooLargeError: aiokafka fails the whole commit
        now = self._wall()
        for tp, (offset, metadata) in sorted(offsets.items()):
            self.committed[tp] = (offset, metadata)
            event = CommitEvent(now, m.name, tp, offset, metadata)
            self.commits.append(event)
            if self.on_commit is not None:
                self.on_commit(event)
        return True

    def park_log_for(self, m_name: str) -> SimParkLog:
        """The parking topic as member ``m_name`` reaches it."""
        return SimParkLog(self, m_name)

    def pace_log_for(self, m_name: str) -> MemoryPaceLog:
        """The pace topic as member ``m_name`` reaches it (not while dead or cut off)."""

        def reachable() -> bool:
            m = self.members.get(m_name)
            return m is None or (m.alive and m.connected)

        return self.pace.log_for(reachable)

    def resync_log_for(self, m_name: str) -> MemoryPaceLog:
        """The resync topic as member ``m_name`` reaches it (not while dead or cut off)."""

        def reachable() -> bool:
            m = self.members.get(m_name)
            return m is None or (m.alive and m.connected)

        return self.resync.log_for(reachable)

    def source_log_for(self, m_name: str) -> SimSourceLog:
        """The source topic read outside the group (a resync's reads) by member ``m_name``."""
        return SimSourceLog(self, m_name)

    def dead_letters_for(self, m_name: str) -> SimDeadLetters:
        """The dead-letter writer of member ``m_name``."""
        return SimDeadLetters(self, m_name)


class _SideTopic:
    """What member ``member`` reaches of a topic beside the group's (a context manager, as the real
    producers are), while it is alive and connected."""

    def __init__(self, cluster: SimCluster, member: str) -> None:
        self._cluster = cluster
        self._member = member

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _reachable(self) -> bool:
        m = self._cluster.members.get(self._member)
        return m is not None and m.alive and m.connected


class SimDeadLetters(_SideTopic):
    """A member's dead-letter writer: refused while the cluster refuses, or the member is dead."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        cluster = self._cluster
        await asyncio.sleep(0.005)
        if cluster.dlq_refusing or not self._reachable():
            raise Unreachable("the dead-letter topic refused the write")
        cluster.dead_letters.append(DeadLetterEvent(cluster._wall(), self._member, key, value, headers))


class SimParkLog(_SideTopic):
    """A member's view of the parking topic: appends refused while the cluster refuses side-topic
    writes (``dlq_refusing``) or the member is dead or cut off; reads refused while cut off."""

    async def partitions(self) -> int:
        return len(self._cluster.parked)

    async def append(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int,
    ) -> asyncio.Future[int]:
        cluster = self._cluster
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        refused = cluster.dlq_refusing or not self._reachable()
        # Queued in call order; acknowledged (or refused) a little later, as a produce batch is.
        log = cluster.parked[partition]
        if refused:
            loop.call_later(0.005, _fail, done)
            return done
        record = Record("park", partition, len(log), key, value, tuple(headers), timestamp_ms)
        log.append(record)
        cluster.park_appends.append(ParkAppend(cluster._wall() + 0.005, self._member, record))
        loop.call_later(0.005, _succeed, done, record.offset)
        return done

    async def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        await asyncio.sleep(0.002)
        if not self._reachable():
            raise Unreachable("broker unreachable")
        # Every read seeks first: it may come back with nothing, or part, as a slow fetch does.
        cluster = self._cluster
        return cluster.after_seek(
            cluster.fetched(list(cluster.parked[partition][offset : offset + max_records]))
        )

    async def end(self, partition: int) -> int:
        await asyncio.sleep(0.002)
        if not self._reachable():
            raise Unreachable("broker unreachable")
        return len(self._cluster.parked[partition])


class SimSourceLog(_SideTopic):
    """A member's reads of the source topic outside the group (``connector.resync.SourceLog``):
    refused while cut off; every read seeks first, and may come back with nothing, or part."""

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        await asyncio.sleep(0.002)
        if not self._reachable():
            raise Unreachable("broker unreachable")
        return 0, len(self._cluster.logs[tp])

    async def offset_at(self, tp: TopicPartition, since: float) -> int | None:
        await asyncio.sleep(0.002)
        return next((r.offset for r in self._cluster.logs[tp] if r.timestamp_ms >= since * 1000), None)

    async def read(self, tp: TopicPartition, offset: int) -> list[Record]:
        await asyncio.sleep(0.002)
        if not self._reachable():
            raise Unreachable("broker unreachable")
        cluster = self._cluster
        return cluster.after_seek(cluster.fetched(list(cluster.logs[tp][offset : offset + 100])))


def to_v1(text: str) -> str:
    """Commit metadata as the previous release (0.1.0) reads and writes it: the settle-by, the first
    parking offset to replay, the parked shops and the writer tokens; whatever else is lost."""
    read = decode(text)
    if read.origin is not Origin.OURS:
        return text
    meta = read.meta
    out = f"settle_by={meta.settle_by:.3f}"
    if meta.park_from is not None:
        out += f";park_from={meta.park_from}"
    if meta.parked:
        out += ";parked=" + ",".join(meta.parked)
    if meta.tokens:
        out += ";tokens=" + ",".join(f"{t}:{o}" for t, o in meta.tokens)
    return out


def _fail(done: asyncio.Future[int]) -> None:
    if not done.done():
        done.set_exception(Unreachable("the parking topic refused the write"))


def _succeed(done: asyncio.Future[int], offset: int) -> None:
    if not done.done():
        done.set_result(offset)
