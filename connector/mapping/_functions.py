"""The functions a mapping file may call besides JMESPath's own: what order events need and JMESPath's
standard library cannot say (it has no arithmetic, no dates and no string splitting).

- ``str(value)``: a string or number as text, integers exactly (``to_string`` would turn a missing
  field into the text ``"null"``, and JSON readers in other languages round 64-bit ids); null stays
  null, so a missing field is reported as missing.
- ``minor_units(amount)``: a decimal amount (``"199.99"`` or ``199.99``) in minor units
  (``19999``), computed exactly in decimal; ``minor_units(amount, digits)`` for a currency with other
  than 2 decimals (JPY: 0).
- ``from_epoch(number, unit)``: epoch time in ``s``, ``ms``, ``us`` or ``ns`` (Debezium's
  ``Timestamp``, ``MicroTimestamp``, ``NanoTimestamp``) as an RFC 3339 UTC timestamp.
- ``split(text, separator)``: the non-empty, trimmed parts of ``text`` (Shopify's ``"vip, spring"``
  tags).
- ``header(name)``: the record's header ``name`` as text (null when absent), for what a producer
  puts beside the value (Shopify's ``X-Shopify-Topic``, say); ``key()``: the record key (JSON when
  it parses, else text).

Each returns null for a null argument, so that ``minor_units(missing)`` reads as a missing field.
"""

from __future__ import annotations

import base64
import binascii
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from jmespath import functions

from connector.mapping._types import Event

_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_TIMESPEC = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "microseconds"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CURRENT: ContextVar[Event | None] = ContextVar("mapped_event", default=None)
"""The event being mapped, for ``header()`` and ``key()`` (set by the file mapping around each event)."""


class ConnectorFunctions(functions.Functions):
    """JMESPath's functions plus ``str``, ``minor_units``, ``from_epoch``, ``split``, ``header`` and
    ``key``."""

    @functions.signature({"types": ["string"]})
    def _func_header(self, name: str) -> str | None:
        event = CURRENT.get()
        return event.headers.get(name) if event is not None else None

    @functions.signature()
    def _func_key(self) -> Any:
        event = CURRENT.get()
        return event.key if event is not None else None

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_str(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    # One variadic argument: JMESPath's variadic arguments need at least one value, so the optional
    # ``digits`` is checked here. Objects are taken only to say what they are (Debezium's
    # variable-scale decimal without its schema).
    @functions.signature({"types": ["string", "number", "null", "object"], "variadic": True})
    def _func_minor_units(self, amount: Any, *digits: Any) -> int | None:
        if len(digits) > 1 or (digits and (isinstance(digits[0], bool) or not isinstance(digits[0], int))):
            raise ValueError("minor_units(amount) or minor_units(amount, digits), digits a whole number")
        if amount is None:
            return None
        if isinstance(amount, dict):
            hint = _VARIABLE_SCALE_HINT if amount.keys() == {"scale", "value"} else ""
            raise ValueError(f"minor_units: {amount!r} is an object, not a decimal amount{hint}")
        places = int(digits[0]) if digits else 2
        try:
            exact = Decimal(str(amount)).scaleb(places)
        except InvalidOperation:
            hint = _PRECISE_HINT if _base64(amount) else ""
            raise ValueError(f"minor_units: {amount!r} is not a decimal amount{hint}") from None
        if exact != exact.to_integral_value():
            raise ValueError(f"minor_units: {amount!r} has more than {places} decimals")
        return int(exact)

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["string"]})
    def _func_from_epoch(self, value: Any, unit: str) -> str | None:
        if value is None:
            return None
        if unit not in _UNITS:
            raise ValueError(f"from_epoch: unit must be one of {', '.join(_UNITS)} (got {unit!r})")
        try:
            ticks = int(value)
        except ValueError:
            raise ValueError(f"from_epoch: {value!r} is not a whole number") from None
        per_second = _UNITS[unit]
        seconds, rest = divmod(ticks, per_second)
        stamp = _EPOCH + timedelta(seconds=seconds, microseconds=rest * 1_000_000 // per_second)
        return stamp.isoformat(timespec=_TIMESPEC[unit]).replace("+00:00", "Z")

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_split(self, text: str | None, separator: str) -> list[str] | None:
        if text is None:
            return None
        return [part.strip() for part in text.split(separator) if part.strip()]


_PRECISE_HINT = (
    " (it reads as base64: a Debezium NUMERIC column at decimal.handling.mode=precise, the default, "
    "is sent as bytes whose scale only the schema gives; send the schema with it, "
    "value.converter.schemas.enable=true or Avro with mapping.registry_url, or set the Debezium "
    "connector's decimal.handling.mode=string)"
)
_VARIABLE_SCALE_HINT = (
    " (Debezium's variable-scale decimal, {scale, value}, read without its schema: send the schema "
    "with it, value.converter.schemas.enable=true or Avro with mapping.registry_url, or set the "
    "Debezium connector's decimal.handling.mode=string)"
)


def _base64(text: Any) -> bool:
    """Whether ``text`` is non-empty base64 (Kafka Connect's JSON form of bytes)."""
    if not isinstance(text, str) or not text or len(text) % 4:
        return False
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


FUNCTIONS = ConnectorFunctions()
"""One instance for every compiled mapping (it holds no state)."""
