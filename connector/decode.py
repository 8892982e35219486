"""Decode + validate: a Kafka record becomes an :class:`OrderChange`, or raises an :class:`InputError`.

Accepted values (``docs/design.md``, "Input contract"): an envelope ``{"event_id", "event_type",
"occurred_at", "order"}``, a bare order object, or a tombstone (null value, key set) meaning "deleted".

Reading is in two steps, so that an event replaced by a newer one before it is sent costs only the
first: :func:`decode` (``validate=False``, the pipeline's read path) parses the JSON (orjson) and takes
what coalescing needs, the order's key, its ``updated_at``, the event type and a digest of the body, and
rejects only what breaks those; :func:`connector.conform.check` checks the whole body against the
vendor model just before it is sent (the deliverer). ``decode(..., validate=True)`` does both
(``connector validate``, tests). The order is forwarded as the caller wrote it, so that nothing the
caller did not send (nulls, reformatted timestamps) reaches the API.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from connector.conform import check, preview
from connector.errors import DecodeError, OrderValidationError
from connector.models import parse_timestamp
from connector.structs import OrderChange, Pending, Record
from connector.vendors import DEFAULT_TARGET, Target, Vendor

Locate = Callable[[Record, Any], tuple[str, Target]]
"""The tenant a record (and its parsed value, None for a tombstone) belongs to, with that tenant's
vendor and API version; raises RouteError when it names none the deployment serves."""

EVENT_TYPES = ("order.created", "order.updated", "order.cancelled", "order.deleted")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def digest(op: str, body: Any) -> bytes:
    """What identical events share: ``op`` and ``body`` (any JSON value), canonical, hashed (SHA-256
    cut to 16 bytes: where the CPU has SHA instructions, about twice as fast as BLAKE2b here)."""
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson writes at most 254 levels (and reads 1,024)
        raise DecodeError("order is nested too deeply to read") from None
    return hashlib.sha256(op.encode() + b"\0" + canonical).digest()[:16]


def source_digest(record: Record, head: dict[str, Any]) -> bytes:
    """What identical events share when their body is not mapped yet (a lazy read): everything the
    mapping may read, as written (the record's key, headers and value, byte for byte: a CloudEvent
    in binary mode has its attributes in headers) and what it read on the read path (``head``: the
    key, time and event type). Two events differing only in how they are written (key order,
    spacing) are not identical by this digest: at worst a call that was not needed, never one
    skipped that was."""
    h = hashlib.sha256(b"source")
    parts = [orjson.dumps(head, default=str, option=orjson.OPT_SORT_KEYS), record.key or b""]
    for name, value in record.headers:
        parts += [name.encode(), value or b""]
    parts.append(record.value or b"")
    for part in parts:  # each one length-prefixed: no two different records run together alike
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()[:16]


def _tombstone(record: Record) -> OrderChange:
    if not record.key:
        raise DecodeError("null value (tombstone) without a key: no order to delete")
    try:
        external_id = record.key.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("tombstone key is not valid UTF-8") from None
    if not 1 <= len(external_id) <= 64:
        raise OrderValidationError(
            f"invalid order: key: external_id must be 1 to 64 characters (value: {preview(external_id)})"
        )
    return OrderChange(record, external_id, "delete", {}, None, digest("delete", {}), validated=True)


def parse_value(record: Record, max_bytes: int) -> Any:
    """The record's value parsed as JSON; a DecodeError saying why it cannot be (too large, not UTF-8,
    not JSON, nested too deeply)."""
    assert record.value is not None
    if len(record.value) > max_bytes:
        raise DecodeError(
            f"message of {len(record.value)} bytes exceeds kafka.max_message_bytes={max_bytes}; not parsed"
        )
    return parse_json(record.value)


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON; a DecodeError saying why it cannot be (not UTF-8, not JSON, nested too
    deeply). The size was checked by the caller."""
    try:
        return orjson.loads(raw)  # RFC 8259: JSON exchanged between systems is UTF-8
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise DecodeError(f"value is not valid UTF-8 (byte {bad.start})") from None
        if "recursion" in exc.msg:
            raise DecodeError("value is JSON nested too deeply to read") from None
        raise DecodeError(f"value is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _invalid_event(field: str, rule: str, value: Any) -> OrderValidationError:
    shown = preview(value)
    return OrderValidationError(f"invalid event: {field}: {rule} (value: {shown})", [(field, rule, shown)])


def _record_key(record: Record, entry: Vendor) -> str | None:
    """The Kafka record key, for a vendor whose orders are coalesced by it when there is one."""
    if not entry.keyed_by_record or not record.key:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _order_key(order: dict[str, Any], entry: Vendor) -> str:
    """The key the vendor's rule reads from ``order``, or an OrderValidationError naming the rule."""
    key = entry.order_key(order)
    if key is None:
        value = order.get(entry.key_field.removeprefix("order."))
        shown = "(missing)" if value is None else preview(value)
        raise OrderValidationError(
            f"invalid order: {entry.key_field}: {entry.key_rule} (value: {shown})",
            [(entry.key_field, entry.key_rule, shown)],
        )
    return key


def _deletion_time(order: dict[str, Any], envelope: dict[str, Any]) -> datetime | None:
    """When an order was deleted: its ``updated_at``, else the envelope's ``occurred_at``. Kept so that
    an older upsert arriving later is stale rather than bringing the order back."""
    for field, value in (
        ("order.updated_at", order.get("updated_at")),
        ("occurred_at", envelope.get("occurred_at")),
    ):
        if value is None:
            continue
        if not isinstance(value, str):
            raise _invalid_event(field, "must be an RFC 3339 timestamp", value)
        try:
            stamp = parse_timestamp(value)
        except ValueError:
            stamp = None
        if stamp is None or stamp.tzinfo is None:
            raise _invalid_event(field, "must be an RFC 3339 timestamp with an offset", value)
        return stamp
    return None


def _timestamp(field: str, value: Any) -> datetime:
    """An RFC 3339 timestamp with an offset, or an OrderValidationError naming ``field``."""
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            return parse_timestamp(value)
        except ValueError:
            pass
    raise _invalid_event(field, "must be an RFC 3339 timestamp with an offset", value)


def decode(
    record: Record,
    max_bytes: int = 1024 * 1024,
    target: Target = DEFAULT_TARGET,
    *,
    validate: bool = True,
    locate: Locate | None = None,
    lazy: bool = False,
) -> OrderChange:
    """Read one record for the vendor and API version ``target``; raise DecodeError or
    OrderValidationError naming what is wrong (field path, rule, offending value). Without
    ``validate``, only what coalescing needs is checked: :func:`connector.conform.check` does the rest
    at send time.
    With ``locate`` (many tenants), the record's tenant decides the vendor and version instead, and
    the change carries the tenant; a record naming no known tenant raises RouteError.
    ``lazy`` (the pipeline's read path): an upsert keeps its record, not its parsed body, which is
    parsed again when the change is about to be sent (``change.pending``)."""
    if record.value is None:
        return decode_tombstone(record, locate)
    data = parse_value(record, max_bytes)
    pending = NativeOrder(parse_json, record.value) if lazy else None
    return decode_value(record, data, target, validate=validate, locate=locate, pending=pending)


def decode_tombstone(record: Record, locate: Locate | None = None) -> OrderChange:
    """A null value: the deletion of the order its record key names (the tenant from ``locate``)."""
    tenant = locate(record, None)[0] if locate is not None else ""
    change = _tombstone(record)
    change.tenant = tenant
    return change


def decode_value(
    record: Record,
    data: Any,
    target: Target = DEFAULT_TARGET,
    *,
    validate: bool = True,
    locate: Locate | None = None,
    ordered_at: str | None = None,
    pending: Pending | None = None,
) -> OrderChange:
    """Read ``data``, a record's parsed value, as :func:`decode` does: the one path every event takes,
    the connector's own envelope as well as what a mapping (``connector/mapping/``) made of another.
    ``ordered_at`` (the mapping stage: the envelope's time, Debezium's ``source.ts_ms`` or a
    CloudEvent's ``time``) orders an upsert whose order has no ``updated_at``, without being written
    into the body that is sent.

    ``pending`` (a lazy read, without ``validate``): how to make an upsert's body and digest again
    from its record (:class:`NativeOrder`, or a mapping file's order). The upsert then keeps no
    parsed body (several times the size of the record's bytes, which are all
    ``kafka.max_unresolved_bytes`` counts): it is made when the change is about to be sent
    (``change.pending``). Its digest waits too when the order carries its ``updated_at``
    (:meth:`OrderChange.differs_after`), made now otherwise. One object a change, not closures: each
    object the garbage collector tracks brings its next collection nearer, and K's peak RSS follows
    (``app.GC_THRESHOLDS``)."""
    if not isinstance(data, dict):
        raise DecodeError(f"value is JSON {type(data).__name__}, expected an object")
    return _read(record, data, target, validate, locate, ordered_at, None if validate else pending)


class NativeOrder:
    """A lazy read's pending body of a native value (:class:`connector.structs.Pending`): the order
    in the record's value (``raw``), parsed again (``parse``: JSON, or Avro with a registry)."""

    __slots__ = ("parse", "raw")

    def __init__(self, parse: Callable[[bytes], Any], raw: bytes) -> None:
        self.parse = parse
        self.raw = raw

    def __call__(self) -> dict[str, Any]:
        order: dict[str, Any] = _order_of(self.parse(self.raw))
        return order

    def digest(self, body: dict[str, Any] | None) -> bytes:
        """The digest of the order, as an eager read takes it."""
        return digest("upsert", self() if body is None else body)


def _order_of(data: dict[str, Any]) -> Any:
    """The order in a native value: its ``order`` in the connector's envelope, else the value itself."""
    if "order" in data and ("event_type" in data or "event_id" in data):
        return data["order"]
    return data


def _read(
    record: Record,
    data: dict[str, Any],
    target: Target,
    validate: bool,
    locate: Locate | None,
    ordered_at: str | None = None,
    pending: Pending | None = None,
) -> OrderChange:
    tenant = ""
    if locate is not None:
        tenant, target = locate(record, data)
    event_type = "order.updated"
    order: Any = _order_of(data)
    if order is not data:
        event_type = data.get("event_type", event_type)
        if event_type not in EVENT_TYPES:
            raise _invalid_event("event_type", "must be one of " + ", ".join(EVENT_TYPES), event_type)
        if not isinstance(order, dict):
            raise _invalid_event("order", "must be an object", order)
    entry = target.vendor
    if event_type == "order.deleted":
        key = _record_key(record, entry) or _order_key(order, entry)
        deleted_at = _deletion_time(order, data)
        change = OrderChange(record, key, "delete", order, deleted_at, digest("delete", {}))
        change.validated = True
        change.tenant = tenant
        return change
    try:
        key = _record_key(record, entry) or _order_key(order, entry)
        stamp = order.get("updated_at")
        if stamp is not None:
            updated_at: datetime | None = _timestamp("order.updated_at", stamp)
        else:
            updated_at = _timestamp("occurred_at", ordered_at) if ordered_at is not None else None
    except OrderValidationError as cheap:
        # Rejected on the read path: say it as the full validation does (every problem, same words).
        check(OrderChange(record, "", "upsert", order), target)
        raise cheap from None
    if pending is None:
        identity: bytes | None = digest("upsert", order)
    elif stamp is None:  # ordered by the envelope's time, or not at all: made now
        identity = pending.digest(order)
    else:
        identity = None  # made on first use (OrderChange.digest): it covers the stamp
    body = order if pending is None else {}  # a lazy read keeps its record, not the parsed order
    change = OrderChange(record, key, "upsert", body, updated_at, identity, tenant=tenant, pending=pending)
    if validate:
        check(change, target)
    return change
