"""The ledger: what became of every record read, and the one place a record is resolved.

A record is offered here once it is read and decoded (:meth:`Ledger.offer`), coalesced with the
other changes of its order, and resolved exactly once: delivered, replaced by a newer event of its
order, skipped (stale, identical, ignored), parked, or acknowledged on the dead-letter topic. Work
goes one way: an order's first change starts its job (:meth:`Dispatch.submit`), each newer one is
handed to that job while nothing of the order is in flight (:meth:`Dispatch.replace`; the change it
displaces is resolved *replaced* at once), else it waits in the coalescer. The deliverer never asks
for work: it tells how a delivery ended (:meth:`Ledger.report`, its
:class:`~connector.deliver.WorkSource`), and the answer is the order's next change, if any.

A resolution moves its partition's watermark (:class:`~connector.ownership.Assignment`), or, for
a record replayed from the parking topic, its parking scan (:class:`Parked`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Protocol

from connector.clock import Clock
from connector.coalesce import Coalescer, Resolution
from connector.config import Settings
from connector.constants import Stage
from connector.deadletter import DeadLetterPublisher, Failure
from connector.deliver import Outcome, OutcomeKind
from connector.errors import InputError
from connector.instruments import DeadLettered, DeadLetterHooks, ReadHooks, Resolved, UnknownField
from connector.logs import debug_enabled, get_logger
from connector.ownership import Assignment
from connector.structs import OrderChange, Record, TopicPartition

log = get_logger("connector.ledger")


class Dispatch(Protocol):
    """Where an order with a change to send gets its job (one per order at a time)."""

    def submit(self, change: OrderChange, hold: float = 0.0) -> None:
        """Start a job for ``change``'s order (not before ``hold`` seconds from now)."""
        ...

    def replace(self, change: OrderChange) -> bool:
        """Hand a newer change to its order's job; False when a call of the order is in flight (or it
        has no job): the change waits for the job's next turn."""
        ...


class Parked(Protocol):
    """Resolves records replayed from the parking topic (their offsets are the parking scan's)."""

    def resolve(self, record: Record) -> bool: ...


class Leases(Protocol):
    """Asks for a commit soon when a partition has work but no lease to send it under yet."""

    def need_lease(self, tp: TopicPartition) -> None: ...


class LedgerHooks(ReadHooks, DeadLetterHooks, Protocol):
    """What the ledger reports: records resolved, unknown fields forwarded, dead letters written."""


