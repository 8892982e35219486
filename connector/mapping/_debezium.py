"""Debezium change events: one row of a table (``orders``), created, updated, read in a snapshot or
deleted.

The value is Debezium's change event, ``{"before", "after", "source", "op", "ts_ms", ...}``, or the
same wrapped as ``{"schema": ..., "payload": ...}`` by Kafka Connect's JSON converter with
``schemas.enable=true`` (or decoded from Avro with a schema registry). The key holds the row's
primary key columns, ``{"id": 1001}`` (wrapped the same way, or Avro).

The mapping reads the row as Debezium's own ``ExtractNewRecordState`` transform gives it with
``add.fields=op,table,source.ts_ms``: the row's columns (``after``; ``before`` for a delete), plus
``__op``, ``__table``, ``__source_ts_ms`` and ``__deleted`` (true for a delete), so that
``str(id)`` names the order whatever happened to it.

- ``op`` ``c`` is ``order.created``; ``u`` and ``r`` (a snapshot read) ``order.updated``; ``d``
  ``order.deleted``, read from ``before`` (or, where the table's replica identity gives no ``before``,
  from the key);
- the tombstone Debezium writes after a delete (null value, same key) is a delete too, read from the
  key's columns: both end as one delete of that order (the second is identical, no second call);
- ``source.ts_ms``, when the change was committed in the database, is the event's time: the ordering
  time of an event whose mapping gives no ``updated_at``, and a delete is ordered at the later of that
  and the row's ``updated_at``, so that it never sorts before the update it follows;
- ``t`` (truncate) and ``m`` (a logical decoding message) change no row: dead-lettered, stage
  ``decode``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.errors import DecodeError
from connector.mapping._cloudevents import ReadBytes
from connector.mapping._types import Event, text_headers
from connector.structs import Record

EVENT_TYPES = {"c": "order.created", "u": "order.updated", "r": "order.updated", "d": "order.deleted"}
META = ("__op", "__table", "__source_ts_ms", "__deleted")


def _payload(document: Any) -> Any:
    """The payload of Kafka Connect's JSON converter with schemas (``{"schema", "payload"}``)."""
    if isinstance(document, dict) and document.keys() == {"schema", "payload"}:
        return document["payload"]
    return document


def _millis(ms: Any) -> str | None:
    if isinstance(ms, bool) or not isinstance(ms, int):
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key_row(record: Record, read: ReadBytes) -> dict[str, Any]:
    if record.key is None:
        return {}
    try:
        key = _payload(read(record.key, "key"))
    except DecodeError:
        return {}
    return key if isinstance(key, dict) else {}


def unwrap(record: Record, read: ReadBytes) -> Event:
    """The row of the change event in ``record`` (a tombstone: its key's columns) as the
    :class:`Event` a mapping reads; DecodeError for a value that is no change of a row."""
    headers = text_headers(record)
    if record.value is None:
        keys = _key_row(record, read)
        document = {**keys, "__op": "d", "__table": None, "__source_ts_ms": None, "__deleted": True}
        return Event(document, keys, headers, record.topic, True, None, "order.deleted")
    change = _payload(read(record.value, "value"))
    if not isinstance(change, dict) or "op" not in change:
        raise DecodeError("not a Debezium change event: no op (mapping.envelope = debezium)")
    op = change["op"]
    if op not in EVENT_TYPES:
        what = {"t": "a truncate", "m": "a logical decoding message"}.get(str(op), f"op {op!r}")
        raise DecodeError(f"Debezium {what} changes no row: not an order change")
    deleted = op == "d"
    row = change.get("before") if deleted else change.get("after")
    if deleted and row is None:
        row = _key_row(record, read)
    if not isinstance(row, dict):
        side = "before" if deleted else "after"
        raise DecodeError(f"Debezium change op {op!r} has no {side} row")
    source: dict[str, Any] = change["source"] if isinstance(change.get("source"), dict) else {}
    ms = source.get("ts_ms", change.get("ts_ms"))
    document = {**row, "__op": op, "__table": source.get("table"), "__source_ts_ms": ms, "__deleted": deleted}
    return Event(
        document, _key_row(record, read), headers, record.topic, deleted, _millis(ms), EVENT_TYPES[op]
    )


def row_of(event: Event) -> dict[str, Any]:
    """The row's own columns, without the ``__`` fields: the order when no mapping is configured."""
    value = event.value if isinstance(event.value, dict) else {}
    return {k: v for k, v in value.items() if k not in META}
