"""What a deliverer reports and to whom: how a change's delivery ended (:class:`Outcome`), told to its
:class:`WorkSource` (the ledger), and what it tells the read-back audits (:class:`Audits`). Split out of
``connector/deliver.py`` (which re-exports every name), so that the deliverer's module holds its
workers and jobs' life only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from connector.readback import ReadEnded
from connector.structs import OrderChange, TopicPartition


class OutcomeKind(StrEnum):
    """How a change's delivery ended."""

    DELIVERED = "delivered"
    FAILED = "failed"  # for good: the ledger dead-letters it, or lets a newer change replace it
    INVALID = "invalid"  # not sent: it does not fit the vendor model (``error``, stage ``validate``)
    ABANDONED = "abandoned"  # unresolved: its partition was revoked or the member is stopping


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the deliverer tells its work source when a change's delivery ended."""

    kind: OutcomeKind
    key: str
    change: OrderChange | None
    error: BaseException | None = None
    attempts: int = 0
    first_failure_ts: float = 0.0
    last_failure_ts: float = 0.0
    ambiguous: bool = False  # FAILED: an attempt of its key since its last delivery may still land


class WorkSource(Protocol):
    """Where a deliverer tells how each change's delivery ended (``connector.ledger.Ledger``)."""

    def report(self, outcome: Outcome) -> OrderChange | None:
        """How a change's delivery ended; the key's next change to send, if it has one (the job goes
        on with it)."""
        ...


class Audits(Protocol):
    """Where a deliverer tells what it delivered, and how each of an audit's reads and repairs ended
    (``connector.audit``)."""

    def delivered(self, change: OrderChange, ambiguous: bool, sent_at: float | None = None) -> None:
        """The live lane delivered ``change`` (``ambiguous``: an attempt of it ended unknown first;
        ``sent_at``: the wall-clock tick its successful request left on, None: now)."""
        ...

    def unsure(self, key: str) -> None:
        """A live change of ``key`` is on its way: until it is delivered, the change last delivered
        is not known to be what the vendor should hold (an attempt may land late, fail for good, or
        be abandoned with its partition), so the order is neither read nor repaired."""
        ...

    def read_ended(self, ended: ReadEnded) -> None:
        """A read (:meth:`Deliverer.read`) ended; its key's job is gone (a repair may start)."""
        ...

    def repair_ended(self, outcome: Outcome) -> None:
        """A repair (:meth:`Deliverer.repair`) ended: delivered, failed, invalid, or abandoned (its
        partition drained, or a live change of its key took its job over)."""
        ...

    def forget(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are being revoked: what was delivered for them is another member's now."""
        ...


__all__ = ["Audits", "Outcome", "OutcomeKind", "WorkSource"]
