"""What a vendor holds for an order, read back, and the verdict on it against a change of ours.

Shared by ``connector trace`` (against the newest event read from the source topic) and the read-back
audits (``connector/audit.py``, against the change last delivered). A vendor client reads an order
back in one of three ways: whole, as sent (Loop: :class:`HoldsOrders`); whole, its copy carrying no
``updated_at`` of ours (Shoplazza: :class:`HoldsFields`); or by ``Sink.held_version``. The verdict
compares ``updated_at`` first; when the vendor holds the same one, the fields sent are compared on the
projection of what was sent (``_compare.differences``: only the fields sent, as the vendor may
represent them). Without an ``updated_at`` of ours the fields sent are all there is to compare: a
copy not as sent *differs* (an older state and an edit in the vendor's admin look the same then).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from connector._compare import differences, shown
from connector.models import parse_instant
from connector.sinks import Prepaid, Sink
from connector.structs import OrderChange


class Verdict(StrEnum):
    """What the vendor holds, against a change of ours (the newest event, or the last delivered)."""

    IN_SYNC = "in sync"
    DIFFERS = "differs"  # the same version, but fields other than sent (an edit in the vendor's admin?)
    BEHIND = "behind"  # an older version, or the order still there after its delete
    AHEAD = "ahead"  # a newer version than ours (or one outside the range read)
    MISSING = "missing"  # not there, though our newest state is not a delete
    DELETED = "deleted"  # not there, and our newest state is a delete: in sync
    UNKNOWN = "unknown"  # the vendor keeps no version of ours (Shoplazza): only found or not
    NO_EVENTS = "no events"  # no record of the order in the range read (trace)


@dataclass(frozen=True, slots=True)
class Held:
    """What the vendor answered for the order."""

    found: bool
    updated_at: datetime | None
    order: dict[str, Any] | None  # the order as the vendor holds it (None: not read whole)
    sent: dict[str, Any] | None = None  # what an update sends, to compare with (no updated_at of ours)


@runtime_checkable
class HoldsOrders(Protocol):
    """A vendor client that reads an order back whole, as sent (Loop)."""

    async def held_order(
        self, change: OrderChange, prepaid: Prepaid | None = None
    ) -> dict[str, Any] | None: ...


@runtime_checkable
class HoldsFields(Protocol):
    """A vendor client that reads an order back whole, its copy carrying no ``updated_at`` of ours
    (Shoplazza): what an update of ``change`` sends, and the order it holds (None: none)."""

    async def held_fields(
        self, change: OrderChange, prepaid: Prepaid | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]: ...


@runtime_checkable
class ReadsBack(Protocol):
    """A vendor client wrapping another, that reads back through it (``connector._served.Retirable``)."""

    async def read_back(self, change: OrderChange, prepaid: Prepaid | None = None) -> Held | None: ...


@dataclass(frozen=True, slots=True)
class ReadEnded:
    """How a read-back of ``change``'s order ended: what the vendor holds (``held``), or the
    ``error`` it answered; not ``sent`` when it never went out (its tick went stale, the circuit was
    not closed, the partition was revoked, a live change of the order took its turn). Sent, with
    neither: the vendor's client cannot read an order back."""

    change: OrderChange
    held: Held | None
    error: BaseException | None = None
    sent: bool = True


async def read_back(sink: Sink, change: OrderChange, prepaid: Prepaid | None = None) -> Held | None:
    """What ``sink``'s vendor holds for ``change``'s order (its first request uses ``prepaid``); None
    when the client cannot read an order back at all."""
    if isinstance(sink, ReadsBack):
        return await sink.read_back(change, prepaid)
    if isinstance(sink, HoldsOrders):
        order = await sink.held_order(change, prepaid)
        when = parse_instant(order.get("updated_at")) if order is not None else None
        return Held(order is not None, when, order)
    if isinstance(sink, HoldsFields):
        sent, held = await sink.held_fields(change, prepaid)
        return Held(held is not None, None, held, sent)
    try:
        found, when = await sink.held_version(change)
    except NotImplementedError:
        return None
    return Held(found, when, None)


def iso(stamp: datetime | None) -> str:
    """A stamp as shown in a verdict's line."""
    return stamp.isoformat() if stamp is not None else "none"


def judge(newest: OrderChange | None, held: bool, stamp: datetime | None) -> tuple[Verdict, str]:
    """The verdict on the vendor's copy (``held``, at ``stamp``) against ``newest``, and its line."""
    if newest is None:
        return Verdict.NO_EVENTS, "no event of this order in the records read (try an earlier --since)"
    want = newest.updated_at
    if newest.op == "delete":
        if not held:
            return Verdict.DELETED, "deleted, as its newest event says"
        return Verdict.BEHIND, "still held by the vendor, though its newest event deletes it"
    if not held:
        return Verdict.MISSING, f"missing: the vendor does not hold it (newest updated_at {iso(want)})"
    if stamp is None or want is None:
        return Verdict.UNKNOWN, (
            f"held, its copy carrying no updated_at of ours to compare (the newest event: {iso(want)})"
            if stamp is None
            else f"held at updated_at {iso(stamp)}; the newest event has none"
        )
    if stamp == want:
        return Verdict.IN_SYNC, f"in sync at updated_at {iso(want)}"
    if stamp < want:
        return Verdict.BEHIND, f"behind: holds updated_at {iso(stamp)}, the newest event has {iso(want)}"
    return Verdict.AHEAD, f"ahead: holds updated_at {iso(stamp)}, newer than any event read ({iso(want)})"


def compare(newest: OrderChange, held: Held) -> tuple[Verdict, str, list[str]]:
    """:func:`judge`, and when the vendor holds the same version whole, the fields sent that it holds
    otherwise (the verdict then *differs*; the vendor model's unknown fields, which a vendor may
    drop, are not compared)."""
    verdict, line = judge(newest, held.found, held.updated_at)
    unknown = frozenset(path.removeprefix("order.") for path in newest.unknown)
    if verdict is Verdict.UNKNOWN and held.sent is not None and held.order is not None:
        found = differences(held.sent, held.order, unknown)
        if not found:
            return Verdict.IN_SYNC, "in sync: holds every field as sent (it keeps no updated_at of ours)", []
        return (
            Verdict.DIFFERS,
            (
                f"differs: not as sent: {shown(found)} (an older state or an edit: it keeps no updated_at of "
                "ours to tell)"
            ),
            found,
        )
    if verdict is not Verdict.IN_SYNC or held.order is None:
        return verdict, line, []
    found = differences(newest.body, held.order, unknown)
    if not found:
        return verdict, line, []
    return Verdict.DIFFERS, f"differs: holds the newest updated_at, but not as sent: {shown(found)}", found


__all__ = [
    "Held",
    "HoldsFields",
    "HoldsOrders",
    "ReadEnded",
    "ReadsBack",
    "Verdict",
    "compare",
    "iso",
    "judge",
    "read_back",
]
