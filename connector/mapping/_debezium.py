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
- ``source.ts_ms`` (``source.ts_us`` where Debezium sends it: the same time in microseconds), when the
  change was committed in the database, is the event's time: the ordering time of an event whose
  mapping gives no ``updated_at``, and a delete is ordered at the later of that and the row's
  ``updated_at``, so that it never sorts before the update it follows (at the default replica
  identity the delete's row has no ``updated_at``: its commit time alone, to the microsecond, orders
  it after an update whose ``updated_at`` the database's clock set);
- ``t`` (truncate) and ``m`` (a logical decoding message) change no row: dead-lettered, stage
  ``decode``;
- decimals (``NUMERIC``, ``DECIMAL``) at Debezium's default ``decimal.handling.mode=precise`` are
  Kafka Connect ``Decimal`` bytes (base64 in JSON: the unscaled integer, big-endian two's
  complement) whose scale only the schema gives, or with ``variable_scale_decimal`` a struct
  ``{"scale", "value"}``: with the schema (the JSON converter's ``{"schema", "payload"}``, or Avro),
  both are read exactly into decimal text (``"411.17"``), as ``decimal.handling.mode=string`` would
  send them. Without a schema the bytes cannot be read; ``minor_units`` then says which setting to
  change.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connector.errors import DecodeError
from connector.mapping._cloudevents import ReadBytes
from connector.mapping._types import Event, text_headers
from connector.structs import Record

EVENT_TYPES = {"c": "order.created", "u": "order.updated", "r": "order.updated", "d": "order.deleted"}
META = ("__op", "__table", "__source_ts_ms", "__deleted")


DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


def decimal_text(unscaled: bytes, scale: int) -> str:
    """Kafka Connect's decimal bytes (the unscaled integer, big-endian two's complement) at ``scale``,
    exactly, as plain decimal text."""
    number = int.from_bytes(unscaled, "big", signed=True)
    return format(Decimal(f"{number}E{-scale}"), "f")


def _unbase64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def with_schema(schema: Any, value: Any) -> Any:
    """``value`` read with its Kafka Connect schema (the JSON converter's ``schema``): decimals, fixed
    scale or variable, become decimal text; everything else is left as it is."""
    if value is None or not isinstance(schema, dict):
        return value
    name, kind = schema.get("name"), schema.get("type")
    if name == DECIMAL and kind == "bytes":
        raw = _unbase64(value)
        scale = (schema.get("parameters") or {}).get("scale")
        if raw is not None and isinstance(scale, str | int) and str(scale).lstrip("-").isdigit():
            return decimal_text(raw, int(scale))
        return value
    if name == VARIABLE_SCALE_DECIMAL and isinstance(value, dict):
        raw, scale = _unbase64(value.get("value")), value.get("scale")
        if raw is not None and isinstance(scale, int) and not isinstance(scale, bool):
            return decimal_text(raw, scale)
        return value
    if kind == "struct" and isinstance(value, dict):
        fields = {f.get("field"): f for f in schema.get("fields") or () if isinstance(f, dict)}
        return {k: with_schema(fields.get(k), v) for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [with_schema(schema.get("items"), v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: with_schema(schema.get("values"), v) for k, v in value.items()}
    return value


def _payload(document: Any) -> Any:
    """The payload of Kafka Connect's JSON converter with schemas (``{"schema", "payload"}``), read
    with its schema (:func:`with_schema`)."""
    if isinstance(document, dict) and document.keys() == {"schema", "payload"}:
        return with_schema(document["schema"], document["payload"])
    return document


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _commit_time(source: dict[str, Any], change: dict[str, Any]) -> str | None:
    """When the change was committed in the database, as precisely as the event says it: ``ts_us``
    (Debezium 2.6 on: the database's microseconds) where it agrees with ``ts_ms``, else ``ts_ms``.
    A row's ``updated_at`` set by the database clock has microseconds: a delete committed in the same
    millisecond as the update before it must not sort before it (at the default replica identity the
    delete is ordered by this time alone), which ``ts_ms``, truncated, would."""
    ms = _whole(source.get("ts_ms", change.get("ts_ms")))
    if ms is None:
        return None
    us = _whole(source.get("ts_us"))
    if us is not None and "ts_ms" in source and us // 1000 == ms:
        seconds, micros = divmod(us, 1_000_000)
        stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)
        return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")
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
        document,
        _key_row(record, read),
        headers,
        record.topic,
        deleted,
        _commit_time(source, change),
        EVENT_TYPES[op],
    )


def row_of(event: Event) -> dict[str, Any]:
    """The row's own columns, without the ``__`` fields: the order when no mapping is configured."""
    value = event.value if isinstance(event.value, dict) else {}
    return {k: v for k, v in value.items() if k not in META}
