"""Read-back audits: on budget ticks live traffic leaves unused, read orders back from the vendor and
compare its copy with what was delivered; send the drifts of the classes ``audit.repair`` names again.

One :class:`Auditor` per shop, beside its deliverer. It keeps the change last delivered of up to
``audit.remember_orders`` orders (told by the deliverer, :meth:`Auditor.delivered`; the source record's
bytes dropped) and reads them back in this order: first those delivered after an ambiguous outcome
(a late write may have landed over them), then those delivered and not yet read, then a rolling
sweep of all it keeps, least recently read first, none read again within
``audit.min_interval_seconds``. A read takes a spare tick (:meth:`~connector.pacing.Pacer.acquire_spare`:
one no live request took; none while a 429 cut the pace or a ``Retry-After`` holds; none while the
shop has a live change in hand, which will use its ticks, and on a member that cannot keep up, the CPU
they need: measured, reading back every order delivered during a 1,000-shop backlog cut the
deliveries a CPU second by 40%), and reads are
at most ``audit.share`` of this member's share of the budget and ``audit.max_reads_per_second`` (a
high budget left unused is no reason to read without end); with no spare tick, no read. The read
itself is sent by the deliverer (:meth:`~connector.deliver.Deliverer.read`), in the order's one job and
under the fence, so that no two requests of an order are at the vendor together; its end comes back
here (:meth:`Auditor.read_ended`).

The vendor's copy is judged by :func:`connector.readback.compare`, ``updated_at`` first: in sync,
or a drift (:class:`~connector.config.Drift`): *missing*, *older* (or still held after our delete),
*differs* (our version, other field values: an edit in the vendor's admin?), *ahead* (a newer version
than ours: someone else wrote it; never repaired). Each drift is counted, and logged (``audit_drift``)
at WARNING once per drift of a delivered change (read again and still so: at DEBUG);
a drift of a class in ``audit.repair`` (by default missing and older) is repaired on the next spare tick
the audit takes (repairs before reads, counted in the same share): the change last delivered is handed
to the deliverer (:meth:`~connector.deliver.Deliverer.repair`), sent once in the order's one job while
that tick is fresh, the order settled, the partition fenced and the circuit closed (else given up, and
the order is read again later), so a live change of the order takes it over and an older state never
follows a newer one; a repair that ended unknown holds its order ``settle_seconds``.

A revoked partition's orders are forgotten (their next owner audits what it delivers), and so is an
order from the moment a live change of it is handed to the deliverer until that change is delivered
(an attempt of it may land late, fail for good, or be abandoned with its partition: found by the
simulation, many-shop seed 170 with the audits on).

The auditor also sends what a resync hands it (:meth:`Auditor.resend`, :mod:`connector.resync`),
audits on or off: after the audit's repairs, before its reads, through the same repair lane, on a spare
tick, or, when none comes within ``1 / (share x this member's rate)`` seconds, on a tick taken as live
work takes one (the resync's floor ``share``: it progresses under any live load). A live change of an
order skips its resend (the live traffic sends a newer state).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import orjson

from connector._resends import Resends, Resent, Told
from connector.clock import Clock
from connector.config import AuditSettings, Drift
from connector.deliver import Outcome, OutcomeKind
from connector.errors import InputError, NotFoundError, RejectedError
from connector.instruments import Audited, AuditHooks, RepairEnded
from connector.logs import get_logger
from connector.pacing import Pacer
from connector.readback import ReadEnded, Verdict, compare
from connector.structs import OrderChange, TopicPartition

log = get_logger("connector.audit")

IDLE_LOOK = 1.0
"""Seconds between two looks for an order to read when there is none, or no spare tick came."""
MAX_BACKOFF = 60.0
"""Seconds at most between two reads after reads failed in a row."""

_DRIFT = {
    Verdict.MISSING: Drift.MISSING,
    Verdict.BEHIND: Drift.OLDER,
    Verdict.DIFFERS: Drift.DIFFERS,
    Verdict.AHEAD: Drift.AHEAD,
}


class Desk(Protocol):
    """Where an audit's reads and repairs are sent, each in its order's one job, through the fence
    (``connector.deliver.Deliverer``)."""

    @property
    def idle(self) -> asyncio.Event:
        """Set while the shop has no live change in hand (a shop with work uses its ticks)."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the shop's circuit is closed (a repair on a spare tick may be sent)."""
        ...

    def read(self, change: OrderChange, tick: float) -> bool: ...

    def repair(self, change: OrderChange, tick: float | None) -> bool: ...


