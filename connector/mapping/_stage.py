"""The mapping stage: envelope off, tenant, mapping, then the connector's own read path.

::

    record ─▶ envelope (native | cloudevents | debezium; JSON, or Avro with a registry)
           ─▶ tenant (many shops: from the record, or a top-level field of the event)
           ─▶ mapping (the tenant's, else the deployment's: a file of JMESPath expressions or a
              Python function) ─▶ {external_id, updated_at, event_type, order}
           ─▶ the connector's own envelope ─▶ decode_value, the path every native event takes

The last step is what makes a mapped event read exactly as a native one: the result is rewritten
into ``{"event_type", "occurred_at", "order"}`` (``external_id`` into the order's key field,
``updated_at`` into the order) and read by :func:`connector.decode.decode_value`, so the key,
ordering, digest and, at send time, the vendor model's checks are the same code. An event whose
mapping gives no ``updated_at`` is ordered by the envelope's time (Debezium's ``source.ts_ms``, a
CloudEvent's ``time``), which is not written into the body: nothing the producer did not send is
forwarded. A delete is ordered at the later of the mapping's ``updated_at`` and the envelope's time,
so that a Debezium delete (whose row is the one before it) never sorts before the update it follows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from connector.config import MappingSettings
from connector.decode import (
    Locate,
    NativeOrder,
    decode_tombstone,
    decode_value,
    parse_json,
    source_digest,
)
from connector.errors import DecodeError, InputError, MappingError
from connector.health import Health
from connector.mapping import _cloudevents, _debezium
from connector.mapping._avro import MAGIC, Registry
from connector.mapping._file import FileMapping
from connector.mapping._function import FunctionMapping, check_result
from connector.mapping._types import Event, Trace, record_key, text_headers
from connector.models import parse_timestamp
from connector.structs import OrderChange, Pending, Record
from connector.vendors import DEFAULT_TARGET, Target

Mapping = FileMapping | FunctionMapping
NATIVE_STEP = "as the connector's own envelope"
"""The name of the trace step holding the value a native producer would have written."""
TenantMapping = Callable[[str], "Mapping | None"]
"""A tenant's own mapping, compiled when the tenants loaded (``Router.mapping_of``), or None to use
the deployment's."""


def compile_mapping(file: str = "", function: str = "") -> Mapping | None:
    """The mapping a file or a function names (ConfigError when it cannot be loaded); None for none."""
    if file:
        return FileMapping(file)
    if function:
        return FunctionMapping(function)
    return None


def _later(first: Any, second: str | None) -> Any:
    """The later of two timestamps; one that does not parse is returned as it is, so that the read
    path rejects it with its usual message."""
    if first is None or second is None:
        return first if second is None else second
    try:
        a, b = parse_timestamp(first), parse_timestamp(second)
        return second if a.tzinfo is not None and b > a else first
    except (TypeError, ValueError):
        return first


def to_native(mapped: dict[str, Any], event: Event, target: Target) -> dict[str, Any]:
    """``mapped`` (``{external_id, updated_at, event_type, order}``) as the connector's own envelope
    for the vendor of ``target``: the value a producer of native events would have written."""
    key_field = target.vendor.key_field.removeprefix("order.")
    event_type = mapped.get("event_type") or event.event_type
    if event.deleted or event_type == "order.deleted":
        native: dict[str, Any] = {"event_type": "order.deleted", "order": {key_field: mapped["external_id"]}}
        when = _later(mapped.get("updated_at"), event.time)
        if when is not None:
            native["occurred_at"] = when
        return native
    order = dict(mapped["order"])
    order[key_field] = mapped["external_id"]
    if "updated_at" in mapped:
        order["updated_at"] = mapped["updated_at"]
    native = {"event_type": event_type, "order": order}
    if event.time is not None:
        native["occurred_at"] = event.time  # orders it when the order has no updated_at: not sent
    return native


