"""Parking: a shop that cannot be served never holds back the shops it shares partitions with.

A partition's commit cannot pass its first unresolved event, and unresolved events count against the
read-ahead. So one shop whose API is down, whose key was revoked or whose backlog is far beyond its
budget would, left alone, stop the commits of every partition it shares with healthy shops, and in
the end pause their reading. Instead, after a bound, that tenant is *parked*:

- **Park.** Its events in hand (not being sent) are appended, in the order they were read, to the
  parking topic (``tenants.park_topic``), each with where it was read and who parked it; once the
  broker acknowledged one (``acks=all``) its offset is resolved (``parked``) and the watermark moves
  on. While the tenant is parked on a partition, every newer event of it from that partition takes
  the same path, so no order goes backwards.
- **Replay.** The member owning a partition reads back what was parked from it (each source
  partition has its own parking partition, its index in the layout modulo the parking topic's
  partitions) and hands it to the coalescer as if read from the partition itself, at its original
  offset: it is ordered, coalesced, paced (with that partition's budget ticks), fenced and
  dead-lettered exactly as any event. A parked tenant gets one event at a time while its circuit is
  open (its probe), ``tenants.park_replay_events`` once it closes; what it cannot take yet is held
  back (an offset, 9 bytes) and read again later, so one parked tenant never stalls another.
- **Unpark.** When everything parked of the tenant from a partition has been delivered (or
  dead-lettered) and the reader has caught up with the parking partition, its events from that
  partition are sent directly again.

What must survive a crash or a rebalance is in the partition's commit metadata (``constants.py``):
the first parking offset still to replay (``park_from``), the tenants parked, and the *tokens* of the
members whose parked records count, each with the offset its last commit reached. A record parked by a
member that never committed past it (it crashed, or was expelled) is ignored: its event is read again
from the partition itself. A new owner re-reading the partition for its warm-up skips the events of
parked tenants, which were parked, not delivered.

Invariants (checked by the simulation and the real-broker tests): an event is resolved as parked only
once the parking topic holds it; everything parked is replayed until resolved, across crashes and
owners; per order nothing older is sent after something newer; a parked tenant's events never hold
back the commit or the read-ahead of a partition it shares; at most ``tenants.max_parked`` tenants are
parked per partition (the commit metadata must fit in the broker's 4 KB), beyond which a failing tenant
holds the partition back as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from random import Random
from types import TracebackType
from typing import Self

from connector import constants as wire
from connector.circuit import State
from connector.clock import Clock
from connector.coalesce import Coalescer
from connector.config import Settings
from connector.constants import CommitMeta
from connector.logs import debug_enabled, get_logger
from connector.metrics import Metrics
from connector.offsets import PartitionOffsets
from connector.parklog import ParkLog
from connector.structs import OrderChange, Record, TopicPartition, Version
from connector.tenancy import Tenancy

log = get_logger("connector.park")

_READ_BATCH = 500
_READS_PER_ROUND = 8
_IDLE_S = 0.2
_PARK_HEADERS = (wire.H_PARKED_FROM, wire.H_PARKED_BY, wire.H_PARKED_HOLD, wire.H_PARKED_AS_OF, wire.H_TENANT)


@dataclass(slots=True)
class _Partition:
    """The parking state of one source partition this member owns."""

    q: int  # its parking partition
    token: str  # this member's writer token for it (this assignment)
    committed: int  # the partition's committed offset at assignment
    parked: set[str] = field(default_factory=set)
    inherited: dict[str, int] = field(default_factory=dict)  # earlier writers' tokens: offset limit
    end_at_assign: int = 0  # the parking partition's end when assigned: inherited records lie below
    scan: PartitionOffsets | None = None  # parking offsets read; unresolved = held back or dispatched
    position: int | None = None  # next parking offset to read (None: nothing parked yet)
    dispatched: dict[int, str] = field(default_factory=dict)  # parking offset -> tenant
    held_from: dict[str, int] = field(default_factory=dict)  # tenant -> first offset held back
    held_ts: dict[str, float] = field(default_factory=dict)  # tenant -> time of that record
    held: Counter[str] = field(default_factory=Counter)
    writing: Counter[str] = field(default_factory=Counter)  # appends not yet acknowledged
    last_written: int = -1  # highest parking offset this member appended
    frozen: bool = False  # being revoked: nothing more is handed over

    def start(self, offset: int) -> None:
        if self.position is None:
            self.position = offset
            self.scan = PartitionOffsets()
            self.scan.start_at(offset)

    @property
    def park_from(self) -> int | None:
        return self.scan.committable() if self.scan is not None else None


@dataclass(frozen=True, slots=True)
class _Parked:
    """A record read back from the parking topic: the original, and its parking facts."""

    record: Record
    tenant: str
    token: str
    hold_until: float
    as_of: Version | None = None  # a newer event of its order it stands for (skipped as identical)


def _unpack(r: Record) -> _Parked | None:
    """The original record behind a parking record (None: not one of ours)."""
    headers = dict(r.headers)
    try:
        topic, partition, offset = headers[wire.H_PARKED_FROM].decode().rsplit("/", 2)
        tenant, token = headers[wire.H_TENANT].decode(), headers[wire.H_PARKED_BY].decode()
        hold = float(headers.get(wire.H_PARKED_HOLD, b"0"))
        own = tuple((k, v) for k, v in r.headers if k not in _PARK_HEADERS)
        original = Record(topic, int(partition), int(offset), r.key, r.value, own, r.timestamp_ms, r.offset)
        as_of = None
        if wire.H_PARKED_AS_OF in headers:
            stamp, _, at = headers[wire.H_PARKED_AS_OF].decode().partition("/")
            as_of = Version(float(stamp) if stamp else None, original.tp, int(at))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return _Parked(original, tenant, token, hold, as_of)


class Parking:
    """Parks tenants that cannot be served, and replays what they parked (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        park_log: ParkLog | None,
        coalescer: Coalescer,
        tenancy: Tenancy,
        metrics: Metrics,
        *,
        clock: Clock,
        rng: Random,
        resolved: Callable[[Record], None],
        dispatch: Callable[[Record, float, Version | None], None],
        warmed: Callable[[TopicPartition], Awaitable[bool]],
        prefetch: Callable[[list[Record]], Awaitable[None]] | None = None,
    ) -> None:
        t = settings.tenants
        self.enabled = park_log is not None and tenancy.many and t.park_after_seconds > 0
        self._settings = settings
        self._log = park_log
        self._coalescer = coalescer
        self._tenancy = tenancy
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self._resolved = resolved
        self._dispatch = dispatch
        self._warmed = warmed
        self._prefetch = prefetch  # what reading a batch needs first (Avro schemas from the registry)
        self._parts: dict[TopicPartition, _Partition] = {}
        self._index: dict[TopicPartition, int] = {}
        self._queues = 0
        self._out: Counter[str] = Counter()  # replayed records in the coalescer, per tenant
        self._writes: asyncio.Queue[tuple[Record, str, float, Version | None, _Partition]] = asyncio.Queue()
        self._pending: dict[TopicPartition, set[asyncio.Future[int]]] = {}
        self._parking: dict[str, asyncio.Task[None]] = {}
        self.blinded: set[TopicPartition] = set()  # see blind()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    async def __aenter__(self) -> Self:
        if self.enabled:
            assert self._log is not None
            self._queues = await self._log.partitions()
            if not self._queues:
                log.error(
                    "park_topic_missing",
                    topic=self._settings.park_topic,
                    action="parking is off: a failing shop holds back the partitions it shares; "
                    "create the topic (as many partitions as the sources have) and restart",
                )
                self.enabled = False
            else:
                self._tasks = [
                    asyncio.create_task(self._write_loop(), name="park-writer"),
                    asyncio.create_task(self._replay_loop(), name="park-replay"),
                ]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in [*self._tasks, *self._parking.values()]:
            task.cancel()
        for task in [*self._tasks, *self._parking.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- layout and ownership -----------------------------------------------------------------
    def set_layout(self, partitions: Mapping[str, int]) -> None:
        """Every source partition's place in the layout (the same on every member): its index
        modulo the parking topic's partitions is its parking partition."""
        ordered = [TopicPartition(t, p) for t in sorted(partitions) for p in range(partitions[t])]
        self._index = {tp: i for i, tp in enumerate(ordered)}

    def _queue_of(self, tp: TopicPartition) -> int:
        return self._index.get(tp, hash(tp) & 0x7FFFFFFF) % max(1, self._queues)

    async def assign(self, tp: TopicPartition, meta: CommitMeta, committed: int | None) -> None:
        """``tp`` is ours: carry on its parking state from the last commit."""
        if not self.enabled:
            return
        assert self._log is not None
        part = _Partition(self._queue_of(tp), f"{self._rng.getrandbits(32):08x}", committed or 0)
        part.parked = set(meta.parked)
        part.inherited = dict(meta.tokens)
        if meta.park_from is not None:
            part.start(meta.park_from)
            try:
                part.end_at_assign = await self._log.end(part.q)
            except Exception as exc:  # unknown: keep the inherited tokens until a later assignment
                log.warning("park_end_lookup_failed", partition=str(tp), error=f"{type(exc).__name__}")
                part.end_at_assign = 2**62
        self._parts[tp] = part
        self.blinded.discard(tp)
        if part.parked:
            log.info("partition_parked_tenants", partition=str(tp), tenants=sorted(part.parked))
        self._wake.set()

    def blind(self, partitions: set[TopicPartition]) -> None:
        """The committed metadata of ``partitions`` could not be read: they are not committed (their
        parking state on the broker must survive) until :meth:`assign` is called for them."""
        if self.enabled:
            self.blinded |= partitions
            log.error(
                "park_state_unknown",
                partitions=sorted(str(tp) for tp in partitions),
                action="not committed, so nothing is sent for them, until their commit metadata is read",
            )

    def reassess(self, tp: TopicPartition) -> None:
        """After a late :meth:`assign`: events of tenants parked on ``tp`` that were read meanwhile
        (and could not be sent: ``tp`` had no lease) are parked now, in the order they were read."""
        part = self._parts.get(tp)
        for tenant in sorted(part.parked if part is not None else ()):
            for change, as_of in self._coalescer.take_tenant(tenant, {tp}):
                self.park(change.record, tenant, as_of=as_of)

    def freeze(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are being revoked: nothing parked from them is handed over any more (what
        the coalescer holds of them is dropped with them, and must not come back after)."""
        for tp in partitions:
            part = self._parts.get(tp)
            if part is not None:
                part.frozen = True

    async def settle(self, tp: TopicPartition, timeout: float) -> None:
        """Wait (bounded) for the appends of ``tp`` still on their way: a hand-over commits them."""
        pending = self._pending.get(tp)
        if pending:
            await asyncio.wait(set(pending), timeout=timeout)

    def revoke(self, tp: TopicPartition) -> None:
        """``tp`` is no longer ours: forget it (its replayed changes were dropped with it)."""
        self.blinded.discard(tp)
        part = self._parts.pop(tp, None)
        if part is not None:
            for tenant in part.dispatched.values():
                self._out[tenant] -= 1
        self._pending.pop(tp, None)

    def meta(self, tp: TopicPartition, settle_by: float, offset: int) -> CommitMeta:
        """What a commit of ``tp`` at ``offset`` carries: its settle-by and its parking state."""
        part = self._parts.get(tp)
        if part is None or part.position is None:
            return CommitMeta(settle_by, parked=tuple(sorted(part.parked)) if part else ())
        tokens = dict(part.inherited)
        park_from = part.park_from
        if park_from is not None and park_from >= part.end_at_assign:
            tokens = {}  # every record of an earlier writer is behind us
        tokens[part.token] = offset
        return CommitMeta(settle_by, park_from, tuple(sorted(part.parked)), tuple(sorted(tokens.items())))

    # -- the read path ------------------------------------------------------------------------
    def parked(self, tp: TopicPartition, tenant: str) -> bool:
        """Whether events of ``tenant`` read from ``tp`` go to the parking topic."""
        part = self._parts.get(tp)
        return part is not None and tenant in part.parked

    def park(
        self, record: Record, tenant: str, hold_until: float = 0.0, as_of: Version | None = None
    ) -> None:
        """Append ``record`` to the parking topic; its offset is resolved once acknowledged.
        ``hold_until``: no request for its order before then; ``as_of``: a newer event of its order
        that was skipped as identical to it (its replay stands for that one)."""
        part = self._parts[record.tp]
        part.writing[tenant] += 1
        self._writes.put_nowait((record, tenant, hold_until, as_of, part))

    def resolve(self, record: Record) -> bool:
        """A replayed record is resolved (delivered, replaced, skipped, dead-lettered)."""
        part = self._parts.get(record.tp)
        if part is None or part.scan is None:
            return False
        tenant = part.dispatched.pop(record.parked_at, None)
        if tenant is not None:
            self._out[tenant] -= 1
            self._wake.set()
        return part.scan.resolve(record.parked_at)

    # -- appends ------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        assert self._log is not None
        while True:
            record, tenant, hold, as_of, part = await self._writes.get()
            if self._parts.get(record.tp) is not part:  # revoked meanwhile: the next owner reads it
                continue
            headers = [
                *((k, v) for k, v in record.headers if k not in _PARK_HEADERS),
                (wire.H_PARKED_FROM, f"{record.topic}/{record.partition}/{record.offset}".encode()),
                (wire.H_TENANT, tenant.encode()),
                (wire.H_PARKED_BY, part.token.encode()),
            ]
            if hold:
                headers.append((wire.H_PARKED_HOLD, f"{hold:.3f}".encode()))
            if as_of is not None:
                stamp = "" if as_of.updated_at is None else repr(as_of.updated_at)
                headers.append((wire.H_PARKED_AS_OF, f"{stamp}/{as_of.offset}".encode()))
            landed = await self._append(record, headers, part)
            if landed is None:
                continue
            self._pending.setdefault(record.tp, set()).add(landed)
            landed.add_done_callback(
                functools.partial(self._landed, item=(record, tenant, hold, as_of, part))
            )

    async def _append(
        self, record: Record, headers: list[tuple[str, bytes]], part: _Partition
    ) -> asyncio.Future[int] | None:
        """Queue one append, trying again until the topic takes it (never dropped: the partition
        holds until it is written); None when the partition was revoked meanwhile."""
        assert self._log is not None
        attempt = 0
        while self._parts.get(record.tp) is part:
            try:
                if part.position is None:  # the first append: the replay starts where it lands
                    part.start(await self._log.end(part.q))
                return await self._log.append(part.q, record.key, record.value, headers, record.timestamp_ms)
            except Exception as exc:
                attempt += 1
                self._metrics.park_write_failures.inc()
                log.error("park_write_failed", error=f"{type(exc).__name__}: {exc}", attempt=attempt)
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
        return None

    def _landed(
        self, done: asyncio.Future[int], item: tuple[Record, str, float, Version | None, _Partition]
    ) -> None:
        record, tenant, _, _, part = item
        self._pending.get(record.tp, set()).discard(done)
        if self._parts.get(record.tp) is not part:  # revoked meanwhile: unresolved, read again
            return
        if done.cancelled() or done.exception() is not None:
            self._metrics.park_write_failures.inc()
            self._writes.put_nowait(item)  # again: the replay orders it by its offset
            return
        part.writing[tenant] -= 1
        offset = done.result()
        if debug_enabled():
            log.debug(
                "parked",
                tenant=tenant,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                parked_at=offset,
            )
        part.last_written = max(part.last_written, offset)
        self._metrics.parked_events.inc()
        self._resolved(record)
        self._wake.set()

    # -- replay -------------------------------------------------------------------------------
    def _allowance(self, tenant: str) -> int:
        """How many more of ``tenant``'s parked events the coalescer may take now: one while its
        circuit is open (the probe), ``tenants.park_replay_events`` once it is closed."""
        served = self._tenancy.served().get(tenant)
        if served is None:  # no longer served: its events go to the DLQ (stage route)
            return 1 << 30
        closed = served.deliverer.circuit.state is State.CLOSED
        return (self._settings.tenants.park_replay_events if closed else 1) - self._out[tenant]

    def _valid(self, part: _Partition, tp: TopicPartition, parked: _Parked) -> bool:
        """Whether a parking record is one to replay for ``tp``: parked from it by this member, or by
        an earlier one that committed past it."""
        if parked.record.tp != tp:
            return False
        if parked.token == part.token:
            return True
        limit = part.inherited.get(parked.token)
        return limit is not None and parked.record.offset < limit

    def _hand_over(self, part: _Partition, parked: _Parked) -> None:
        if debug_enabled():
            r = parked.record
            log.debug(
                "park_replay",
                tenant=parked.tenant,
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                parked_at=r.parked_at,
            )
        part.dispatched[parked.record.parked_at] = parked.tenant
        self._out[parked.tenant] += 1
        self._metrics.replayed_events.inc()
        hold = max(0.0, parked.hold_until - self._clock.wall())
        self._dispatch(parked.record, hold, parked.as_of)

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_S):
                    await self._wake.wait()
            self._wake.clear()
            if self.stopping:
                continue
            for tp in sorted(self._parts):
                try:
                    await self._scan(tp)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a read that failed is tried again on the next round
                    log.warning("park_read_failed", partition=str(tp), error=f"{type(exc).__name__}: {exc}")
            self._gauges()

    def _live(self, tp: TopicPartition, part: _Partition) -> bool:
        """Whether ``part`` is still the state of an owned ``tp`` that is not being revoked."""
        return self._parts.get(tp) is part and not part.frozen

    async def _scan(self, tp: TopicPartition) -> None:
        part = self._parts.get(tp)
        if part is None or part.frozen:
            return
        if part.position is None or part.scan is None:
            self._unpark(tp, part)  # parked, but nothing was written yet
            return
        if not await self._warmed(tp):
            return  # what the warm-up remembers decides whether a replayed event is stale
        for tenant in sorted(part.held_from):
            if self._allowance(tenant) > 0:
                await self._rescan(tp, part, tenant)
        bound = self._settings.kafka.max_held_offsets
        for _ in range(_READS_PER_ROUND):
            if not self._live(tp, part) or part.scan.held >= bound:
                return
            assert self._log is not None
            batch = await self._log.read(part.q, part.position, _READ_BATCH)
            if not self._live(tp, part):
                return
            batch = [r for r in batch if r.offset >= part.position]
            if not batch:
                break
            if self._prefetch is not None:  # a parked record holds the original key and value
                await self._prefetch(batch)
                if not self._live(tp, part):
                    return
            for r in batch:
                part.position = r.offset + 1
                parked = _unpack(r)
                part.scan.track(r.offset, 0, r.timestamp_ms / 1000.0)
                if parked is None or not self._valid(part, tp, parked):
                    part.scan.resolve(r.offset)
                    continue
                tenant = parked.tenant
                if tenant in part.held_from or self._allowance(tenant) <= 0:
                    part.held_from.setdefault(tenant, r.offset)
                    part.held_ts.setdefault(tenant, r.timestamp_ms / 1000.0)
                    part.held[tenant] += 1
                    continue
                self._hand_over(part, parked)
            await asyncio.sleep(0)
        self._unpark(tp, part)

    async def _rescan(self, tp: TopicPartition, part: _Partition, tenant: str) -> None:
        """Read again from ``tenant``'s first held-back record, handing over what it may take now."""
        assert self._log is not None
        assert part.scan is not None
        assert part.position is not None
        at = part.held_from[tenant]
        while at < part.position:
            batch = await self._log.read(part.q, at, _READ_BATCH)
            if not self._live(tp, part) or not batch:
                return
            if self._prefetch is not None:
                await self._prefetch(batch)
                if not self._live(tp, part):
                    return
            for r in batch:
                if r.offset < at:
                    continue
                if r.offset >= part.position:
                    break
                at = r.offset + 1
                if not part.scan.is_unresolved(r.offset) or r.offset in part.dispatched:
                    continue
                parked = _unpack(r)
                if parked is None or parked.tenant != tenant or not self._valid(part, tp, parked):
                    continue
                if self._allowance(tenant) <= 0:
                    part.held_from[tenant] = r.offset
                    part.held_ts[tenant] = r.timestamp_ms / 1000.0
                    return
                part.held[tenant] -= 1
                self._hand_over(part, parked)
            await asyncio.sleep(0)
        del part.held_from[tenant]
        part.held_ts.pop(tenant, None)

    def _unpark(self, tp: TopicPartition, part: _Partition) -> None:
        """Tenants whose parked events of ``tp`` are all resolved, with nothing on its way, and whose
        circuit is closed, are sent directly again. One whose circuit stays open stays parked: its
        next event is parked, and replayed as the probe that closes the circuit."""
        unread = part.position is not None and part.position <= part.last_written
        for tenant in sorted(part.parked):
            served = self._tenancy.served().get(tenant)
            if served is not None and served.deliverer.circuit.state is not State.CLOSED:
                continue
            busy = (
                unread
                or tenant in part.held_from
                or part.held[tenant] > 0
                or part.writing[tenant] > 0
                or tenant in part.dispatched.values()
            )
            if not busy:
                part.parked.discard(tenant)
                log.warning("tenant_unparked", tenant=tenant, partition=str(tp), action="sent directly again")

    # -- park decisions -----------------------------------------------------------------------
    def check(self) -> None:
        """Park every tenant that cannot be served (circuit open ``tenants.park_after_seconds``, or
        more than ``tenants.park_max_keys`` orders waiting for that long) on every partition it is
        not parked on yet."""
        if not self.enabled or self.stopping or not self._parts:
            return
        t = self._settings.tenants
        now, wall = self._clock.monotonic(), self._clock.wall()
        load = self._coalescer.load_by_tenant()
        for name, served in self._tenancy.served().items():
            if name in self._parking:
                continue
            opened = served.deliverer.circuit.opened_at
            down = opened is not None and now - opened >= t.park_after_seconds
            count, oldest = load.get(name, (0, float("inf")))
            behind = count > t.park_max_keys and wall - oldest >= t.park_after_seconds
            if not (down or behind):
                continue
            if self._room(name):
                why = "circuit open" if down else f"{count} orders waiting"
                self._parking[name] = asyncio.create_task(self._park(name, why), name=f"park-{name}")

    def _room(self, tenant: str) -> set[TopicPartition]:
        """Owned partitions ``tenant`` may still be parked on (not yet, and under the cap)."""
        cap = self._settings.tenants.max_parked
        return {tp for tp, p in self._parts.items() if tenant not in p.parked and len(p.parked) < cap}

    async def _park(self, tenant: str, why: str) -> None:
        try:
            await self._park_now(tenant, why)
        finally:
            self._parking.pop(tenant, None)

    async def interrupt(self) -> None:
        """Stop the parks under way (a revoke or a shutdown is starting). A park is cancelled only
        while its tenant's calls in flight finish: nothing is parked yet, and the assignment that
        follows a revoke lets every deliverer take jobs again."""
        tasks = list(self._parking.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _park_now(self, tenant: str, why: str) -> None:
        served = self._tenancy.served().get(tenant)
        room = self._room(tenant)
        if served is None or not room or self.stopping:
            return
        deliverer = served.deliverer
        changes: list[tuple[OrderChange, Version | None]] = []
        # Its calls in flight finish (bounded); what is queued or retrying stays in the coalescer.
        await deliverer.drain(room, timeout=self._settings.sink.timeout_seconds + 1.0)
        try:
            room &= self._parts.keys()
            for tp in room:
                self._parts[tp].parked.add(tenant)
            # A request of these orders may still land for settle_seconds: their replay waits for it.
            hold = self._clock.wall() + self._settings.sink.settle_seconds
            changes = self._coalescer.take_tenant(tenant, room)
            for change, as_of in changes:
                self.park(change.record, tenant, hold, as_of)
        finally:
            deliverer.undrain(room)
        log.warning(
            "tenant_parked",
            tenant=tenant,
            reason=why,
            partitions=sorted(str(tp) for tp in room),
            events=len(changes),
            action="its events go to the parking topic and are replayed from there as it recovers",
        )
        self._gauges()

    # -- observability ------------------------------------------------------------------------
    def oldest(self) -> dict[str, float]:
        """Per parked tenant, the record time of its oldest event held back on the parking topic."""
        out: dict[str, float] = {}
        for part in self._parts.values():
            for tenant, stamp in part.held_ts.items():
                if stamp and stamp < out.get(tenant, float("inf")):
                    out[tenant] = stamp
        return out

    def tenants(self) -> set[str]:
        """Tenants parked on at least one partition this member owns."""
        return {name for part in self._parts.values() for name in part.parked}

    def _gauges(self) -> None:
        self._metrics.parked_tenants.set(len(self.tenants()))
        self._metrics.parked_unresolved.set(
            sum(p.scan.unresolved for p in self._parts.values() if p.scan is not None)
        )


__all__ = ["Parking"]
