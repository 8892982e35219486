"""Routing: which tenant an event belongs to, read from the place ``tenants.route`` names.

- ``field:<name>``: a top-level field of the event's JSON value (the envelope, or a bare order), a
  non-empty string, for example ``field:shop``;
- ``header:<name>``: a Kafka record header, UTF-8, for example ``header:x-shop``;
- ``topic``: the topic the event was read from (one topic per shop).

A tombstone (null value) has no fields, and a Debezium delete at the default replica identity holds
only the key columns: neither names its shop here. :class:`connector.tenancy.Tenancy` then routes
such a delete by the shop its record key's last event was routed to (``connector/_lastseen.py``);
one whose key it has not seen is dead-lettered with stage ``route``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from connector.errors import RouteError
from connector.structs import Record


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event names its tenant."""

    source: Literal["field", "header", "topic"]
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Route:
        """``field:<name>``, ``header:<name>`` or ``topic`` (checked by the settings)."""
        if text == "topic":
            return cls("topic")
        source, _, name = text.partition(":")
        if source == "field":
            return cls("field", name)
        if source == "header":
            return cls("header", name)
        raise ValueError(f"route {text!r}: field:<name>, header:<name> or topic")

    def __str__(self) -> str:
        return self.source if self.source == "topic" else f"{self.source}:{self.name}"

    def tenant_of(self, record: Record, data: Any) -> str:
        """The tenant ``record`` names (``data``: its parsed value, None for a tombstone); a
        RouteError saying what is missing where."""
        if self.source == "topic":
            return record.topic
        if self.source == "header":
            for key, raw in record.headers:
                if key == self.name and raw:
                    try:
                        return raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise RouteError(f"header {self.name}: not UTF-8: no tenant") from None
            raise RouteError(f"no tenant: header {self.name} is missing or empty (tenants.route = {self})")
        if data is None:
            raise RouteError(
                f"no tenant: a tombstone has no field {self.name} (tenants.route = {self}; route "
                "tombstones by header or topic)"
            )
        value = data.get(self.name) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise RouteError(
                f"no tenant: field {self.name} is missing or not a non-empty string (tenants.route = {self})"
            )
        return value


__all__ = ["Route"]