class Mapper:
    """Reads records through the configured envelope and mapping, per tenant where tenants have one."""

    def __init__(
        self,
        settings: MappingSettings,
        max_bytes: int = 1024 * 1024,
        *,
        tenant_mapping: TenantMapping | None = None,
        blocking: bool = False,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.max_bytes = max_bytes
        self.mapping = compile_mapping(settings.file, settings.function)
        self.registry = (
            Registry(
                settings.registry_url,
                settings.registry_timeout_seconds,
                user_info=settings.registry_basic_auth_user_info.get_secret_value(),
                not_found_seconds=settings.registry_not_found_seconds,
                watch=health,
            )
            if settings.registry_url
            else None
        )
        self._tenant_mapping = tenant_mapping
        self._blocking = blocking
        self._value = partial(self._bytes, what="value")  # made once: a lazy read's body is made with it

    # -- bytes ----------------------------------------------------------------------------------
    def _bytes(self, raw: bytes, what: str) -> Any:
        if len(raw) > self.max_bytes:
            raise DecodeError(
                f"{what} of {len(raw)} bytes exceeds kafka.max_message_bytes={self.max_bytes}; not parsed"
            )
        if self.registry is not None and raw[:1] == MAGIC:
            return self.registry.decode(raw, what, self._blocking)
        return parse_json(raw)

    async def prefetch(self, records: list[Record]) -> None:
        """Fetch the registry schemas ``records`` need (Avro only), so the synchronous read finds them."""
        if self.registry is not None:
            await self.registry.prefetch([r.value for r in records] + [r.key for r in records])

    # -- the stage ------------------------------------------------------------------------------
    def unwrap(self, record: Record) -> Event | None:
        """The event inside ``record``'s envelope; None for a tombstone read as always."""
        envelope = self.settings.envelope
        if envelope == "cloudevents":
            return _cloudevents.unwrap(record, self._bytes)
        if envelope == "debezium":
            return _debezium.unwrap(record, self._bytes)
        if record.value is None:
            return None
        return Event(
            self._bytes(record.value, "value"), record_key(record), text_headers(record), record.topic
        )

    def mapping_for(self, tenant: str) -> Mapping | None:
        """The tenant's own mapping if it has one (the object loaded with the tenants: never read
        from disk here), else the deployment's."""
        own = self._tenant_mapping(tenant) if self._tenant_mapping is not None and tenant else None
        return own if own is not None else self.mapping

    def _default(self, event: Event, target: Target) -> Any:
        """What an event reads as without a mapping: the native value, a CloudEvent's data, or a
        Debezium row as the order (named by its key field's column)."""
        if self.settings.envelope == "cloudevents":
            return _cloudevents.data_of(event)
        if self.settings.envelope != "debezium":
            return event.value
        row = _debezium.row_of(event)
        key_field = target.vendor.key_field.removeprefix("order.")
        where = "debezium row without a mapping"
        mapped = {"external_id": row.get(key_field), "order": row}
        return to_native(check_result(mapped, where, "(none)", event.deleted), event, target)

    def read(
        self,
        record: Record,
        target: Target = DEFAULT_TARGET,
        *,
        validate: bool = False,
        locate: Locate | None = None,
        trace: Trace | None = None,
        lazy: bool = False,
    ) -> OrderChange:
        """``record`` read through the stage (module docstring), then as a native event; InputError
        (DecodeError, RouteError, MappingError, OrderValidationError) when it cannot be. ``lazy``
        (the pipeline's read path): with a mapping file, only what coalescing needs is evaluated now,
        the order when the change is about to be sent (:meth:`_read_head`); a native value read as
        it is keeps its record, not its parsed body (:func:`connector.decode.decode_value`)."""
        if trace is None and self.settings.envelope == "native" and record.value is not None:
            return self._read_native(record, target, validate, locate, lazy)
        event = self.unwrap(record)
        if trace is not None:
            trace.append((f"envelope {self.settings.envelope}", _shown(event)))
        if event is None:
            return decode_tombstone(record, locate)
        if self.settings.envelope == "native" and self.mapping is None and not isinstance(event.value, dict):
            raise DecodeError(f"value is JSON {type(event.value).__name__}, expected an object")  # as decode
        tenant = ""
        if locate is not None:
            tenant, target = locate(record, event.value)
            if trace is not None:
                trace.append(
                    ("tenant", {"tenant": tenant, "kind": target.kind, "api_version": target.api_version})
                )
        return self._read_event(record, event, tenant, target, validate, locate, trace, lazy)

    def _read_native(
        self, record: Record, target: Target, validate: bool, locate: Locate | None, lazy: bool
    ) -> OrderChange:
        """:meth:`read` of a native record with a value, untraced: the event a mapping sees (its key
        and headers as text) is made only when the record's tenant has a mapping; without one, the
        value is read as :func:`connector.decode.decode` reads it (many shops without mappings)."""
        assert record.value is not None
        value = self._bytes(record.value, "value")
        if self.mapping is None and not isinstance(value, dict):
            raise DecodeError(f"value is JSON {type(value).__name__}, expected an object")  # as decode
        tenant = ""
        if locate is not None:
            tenant, target = locate(record, value)
        if self.mapping_for(tenant) is None:
            pending = NativeOrder(self._value, record.value) if lazy else None
            return self._decode(record, None, value, tenant, target, locate, validate, pending)
        event = Event(value, record_key(record), text_headers(record), record.topic)
        return self._read_event(record, event, tenant, target, validate, locate, None, lazy)

    def _read_event(
        self,
        record: Record,
        event: Event,
        tenant: str,
        target: Target,
        validate: bool,
        locate: Locate | None,
        trace: Trace | None,
        lazy: bool,
    ) -> OrderChange:
        """``event`` (of ``tenant``, whose vendor is ``target``) through the tenant's mapping, then
        read as a native event."""
        mapping = self.mapping_for(tenant)
        if lazy and isinstance(mapping, FileMapping) and not validate and trace is None:
            change = self._read_head(record, event, mapping, tenant, target, locate)
            if change is not None:
                return change
        if mapping is None:
            native = self._default(event, target)
        else:
            try:
                mapped = mapping.apply(event)
            except MappingError as exc:
                if trace is not None:
                    trace.append((str(mapping), f"failed: {exc}"))
                raise
            if trace is not None:
                trace.append((str(mapping), mapped))
            native = to_native(mapped, event, target)
        if trace is not None:
            trace.append((NATIVE_STEP, native))
        return self._decode(record, event, native, tenant, target, locate, validate)

    def _decode(
        self,
        record: Record,
        event: Event | None,
        native: dict[str, Any],
        tenant: str,
        target: Target,
        locate: Locate | None,
        validate: bool,
        pending: Pending | None = None,
    ) -> OrderChange:
        """``native`` (the event as the connector's own envelope) read as a native event is, for the
        tenant and target the stage found (``event``: the one mapped, whose envelope's time orders
        it; None for a native value read as it is; ``pending``: a lazy read's, how to make its
        order and digest again from the record)."""
        located = (tenant, target)
        ordered_at = event.time if event is not None and self.settings.envelope != "native" else None
        return decode_value(
            record,
            native,
            target,
            validate=validate,
            locate=(lambda _r, _d: located) if locate is not None else None,
            ordered_at=ordered_at,
            pending=pending,
        )

    def _read_head(
        self,
        record: Record,
        event: Event,
        mapping: FileMapping,
        tenant: str,
        target: Target,
        locate: Locate | None,
    ) -> OrderChange | None:
        """``record`` read lazily: only the mapping's ``external_id``, ``updated_at`` and
        ``event_type`` now, its ``order`` when the change is about to be sent (``change.pending``:
        a :class:`_MappedOrder`). None when the head alone cannot be read (the caller reads it whole,
        for the same error message as the eager path)."""
        try:
            head = mapping.head(event)
            native = to_native({**head, "order": {}}, event, target)
            pending = _MappedOrder(self, record, head, mapping, target)
            return self._decode(record, event, native, tenant, target, locate, False, pending)
        except InputError:
            return None


class _MappedOrder:
    """A lazy read's pending order of a mapping file (:class:`connector.structs.Pending`). It keeps
    the record, not the parsed document (several times its size: 18,000 pending Shopify webhooks,
    233 MB of RSS against 131 MB), and unwraps it again when the order is made: the record read once,
    so it reads again alike (an Avro schema, once fetched, is kept). One object a change, not a
    closure and its cells (see ``decode_value``)."""

    __slots__ = ("head", "mapper", "mapping", "record", "target")

    def __init__(
        self, mapper: Mapper, record: Record, head: dict[str, Any], mapping: FileMapping, target: Target
    ) -> None:
        self.mapper = mapper
        self.record = record
        self.head = head  # what was read of the record then: external_id, updated_at, event_type
        self.mapping = mapping
        self.target = target

    def __call__(self) -> dict[str, Any]:
        again = self.mapper.unwrap(self.record)
        assert again is not None  # a tombstone is a delete: never pending
        mapped = {**self.head, "order": self.mapping.body(again, self.head["external_id"])}
        order: dict[str, Any] = to_native(mapped, again, self.target)["order"]
        return order

    def digest(self, body: dict[str, Any] | None) -> bytes:
        """Taken over the record as written and the head (:func:`source_digest`), never the order:
        the order is not mapped on the read path."""
        return source_digest(self.record, self.head)


def _shown(event: Event | None) -> Any:
    if event is None:
        return "tombstone (null value): the record key is the order's external_id"
    shown: dict[str, Any] = {"value": event.value, "deleted": event.deleted, "time": event.time}
    if event.key is not None:
        shown["key"] = event.key  # as key() gives it
    if event.headers:
        shown["headers"] = event.headers  # as header(name) gives them: text
    return shown