@dataclass(slots=True)
class _Kept:
    """An order delivered: its change last delivered (its body as JSON: a third of the memory of the
    parsed one), and what the audit knows of it."""

    change: OrderChange  # without its body, nor its record's bytes
    body: bytes
    ambiguous: bool
    written_at: float  # wall clock: when the request that last wrote this state left (its tick)
    read_at: float = -math.inf  # monotonic: when it was last read back
    reported: Drift | None = None  # the drift last logged at WARNING (a lasting edit is logged once)
    refused: bool = False  # a repair of this state was refused for good: reported, never sent again

    def order(self) -> OrderChange:
        """The change last delivered, whole (a new object each time; its record is the one kept)."""
        return dataclasses.replace(self.change, body=orjson.loads(self.body))


class Auditor:
    """One shop's read-back audits (an async context manager: the loop runs while inside)."""

    def __init__(
        self,
        pacer: Pacer,
        hooks: AuditHooks,
        settings: AuditSettings,
        *,
        clock: Clock,
        tenant: str = "",
    ) -> None:
        self._pacer = pacer
        self._hooks = hooks
        self._settings = settings
        self._clock = clock
        self.tenant = tenant
        self._desk: Desk | None = None
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # least recently read first
        self._urgent: deque[str] = deque()  # delivered after an ambiguous outcome, not yet read
        self._fresh: deque[str] = deque()  # delivered, not yet read
        self._pending: dict[str, Drift] = {}  # drifts to repair on the next spare ticks, in order
        self._repairing: dict[str, tuple[Drift, float]] = {}  # the repairs under way: drift, tick
        self._resends = Resends()  # what a resync handed over, to send again
        self._floor: str | None = None  # the resend sent as live work is (its key), until it ends
        self._failures = 0
        self._unsupported = False  # the vendor's client reads no order back
        self._reading = settings.enabled and settings.remember_orders > 0
        self.limit = settings.remember_orders  # orders kept: its share of the member's (set_limit)
        self._entered = False
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # orders read back (tests, figures)

    def connect(self, desk: Desk) -> None:
        """Where reads and repairs are sent (the shop's deliverer, built after this)."""
        self._desk = desk

    async def __aenter__(self) -> Self:
        self._entered = True
        if self._reading:
            self._start()
        return self

    def _start(self) -> None:
        if self._task is None and self._entered:
            self._task = asyncio.create_task(self._run(), name=f"audit-{self.tenant}")

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._resends.close()  # the shop is not served here any more: a resync must not wait for it

    def set_limit(self, orders: int) -> None:
        """Keep at most ``orders`` delivered orders (this shop's share of
        ``audit.remember_orders_per_member``, as the shops served change), the least recently read
        dropped at once."""
        self.limit = orders
        while len(self._kept) > orders:
            self._kept.popitem(last=False)

    @property
    def kept(self) -> int:
        """Orders kept for reading back."""
        return len(self._kept)

    @property
    def waiting(self) -> int:
        """Deliveries waiting to be read back first (ambiguous ones, then new ones)."""
        return len(self._urgent) + len(self._fresh)

    @property
    def resends(self) -> int:
        """Changes a resync handed over, in line or in flight."""
        return len(self._resends) + self._resends.in_flight

    def resend(self, change: OrderChange, told: Told) -> None:
        """Send ``change`` again for a resync (``told``: who to tell how it ended, once); skipped when
        its order was written at that state or a newer one since the resync was asked."""
        kept = self._kept.get(change.key)
        written = kept is not None and kept.written_at >= told.asked_at
        if written and kept is not None and not kept.change.version.older_than(change.version):
            self._resends.superseded(change.key)
            told.ended(change, Resent.SKIPPED)
            return
        self._resends.add(change, told)
        self._start()

    def withdraw(self, told: Told) -> None:
        """Drop what ``told`` handed over and is still in line (its resync was cancelled)."""
        self._resends.withdraw(told)

    # -- told by the deliverer (its Audits) -----------------------------------------------------
    def delivered(self, change: OrderChange, ambiguous: bool, sent_at: float | None = None) -> None:
        """Keep ``change`` as its order's last delivered state, to be read back soon (a resend of
        the order waiting is skipped: this state is at least as new). ``sent_at``: when its request
        left (a request under way when the vendor lost everything may have landed before)."""
        self._resends.superseded(change.key)
        self._keep(change, ambiguous, sent_at)

    def _keep(self, change: OrderChange, ambiguous: bool, sent_at: float | None = None) -> None:
        if not self._reading or self._unsupported:
            return
        key = change.key
        self._kept.pop(key, None)
        record = dataclasses.replace(change.record, value=None, headers=())  # the bytes are not needed
        kept = dataclasses.replace(change, record=record, body={}, pending=None)
        # A copy: the bytes orjson returns keep the 4 KB it wrote them into (measured: 4,098 bytes
        # retained per body of `connector samples`' size, 472 copied).
        body = bytes(memoryview(orjson.dumps(change.body)))
        self._kept[key] = _Kept(kept, body, ambiguous, self._clock.wall() if sent_at is None else sent_at)
        queue = self._urgent if ambiguous else self._fresh
        queue.append(key)
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)
        if len(queue) > 2 * self.limit:  # delivered faster than read: the same
            unread = dict.fromkeys(k for k in queue if k in self._kept)  # keys again, or forgotten ones
            queue.clear()
            queue.extend(unread)

    def repair_ended(self, outcome: Outcome) -> None:
        """A repair this audit asked for, or a resend, ended."""
        if outcome.key == self._floor:
            self._floor = None
        if self._resends.ended(outcome):
            if outcome.kind is OutcomeKind.DELIVERED and outcome.change is not None:
                self._pending.pop(outcome.key, None)  # a drift read before it: stale now
                self._keep(outcome.change, False)
            return
        drift, tick = self._repairing.pop(outcome.key, (None, self._clock.wall()))
        kept = self._kept.get(outcome.key)
        if kept is not None and outcome.kind is OutcomeKind.DELIVERED:  # read again soon: repaired?
            kept.read_at = -math.inf
            kept.written_at = tick
            self._fresh.append(outcome.key)
            self._resends.covered(kept.change, tick)
        elif kept is not None and isinstance(outcome.error, _REFUSED):
            kept.refused = True  # e.g. Shoplazza: an update of an order the store lost is a 404
        self._hooks.repair_ended(RepairEnded(self.tenant, str(drift or "unknown"), outcome.kind.value))
        change = outcome.change
        log.info(
            "audit_repair_ended",
            tenant=self.tenant or None,
            external_id=change.external_id if change else outcome.key,
            drift=str(drift) if drift else None,
            outcome=outcome.kind.value,
            error=str(outcome.error)[:300] if outcome.error else None,
        )

    def unsure(self, key: str) -> None:
        """A live change of ``key`` is on its way (:meth:`Audits.unsure`): the order is dropped until
        it is delivered again."""
        self._kept.pop(key, None)
        self._pending.pop(key, None)
        self._resends.superseded(key)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the orders of ``partitions`` (revoked: their next owner audits what it delivers)."""
        for key in [key for key, kept in self._kept.items() if kept.change.tp in partitions]:
            del self._kept[key]
            self._pending.pop(key, None)
        self._resends.forget(partitions)

    # -- the loop ---------------------------------------------------------------------------------
    def _next(self, now: float) -> _Kept | None:
        """The order to read next: urgent, then fresh, then the least recently read, if due."""
        for queue in (self._urgent, self._fresh):
            while queue:
                kept = self._kept.get(queue.popleft())
                if kept is not None and kept.read_at == -math.inf and kept.change.key not in self._repairing:
                    return kept
        for kept in self._kept.values():
            due = now - kept.read_at >= self._settings.min_interval_seconds
            if due and kept.change.key not in self._repairing:
                return kept
            if now - kept.read_at < self._settings.min_interval_seconds:
                return None  # least recently read first: the rest were read later still
        return None

    def _due(self, now: float) -> bool:
        if self._pending or self._resends or self._urgent or self._fresh:
            return True
        first = next(iter(self._kept.values()), None)
        return first is not None and now - first.read_at >= self._settings.min_interval_seconds

    async def _run(self) -> None:
        while True:
            try:
                await self._turn()
            except asyncio.CancelledError:
                raise
            except Exception:  # a defect here must not end the audits silently
                log.exception("audit_failed", tenant=self.tenant or None)
                await asyncio.sleep(IDLE_LOOK)

    async def _turn(self) -> None:
        """Take a spare tick when something is due, and spend it on a repair (first) or a read."""
        if self._desk is None or not self._due(self._clock.monotonic()):
            await asyncio.sleep(IDLE_LOOK)
            return
        if self._resends and not self._pending:
            await self._resend()
            return
        if not self._desk.idle.is_set():  # live work in hand: it uses the ticks (and the CPU)
            await self._desk.idle.wait()
            return
        tick = await self._pacer.acquire_spare(within=IDLE_LOOK)
        if tick is None:
            return
        now = self._clock.monotonic()
        if not self._repair(tick):
            kept = self._next(now)
            if kept is None:  # nothing due after all (those due are being repaired): not again at once
                await asyncio.sleep(IDLE_LOOK)
                return
            kept.read_at = now
            self._kept.move_to_end(kept.change.key)
            if not self._desk.read(kept.order(), tick):
                return  # its order has a job: its newest state is on its way, and read after
            self.reads += 1
        # At most ``share`` of this member's ticks and ``max_reads_per_second``; slower while reads fail.
        rate = min(self._pacer.full_rate * self._settings.share, self._settings.max_reads_per_second)
        gap = 1.0 / rate if rate > 0 else IDLE_LOOK
        if self._failures:
            gap = max(gap, min(MAX_BACKOFF, 2.0 ** min(self._failures, 8)))
        await asyncio.sleep(max(0.0, now + gap - self._clock.monotonic()))

    async def _resend(self) -> None:
        """Send the first change in the resync's line: on a spare tick, or, when none comes within
        the floor's spacing (or the circuit is not closed), as live work: the repair job then waits
        at the deliverer's gate and takes its own tick, and may be the circuit's probe (with no
        live traffic, nothing else would probe it). One such at a time, one per spacing at most."""
        assert self._desk is not None
        started = self._clock.monotonic()
        rate = self._pacer.full_rate * self._resends.floor()
        gap = 1.0 / rate if rate > 0 else IDLE_LOOK
        tick = await self._pacer.acquire_spare(within=gap) if self._desk.closed else None
        if tick is None and self._floor is not None:  # the last one sent as live work is on its way
            await asyncio.sleep(gap)
            return
        item = self._resends.take()
        if item is None:
            return
        if not self._desk.repair(item.change, tick):  # its order has a job (an audit's read)
            self._resends.put_back(item)
            await asyncio.sleep(min(gap, IDLE_LOOK))
        elif tick is None:
            self._floor = item.change.key
            await asyncio.sleep(max(0.0, started + gap - self._clock.monotonic()))

    def _repair(self, tick: float) -> bool:
        """Send the first drift waiting for a repair on ``tick``; False when none was sent."""
        assert self._desk is not None
        while self._pending:
            key, drift = next(iter(self._pending.items()))
            del self._pending[key]
            kept = self._kept.get(key)
            if kept is not None and key not in self._repairing and self._desk.repair(kept.order(), tick):
                self._repairing[key] = (drift, tick)
                return True
        return False

    def read_ended(self, ended: ReadEnded) -> None:
        """A read ended (told by the deliverer): judge what the vendor holds, and repair a drift."""
        change = ended.change
        key = change.key
        kept = self._kept.get(key)
        if not ended.sent:
            if kept is not None and kept.change.record is change.record:
                kept.read_at = -math.inf  # not read: due again, where it was
                (self._urgent if kept.ambiguous else self._fresh).append(key)
            return
        if ended.error is not None:
            self._failures += 1  # (a 429 has cut the pace already: the client told the pacer)
            self._hooks.order_audited(Audited(self.tenant, "failed"))
            log.debug("audit_read_failed", tenant=self.tenant or None, external_id=change.external_id,
                      error=str(ended.error)[:300], error_class=type(ended.error).__name__)  # fmt: skip
            return
        self._failures = 0
        held = ended.held
        if held is None:  # the vendor's client cannot read an order back: nothing to audit
            self._unsupported = True
            self._kept.clear()
            self._urgent.clear()
            self._fresh.clear()
            log.info("audit_unsupported", tenant=self.tenant or None, note="its client reads no order back")
            return
        if kept is None or kept.change.record is not change.record:
            return  # delivered again, or unsure, while it was read: not judged
        verdict, line, fields = compare(change, held)
        drift = _DRIFT.get(verdict)
        result = str(drift) if drift else "found" if verdict is Verdict.UNKNOWN else "in_sync"
        self._hooks.order_audited(Audited(self.tenant, result))
        if drift is None:
            kept.reported = None
            return
        repair = drift in self._settings.repair and not kept.refused
        said = log.warning if drift is not kept.reported else log.debug  # once per drift and change
        kept.reported = drift
        said(
            "audit_drift",
            tenant=self.tenant or None,
            external_id=change.external_id,
            drift=str(drift),
            verdict=line,
            fields=fields[:20] or None,
            repair=repair,
            topic=change.record.topic,
            partition=change.record.partition,
            offset=change.record.offset,
        )
        if repair:
            self._pending[key] = drift  # on the next spare tick


_REFUSED = (RejectedError, NotFoundError, InputError)
"""A repair that ended in one of these is not sent again for the same delivered state: the vendor
refuses the order itself (Shoplazza cannot be sent an order its store lost: 404; a body it rejects),
and reading and repairing it every ``audit.min_interval_seconds`` would spend two calls each time for
nothing. Not a 403 (a scope the operator may grant) nor a 409 (a conflict that passes)."""


__all__ = ["IDLE_LOOK", "Auditor", "Desk"]