class Ledger:
    """Coalesces what was read, hands each order's newest change out, and resolves every record."""

    def __init__(
        self,
        settings: Settings,
        coalescer: Coalescer,
        assignment: Assignment,
        dlq: DeadLetterPublisher,
        hooks: LedgerHooks,
        *,
        clock: Clock,
        dispatch: Dispatch,
        parked: Parked,
        leases: Leases,
    ) -> None:
        self._settings = settings
        self._coalescer = coalescer
        self._assignment = assignment
        self._dlq = dlq
        self._hooks = hooks
        self._clock = clock
        self._dispatch = dispatch
        self._parked = parked
        self._leases = leases
        self._counts: defaultdict[Resolution, int] = defaultdict(int)  # by member: `.value` costs 130 ns
        self._unknown_seen: set[str] = set()
        self._resolved = {why: Resolved(why.value) for why in Resolution}  # one payload each, reused

    # -- in -----------------------------------------------------------------------------------
    def offer(self, change: OrderChange, hold: float = 0.0) -> None:
        """Coalesce a change; start its order's delivery when it has none (``hold``: seconds
        before its order may be sent)."""
        offer = self._coalescer.offer(change)
        for resolved, why in offer.resolved:
            self.resolve(resolved.record, why)
        if offer.start:
            self._dispatch.submit(change, hold)
            self._leases.need_lease(change.tp)
        elif offer.waits and self._dispatch.replace(change):
            _, replaced = self._coalescer.promote(change.key)
            if replaced is not None:
                self.resolve(replaced.record, Resolution.REPLACED)

    def resolve(self, record: Record, why: Resolution) -> None:
        """``record`` is done with (``why``): its offset may be committed past."""
        if record.parked_at >= 0:
            done = self._parked.resolve(record)
        else:
            done = self._assignment.resolve(record.tp, record.offset)
        if done:
            self._hooks.record_resolved(self._resolved[why])
            self._counts[why] += 1

    def dead_letter(self, record: Record, failure: Failure) -> None:
        """Log ``record``'s failure and write it to the dead-letter topic; it is resolved once the
        broker acknowledged it (its partition waits for it on revoke, and cancels it on stop)."""
        log.error(
            "event_rejected",
            stage=failure.stage,
            reason=str(failure.error)[:1000],
            error_class=type(failure.error).__name__,
            external_id=failure.external_id,
            attempts=failure.attempts,
            **record.where(),
        )
        task = asyncio.create_task(self._write_dead_letter(record, failure))
        part = self._assignment.get(record.tp)
        if part is not None:
            tasks = part.dead_letters
            tasks[task] = None
            task.add_done_callback(lambda t: tasks.pop(t, None))

    async def _write_dead_letter(self, record: Record, failure: Failure) -> None:
        await self._dlq.publish(record, failure)
        self._hooks.dead_letter_written(DeadLettered(failure.stage))
        self.resolve(record, Resolution.DEAD_LETTERED)

    # -- back (the deliverer's work source) ----------------------------------------------------
    def report(self, outcome: Outcome) -> OrderChange | None:
        """Resolve what ``outcome`` ended; the key's next change to send, if it has one."""
        change = outcome.change
        if outcome.kind is OutcomeKind.ABANDONED or change is None:
            return None  # unresolved: the partition's next owner reads it again
        key = outcome.key
        if outcome.kind is OutcomeKind.DELIVERED:
            if debug_enabled():
                log.debug("delivered", external_id=change.external_id, op=change.op, **change.record.where())
            for field in change.unknown:
                self._unknown_field(field, change)
            self.resolve(change.record, Resolution.DELIVERED)
            return self._coalescer.finish(key, delivered=True)
        error = outcome.error or RuntimeError("failed")
        if outcome.kind is OutcomeKind.INVALID:  # never sent: not the vendor's answer, the input's fault
            stage = error.stage if isinstance(error, InputError) else Stage.VALIDATE
            failure = Failure(
                error,
                stage,
                change.external_id,
                0,
                outcome.first_failure_ts,
                outcome.last_failure_ts,
                change.tenant or None,
            )
            self.dead_letter(change.record, failure)
            return self._coalescer.finish(key, delivered=False)
        if self._coalescer.has_waiting(key) and not self._settings.dlq.dead_letter_replaced:
            log.warning(
                "failed_event_replaced",
                error=str(error)[:300],
                external_id=change.external_id,
                **change.record.where(),
            )
            self.resolve(change.record, Resolution.REPLACED)
        else:
            failure = Failure(
                error,
                Stage.DELIVER,
                change.external_id,
                outcome.attempts,
                outcome.first_failure_ts,
                outcome.last_failure_ts,
                change.tenant or None,
            )
            self.dead_letter(change.record, failure)
        return self._coalescer.finish(key, delivered=False, unknown=outcome.ambiguous)

    def _unknown_field(self, field: str, change: OrderChange) -> None:
        self._hooks.unknown_field_forwarded(UnknownField(field))
        if field not in self._unknown_seen:
            self._unknown_seen.add(field)
            log.warning(
                "unknown_field_forwarded",
                field=field,
                external_id=change.external_id,
                note="not in the vendor model; sent as received (logged once per field)",
                **change.record.where(),
            )

    # -- figures ------------------------------------------------------------------------------
    def take_counts(self) -> dict[str, int]:
        """Records resolved since the last call, by resolution (the periodic ``progress`` line)."""
        counts, self._counts = self._counts, defaultdict(int)
        return {why.value: n for why, n in counts.items()}


__all__ = ["Dispatch", "Leases", "Ledger", "LedgerHooks", "Parked"]
