"""Parking: acting on the decisions (parking a tenant, when the rules say so) and the state each
partition's commit carries. Its parts: the rules (``_rules.py``: which tenant, where), the replay
(``_replay.py``), the appends to the parking topic (``_writer.py``) and the parking topic's layout
(``_layout.py``). See the package docstring."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from random import Random
from types import TracebackType
from typing import Self

from connector import metadata as wire
from connector.clock import Clock
from connector.coalesce import Coalescer, Resolution
from connector.config import Settings
from connector.instruments import ParkHooks
from connector.logs import get_logger
from connector.ownership import Assignment, PartitionStatus
from connector.park._layout import ParkLayout
from connector.park._ports import ParkLedger, ParkReader, Shops, Warmth
from connector.park._replay import Replay
from connector.park._rules import ParkRules
from connector.park._writer import ParkWriter
from connector.park.log import ParkLog
from connector.parked import ParkState
from connector.structs import OrderChange, Record, TopicPartition, Version

log = get_logger("connector.park")


class Parking:
    """Parks tenants that cannot be served, and replays what they parked (package docstring)."""

    def __init__(
        self,
        settings: Settings,
        park_log: ParkLog | None,
        assignment: Assignment,
        coalescer: Coalescer,
        shops: Shops,
        hooks: ParkHooks,
        *,
        clock: Clock,
        rng: Random,
    ) -> None:
        self._settings = settings
        self._log = park_log
        self._assignment = assignment
        self._coalescer = coalescer
        self._shops = shops
        self._hooks = hooks
        self._clock = clock
        self._rng = rng
        # Parking state is honoured wherever there are tenants and a parking topic, also with
        # parking switched off (tenants.park_after_seconds = 0): only new parks are off then.
        self.available = park_log is not None and shops.many
        self.may_park = self.available and settings.tenants.park_after_seconds > 0
        self.replay = (
            Replay(settings, park_log, assignment, shops, hooks, clock) if park_log is not None else None
        )
        self._layout = ParkLayout(park_log, settings.park_topic, self.may_park)
        self._writer = ParkWriter(park_log, assignment, hooks, clock, self.replay)
        self._rules = ParkRules(settings, assignment, coalescer, shops, hooks, clock)
        self._parking: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ledger: ParkLedger | None = None

    def connect(self, ledger: ParkLedger, reader: ParkReader, warmth: Warmth) -> None:
        """Where parked records are resolved and replayed ones go (the ledger), how they are read
        (the read path), and when a partition's replay may start (the membership, once its warm-up
        is over). These are built after parking; connected before it is entered."""
        self._ledger = ledger
        self._writer.connect(ledger)
        if self.replay is not None:
            self.replay.connect(ledger, reader, warmth)

    async def __aenter__(self) -> Self:
        if self.available and self.replay is not None:
            await self._layout.find()
            self._tasks = [
                asyncio.create_task(self._writer.run(), name="park-writer"),
                asyncio.create_task(self.replay.run(), name="park-replay"),
            ]
            if not self._layout.partitions:
                self._tasks.append(asyncio.create_task(self._layout.watch(), name="park-topic"))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in [*self._tasks, *self._parking.values()]:
            task.cancel()
        for task in [*self._tasks, *self._parking.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def stopping(self) -> bool:
        """Shutting down: nothing more is parked or replayed."""
        return self._stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = value
        if self.replay is not None:
            self.replay.stopping = value

    # -- layout and ownership -----------------------------------------------------------------

    def set_layout(self, partitions: Mapping[str, int]) -> None:
        """Every source partition's place in the layout (the same on every member): its index
        modulo the parking topic's partitions is the parking partition of a source partition that
        never parked anything (once something was, its commit records which one)."""
        self._layout.set_layout(partitions)

    async def assign(self, tp: TopicPartition, meta: wire.CommitMeta, committed: int | None) -> bool:
        """``tp`` is ours: carry on its parking state from the last commit. False when that state
        cannot be taken up now (the parking topic is not there or not reachable): the partition
        then waits, and this is asked again."""
        part = self._assignment.get(tp)
        if part is None or not self.available:
            return True  # single shop: whatever the commit carries is carried forward unchanged
        inherited = bool(meta.replay_starts or meta.parked)
        queues = self._layout.partitions
        if not queues:
            return not inherited
        assert self._log is not None
        q = meta.park_partition if meta.park_partition is not None else self._layout.queue_of(tp)
        if q >= queues:
            log.error("park_partition_missing", partition=str(tp), parking_partition=q, partitions=queues)
            return False
        state = ParkState(q, f"{self._rng.getrandbits(32):08x}", committed)
        canonical = self._shops.canonical  # a shop renamed since: as it is known now
        state.parked = {canonical(name) for name in meta.parked}
        for name, start in meta.replay_starts.items():
            state.starts[canonical(name)] = min(start, state.starts.get(canonical(name), start))
        state.tokens = dict(meta.tokens)
        if state.starts:
            try:
                state.end_at_assign = await self._log.end(q)
            except Exception as exc:  # unknown: asked again, the partition waits meanwhile
                log.warning("park_end_lookup_failed", partition=str(tp), error=f"{type(exc).__name__}")
                return False
            state.begin(min(state.starts.values()))
        else:
            state.looked_ahead = True  # nothing inherited to read ahead
        if self._assignment.get(tp) is not part:
            return True  # revoked meanwhile
        part.park = state
        if state.parked or state.starts:
            log.info(
                "partition_parked_tenants",
                partition=str(tp),
                tenants=sorted(state.parked),
                replay=dict(sorted(state.starts.items())) or None,
            )
        if self.replay is not None:
            self.replay.wake()
        return True

    async def flush(self, tp: TopicPartition, timeout: float) -> None:
        """Wait (bounded) for the appends of ``tp`` still on their way: a hand-over commits them."""
        await self._writer.flush(tp, timeout)

    def revoke(self, tp: TopicPartition, state: ParkState | None) -> None:
        """``tp`` is no longer ours: its replayed changes went with it."""
        if state is not None and self.replay is not None:
            self.replay.forget(state)
        self._writer.forget(tp)

    def commit_state(self, partitions: set[TopicPartition]) -> dict[TopicPartition, wire.CommitMeta]:
        """The parking part of a commit of each of ``partitions`` parking knows (the others carry
        what their last commit said)."""
        out = {}
        for tp in partitions:
            part = self._assignment.get(tp)
            if part is not None and part.park is not None:
                offset = part.offsets.committable()
                out[tp] = part.park.commit_meta(offset if offset is not None else 0)
        return out

    # -- the read path ------------------------------------------------------------------------

    def _state(self, tp: TopicPartition) -> ParkState | None:
        part = self._assignment.get(tp)
        return part.park if part is not None and part.status is not PartitionStatus.REVOKING else None

    def parked(self, tp: TopicPartition, tenant: str) -> bool:
        """Whether events of ``tenant`` read from ``tp`` go to the parking topic."""
        part = self._state(tp)
        return part is not None and tenant in part.parked

    def park(
        self, record: Record, tenant: str, hold_until: float = 0.0, as_of: Version | None = None
    ) -> None:
        """Append ``record`` to the parking topic; its offset is resolved once acknowledged.
        ``hold_until``: no request for its order before then; ``as_of``: a newer event of its order
        that was skipped as identical to it (its replay stands for that one)."""
        part = self._state(record.tp)
        assert part is not None
        self._writer.put(record, tenant, hold_until, as_of, part)

    def resolve(self, record: Record) -> bool:
        """A replayed record is resolved (delivered, replaced, skipped, dead-lettered)."""
        return self.replay is not None and self.replay.resolve(record)

    def superseded(self, change: OrderChange, record: Record) -> bool:
        """Whether a replayed ``change`` is older than a later parked event of its order."""
        return self.replay is not None and self.replay.superseded(change, record)

    # -- park decisions -----------------------------------------------------------------------

    def check(self) -> None:
        """Park every tenant that cannot be served on every partition it is not parked on yet
        (``_rules.py``: which tenants, and where)."""
        if not self.may_park or not self._layout.partitions or self._stopping:
            return
        for name, why in self._rules.due(self._parking):
            self._parking[name] = asyncio.create_task(self._park(name, why), name=f"park-{name}")

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
        room = self._rules.room(tenant)
        if self._shops.health(tenant) is None or not room or self._stopping:
            return
        changes: list[tuple[OrderChange, Version | None]] = []
        # Its calls in flight finish (bounded); what is queued or retrying stays in the coalescer.
        if not await self._shops.quiesce(tenant, room, timeout=self._settings.sink.timeout_seconds + 1.0):
            return
        try:
            room = {tp for tp in room if self._state(tp) is not None}
            for tp in room:
                state = self._state(tp)
                assert state is not None
                state.parked.add(tenant)
            # A request of these orders may still land for settle_seconds: their replay waits for it.
            hold = self._clock.wall() + self._settings.kafka.settle_seconds
            changes = self._coalescer.take_tenant(tenant, room)
            for change, as_of in changes:
                self.park(change.record, tenant, hold, as_of)
        finally:
            self._shops.resume(tenant, room)
            # Replayed changes stay in the coalescer (they are on the parking topic already); their
            # jobs were dropped by the drain: they need one again.
            for key, _ in self._coalescer.slots_of(tenant, room):
                newest, replaced = self._coalescer.promote(key)
                if replaced is not None and self._ledger is not None:
                    self._ledger.resolve(replaced.record, Resolution.REPLACED)
                if newest is not None:
                    self._shops.submit(newest)
        log.warning(
            "tenant_parked",
            tenant=tenant,
            reason=why,
            partitions=sorted(str(tp) for tp in room),
            events=len(changes),
            action="its events go to the parking topic and are replayed from there as it recovers",
        )

    # -- observability ------------------------------------------------------------------------

    def tenants(self) -> set[str]:
        """Tenants parked on at least one partition this member owns."""
        return self.replay.tenants() if self.replay is not None else set()

    def oldest(self) -> dict[str, float]:
        """Per parked tenant, the record time of its oldest event held back on the parking topic."""
        return self.replay.oldest() if self.replay is not None else {}


__all__ = ["Parking"]
