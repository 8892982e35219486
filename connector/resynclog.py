"""The resync topic's records: requests and progress (a wire format, version 1).

``connector resync`` asks the running fleet to send the newest state of every order with an event
since a time again (:mod:`connector.resync`). The request, and each partition's progress, are records
of the *resync topic* (``resync.topic``, by default ``<first of kafka.topics>.resync``): compacted, one
partition, created by ``connector resync`` when missing. Values are UTF-8 JSON objects:

- **the request**, key ``<group>/request`` (compaction keeps the newest: one resync per group at a
  time; a new one replaces it)::

    {"v": 1, "kind": "request", "group": "orders-connector", "id": "r-1f0c9a2b", "tenant": null,
     "since": 1800000000.0, "share": 0.2, "at": 1800000000.5, "state": "active"}

  ``since``: wall-clock seconds, null for every order (``--all``); ``tenant``: null for every shop;
  ``share``: the floor share of the budget; ``state``: ``active`` or ``cancelled``.
- **a partition's progress**, key ``<group>/<id>/<topic>/<partition>``, written by its owner::

    {"v": 1, "kind": "progress", "group": "orders-connector", "id": "r-1f0c9a2b", "topic": "orders",
     "partition": 3, "from": 120, "until": 10120, "at": 5120, "orders": 4000, "sent": 2000,
     "skipped": 12, "failed": 0, "done": false, "by": "orders-connector-1-ab12cd34",
     "written": 1800000100.0}

  The resync covers offsets ``[from, until)``: from the first at or after ``since`` (or the log
  start), to the log end when the partition's resync began. ``at``: every order whose newest record
  in range lies below it has been dealt with (sent, or skipped because the live traffic sent a newer
  state); a new owner goes on from there. ``orders``: orders found in range; ``sent``, ``skipped``
  and ``failed`` (refused for good by the vendor) so far; ``done`` once ``at`` reached ``until``.

Version rule, as for the pace topic: fields may be added within a version and a reader ignores names
it does not know; removing one or changing its meaning is a new ``v``, and a reader skips a record of a
version it does not know (:class:`Unreadable`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from connector._wire import Unreadable, json_object, number, share

VERSION = 1
"""The version of the records this release writes, and the only one it reads."""


class State(StrEnum):
    """A request's state."""

    ACTIVE = "active"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Request:
    """A resync asked of a group."""

    group: str
    id: str
    tenant: str | None
    since: float | None
    share: float
    at: float
    state: State = State.ACTIVE

    @property
    def key(self) -> bytes:
        return f"{self.group}/request".encode()

    def covers(self, tenant: str) -> bool:
        """Whether the orders of ``tenant`` (``""``: the single shop) are resynced."""
        return self.tenant is None or self.tenant == tenant


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one partition's part of a resync is."""

    group: str
    id: str
    topic: str
    partition: int
    start: int  # "from" on the wire
    until: int
    at: int
    orders: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    done: bool = False
    by: str = ""
    written: float = 0.0

    @property
    def key(self) -> bytes:
        return f"{self.group}/{self.id}/{self.topic}/{self.partition}".encode()


def encode(record: Request | Progress) -> tuple[bytes, bytes]:
    """The record's key and value, in the current version."""
    fields = asdict(record)
    if isinstance(record, Request):
        value: dict[str, Any] = {"v": VERSION, "kind": "request", **fields, "state": str(record.state)}
    else:
        fields["from"] = fields.pop("start")
        value = {"v": VERSION, "kind": "progress", **fields}
    return record.key, json.dumps(value, separators=(",", ":")).encode()


def decode(value: bytes) -> Request | Progress:
    """The record ``value`` holds; :class:`Unreadable` if this release cannot read it."""
    data = json_object(value, VERSION)
    try:
        if data["kind"] == "request":
            return Request(
                group=_text(data["group"]),
                id=_text(data["id"]),
                tenant=None if data["tenant"] is None else _text(data["tenant"]),
                since=None if data["since"] is None else number(data["since"]),
                share=share(data["share"]),
                at=number(data["at"]),
                state=State(data["state"]),
            )
        if data["kind"] == "progress":
            return Progress(
                group=_text(data["group"]),
                id=_text(data["id"]),
                topic=_text(data["topic"]),
                partition=_count(data["partition"]),
                start=_count(data["from"]),
                until=_count(data["until"]),
                at=_count(data["at"]),
                orders=_count(data["orders"]),
                sent=_count(data["sent"]),
                skipped=_count(data["skipped"]),
                failed=_count(data["failed"]),
                done=_flag(data["done"]),
                by=_text(data["by"]),
                written=number(data["written"]),
            )
    except (KeyError, TypeError, ValueError):
        raise Unreadable("a field missing or invalid") from None
    raise Unreadable(f"kind {data.get('kind')!r}")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


__all__ = ["VERSION", "Progress", "Request", "State", "Unreadable", "decode", "encode"]
