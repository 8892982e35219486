"""What the mapping stage passes between its steps: the event a mapping reads, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, Protocol, TypedDict

import orjson

from connector.structs import Record


class Mapped(TypedDict):
    """What a mapping returns for one event.

    ``external_id`` (required: a non-empty string) names the order (written into the order's key
    field, ``external_id`` for Loop, ``id`` for Shoplazza); ``order`` is the vendor's request body, a
    dict (None or absent for a delete, which needs only the key); ``updated_at`` (RFC 3339 with an
    offset) orders the events of one order and is written into the body, default the envelope's time
    (Debezium's ``source.ts_us``/``ts_ms``, CloudEvents' ``time``), which orders the event without
    being sent; ``event_type`` is one of ``order.created``, ``order.updated``, ``order.cancelled``,
    ``order.deleted``, default from the envelope (``order.updated``, or ``order.deleted`` for a
    Debezium delete or tombstone). No other keys; a None optional is as good as absent."""

    external_id: str
    order: NotRequired[dict[str, Any] | None]
    updated_at: NotRequired[str | None]
    event_type: NotRequired[str | None]


MAPPED_FIELDS = frozenset(Mapped.__annotations__)


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a mapping sees it, after its envelope was taken off.

    ``value``: the document to map (the JSON value; a CloudEvent's attributes with its ``data``; a
    Debezium row with ``__op``, ``__table``, ``__source_ts_ms`` and ``__deleted``); ``key`` the record
    key (parsed as JSON when it is, else text; None when absent); ``headers`` the record's headers as
    text; ``deleted`` whether the envelope says the order was deleted; ``time`` the envelope's time of
    the change (RFC 3339) or None; ``event_type`` the envelope's default event type."""

    value: Any
    key: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    deleted: bool = False
    time: str | None = None
    event_type: str = "order.updated"


class MappingFunction(Protocol):
    """A mapping written in Python: ``CONNECTOR_MAPPING__FUNCTION=package.module:function``."""

    def __call__(self, event: Event, /) -> Mapped: ...


Trace = list[tuple[str, Any]]
"""Each step's name and output, for ``connector map --explain``."""


def text_headers(record: Record) -> dict[str, str]:
    """The record's headers as text (undecodable bytes replaced); the last of a repeated name wins."""
    return {name: (raw or b"").decode("utf-8", "replace") for name, raw in record.headers}


def record_key(record: Record) -> Any:
    """The record key: JSON when it parses, else text, else None."""
    if record.key is None:
        return None
    try:
        return orjson.loads(record.key)
    except orjson.JSONDecodeError:
        return record.key.decode("utf-8", "replace")
