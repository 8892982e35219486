"""Parking: the decisions (which tenant, when), the appends, and the state each partition's commit
carries (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zlib
from collections.abc import Awaitable, Callable, Mapping
from random import Random
from types import TracebackType
from typing import Self

from connector.clock import Clock
from connector.coalesce import Coalescer
from connector.config import Settings
from connector.constants import CommitMeta
from connector.logs import debug_enabled, get_logger
from connector.metrics import Metrics
from connector.park._records import Partition, park_headers
from connector.park._replay import Replay
from connector.park.log import ParkLog
from connector.structs import OrderChange, Record, TopicPartition, Version
from connector.tenancy import Tenancy

log = get_logger("connector.park")


class Parking(Replay):
    """Parks tenants that cannot be served, and replays what they parked (package docstring)."""

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
        super().__init__(settings, park_log, tenancy, metrics, clock, dispatch, warmed, prefetch)
        self.enabled = park_log is not None and tenancy.many and settings.tenants.park_after_seconds > 0
        self._coalescer = coalescer
        self._rng = rng
        self._resolved = resolved
        self._index: dict[TopicPartition, int] = {}
        self._queues = 0
        self._writes: asyncio.Queue[tuple[Record, str, float, Version | None, Partition]] = asyncio.Queue()
        self._pending: dict[TopicPartition, set[asyncio.Future[int]]] = {}
        self._parking: dict[str, asyncio.Task[None]] = {}
        self.blinded: set[TopicPartition] = set()  # see blind()
        self._tasks: list[asyncio.Task[None]] = []

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
        return self._index.get(tp, zlib.crc32(str(tp).encode())) % max(1, self._queues)

    async def assign(self, tp: TopicPartition, meta: CommitMeta) -> None:
        """``tp`` is ours: carry on its parking state from the last commit."""
        if not self.enabled:
            return
        assert self._log is not None
        part = Partition(self._queue_of(tp), f"{self._rng.getrandbits(32):08x}")
        parked = {self._tenancy.canonical(name) for name in meta.parked}  # renamed since: as known now
        part.parked = set(parked)
        part.parked_before = frozenset(parked)
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

    def parked_before(self, tp: TopicPartition, tenant: str) -> bool:
        """Whether ``tenant`` was parked on ``tp`` when the last owner committed it: its events
        before the committed offset may have been parked, not delivered (a tenant this member parks
        later was parked only from the records it reads itself)."""
        part = self._parts.get(tp)
        return part is not None and tenant in part.parked_before

    def park(
        self, record: Record, tenant: str, hold_until: float = 0.0, as_of: Version | None = None
    ) -> None:
        """Append ``record`` to the parking topic; its offset is resolved once acknowledged.
        ``hold_until``: no request for its order before then; ``as_of``: a newer event of its order
        that was skipped as identical to it (its replay stands for that one)."""
        part = self._parts[record.tp]
        part.writing[tenant] += 1
        self._writes.put_nowait((record, tenant, hold_until, as_of, part))

    # -- appends ------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self._log is not None
        while True:
            record, tenant, hold, as_of, part = await self._writes.get()
            if self._parts.get(record.tp) is not part:  # revoked meanwhile: the next owner reads it
                continue
            headers = park_headers(record, tenant, part.token, hold, as_of)
            landed = await self._append(record, headers, part)
            if landed is None:
                continue
            self._pending.setdefault(record.tp, set()).add(landed)
            landed.add_done_callback(
                functools.partial(self._landed, item=(record, tenant, hold, as_of, part))
            )

    async def _append(
        self, record: Record, headers: list[tuple[str, bytes]], part: Partition
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
        self, done: asyncio.Future[int], item: tuple[Record, str, float, Version | None, Partition]
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


__all__ = ["Parking"]
