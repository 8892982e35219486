"""What a resync handed one shop to send again (:mod:`connector.resync`), held by its
:class:`~connector.audit.Auditor`, which sends them on its ticks through the deliverer's repair lane.

Each change is told back to whoever handed it (:class:`Told`) exactly once: *sent*, *skipped* (a
live change of its order came meanwhile: the live traffic sends a state at least as new, and an older
one must never follow it), or *failed* (refused for good: a 4xx the live traffic would dead-letter
too). A change whose request never went out (its tick went stale, the circuit was not closed, its
order had a job), or failed in a way worth trying again (an outage, a timeout, a 429), goes back in
line, behind the others: a resync gives no order up for a fault that passes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from connector._outcomes import Outcome, OutcomeKind
from connector.errors import AuthError, InputError, PermanentSinkError
from connector.structs import OrderChange, TopicPartition


class Resent(StrEnum):
    """How a change handed over for a resync ended."""

    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class Told(Protocol):
    """Who handed the changes over (a partition's part of a resync)."""

    @property
    def share(self) -> float:
        """The floor share of the budget its changes may take from live traffic."""
        ...

    @property
    def asked_at(self) -> float:
        """When its resync was asked (wall clock): an order written at its newest state since then,
        by live traffic or an audit's repair, is not sent again."""
        ...

    def ended(self, change: OrderChange, how: Resent) -> None: ...


@dataclass(slots=True)
class _Item:
    change: OrderChange
    told: Told
    attempts: int = 0
    superseded: bool = False  # a live change of its order came while it was in flight
    refusals: int = 0  # 403s: the first opens the circuit (the key?), a second is about the operation
    dropped: bool = False  # its partition was revoked while it was in flight: never back in line


class Resends:
    """The changes in line and in flight, by order key."""

    def __init__(self) -> None:
        self._line: OrderedDict[str, _Item] = OrderedDict()
        self._sending: dict[str, _Item] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._line)

    @property
    def in_flight(self) -> int:
        return len(self._sending)

    def add(self, change: OrderChange, told: Told) -> None:
        """``change`` to be sent again (one handed over earlier for its order is skipped)."""
        self.superseded(change.key)
        if self._closed:
            told.ended(change, Resent.SKIPPED)
            return
        self._line[change.key] = _Item(change, told)

    def close(self) -> None:
        """The shop is no longer served here (removed from the tenants, and closed): what is in line,
        and what is in flight once it ends unsent, is told skipped (a resync would otherwise wait for
        it until its partition moved)."""
        self._closed = True
        line, self._line = self._line, OrderedDict()
        for item in line.values():
            item.told.ended(item.change, Resent.SKIPPED)

    def take(self) -> _Item | None:
        """The first in line, now in flight (None: none)."""
        if not self._line:
            return None
        key, item = self._line.popitem(last=False)
        self._sending[key] = item
        return item

    def put_back(self, item: _Item) -> None:
        """``item`` was not sent after all: back in line, behind the others."""
        key = item.change.key
        if self._sending.get(key) is item:
            del self._sending[key]
            self._line[key] = item

    def floor(self) -> float:
        """The floor share of the first in line (0: none in line)."""
        first = next(iter(self._line.values()), None)
        return first.told.share if first is not None else 0.0

    def ended(self, outcome: Outcome) -> bool:
        """A repair ended: True when it was one of these (then told, or put back in line)."""
        item = self._sending.pop(outcome.key, None)
        if item is None:
            return False
        if item.dropped and outcome.kind is not OutcomeKind.DELIVERED:
            return True  # untold: the partition's next owner resumes its resync
        if outcome.kind is OutcomeKind.DELIVERED:
            item.told.ended(item.change, Resent.SENT)
        elif item.superseded:  # never again: the live change is newer
            item.told.ended(item.change, Resent.SKIPPED)
        elif (
            outcome.kind is OutcomeKind.INVALID
            or isinstance(outcome.error, _FOR_GOOD)
            or _refused(item, outcome)
        ):
            item.told.ended(item.change, Resent.FAILED)
        elif self._closed:
            item.told.ended(item.change, Resent.SKIPPED)
        else:  # never sent, cancelled, or a fault that passes (an outage, a timeout, a 429): again
            item.attempts += 1 if outcome.attempts else 0
            self._line[outcome.key] = item
        return True

    def superseded(self, key: str) -> None:
        """A live change of ``key`` is on its way, or was delivered: its resend is skipped (one in
        flight ends as its request does; the live change waits for it)."""
        item = self._line.pop(key, None)
        if item is not None:
            item.told.ended(item.change, Resent.SKIPPED)
        sending = self._sending.get(key)
        if sending is not None:
            sending.superseded = True

    def covered(self, change: OrderChange, sent_at: float) -> None:
        """``change`` was written (an audit's repair whose request left at ``sent_at``, wall clock): a
        resend in line of its order at that state or an older one, asked before, is skipped, the
        vendor has it (one call per order when both find it lost)."""
        item = self._line.get(change.key)
        if item is None or sent_at < item.told.asked_at:
            return  # a repair sent before the resync was asked may have landed before the loss
        if not change.version.older_than(item.change.version):
            del self._line[change.key]
            item.told.ended(item.change, Resent.SKIPPED)

    def withdraw(self, told: Told) -> None:
        """Drop what ``told`` handed over and is still in line, untold (its resync is over)."""
        for key in [k for k, item in self._line.items() if item.told is told]:
            del self._line[key]

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop what is in line for ``partitions`` (revoked: the next owner resumes the resync from
        its last progress), untold; one in flight is not put back in line when it ends unsent (its
        partition's jobs are refused here now: it would wait at the head of the line for ever, and
        the shop's audits behind it; found by the simulation, seed 67 with audits and a resync)."""
        for key in [k for k, item in self._line.items() if item.change.tp in partitions]:
            del self._line[key]
        for item in self._sending.values():
            if item.change.tp in partitions:
                item.dropped = True


def _refused(item: _Item, outcome: Outcome) -> bool:
    """A 403 for the second time: the operation lacks a scope (as the live traffic judges a 403 its
    job gets again once the circuit closed: a resend is a new job each time, found by the
    simulation, seed 113 with a resync, a DELETE without its scope sent again for ever)."""
    if isinstance(outcome.error, AuthError) and outcome.error.status == 403:
        item.refusals += 1
    return item.refusals >= 2


_FOR_GOOD = (PermanentSinkError, InputError)
"""What a resync gives an order up for: the vendor refused the change itself (a 4xx of the order, a
missing scope), or it does not fit the vendor's model; the live traffic would dead-letter it too."""


__all__ = ["Resends", "Resent", "Told"]
