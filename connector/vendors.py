"""The vendors the connector syncs to: one registry entry each.

An entry says everything the rest of the code needs to know about a vendor: its name (``sink.kind``),
its API versions (the first is the default), its default budget, the header carrying the key and the
path prefix of its API, the model an order must satisfy per API version, how an event names its order
(the key changes are coalesced by), the modes it supports, and its sink class. ``config``, ``decode``
and ``sinks`` read this table instead of comparing the ``kind`` string; a third vendor is one entry
here plus its model and sink modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from connector.models import LoopOrder, LoopOrder202610, ShoplazzaOrder

if TYPE_CHECKING:
    from connector.sinks import Sink


def _loop_key(order: Mapping[str, Any]) -> str | None:
    ext = order.get("external_id")
    return ext if isinstance(ext, str) and 1 <= len(ext) <= 64 else None


def _shoplazza_key(order: Mapping[str, Any]) -> str | None:
    named = order.get("id") or (f"number:{order['number']}" if order.get("number") else None)
    return named if isinstance(named, str) and named else None


@dataclass(frozen=True, slots=True)
class Vendor:
    """One vendor's Orders API, as the connector uses it."""

    kind: str
    api_versions: tuple[str, ...]
    default_rate_per_second: float
    auth_header: str
    path: str
    """The API's path prefix; ``{version}`` is replaced by the API version."""
    models: Mapping[str, type[BaseModel]]
    """The order model per API version; ``""`` is the model of every version not listed."""
    order_key: Callable[[Mapping[str, Any]], str | None]
    """The key an event's order is coalesced by, or None when the order names none."""
    key_field: str
    key_rule: str
    keyed_by_record: bool
    """Whether the Kafka record key, when set, names the order (an order may be named by ``id`` in
    one event and by ``number`` in another: only the producer's key says they are one order)."""
    sink: str
    """``module:Class`` of the sink, imported when first needed (sinks import ``config``)."""
    modes: tuple[str, ...] = ("upsert",)

    def model(self, api_version: str = "") -> type[BaseModel]:
        """The model an event's order must satisfy for ``api_version``."""
        return self.models.get(api_version) or self.models[""]

    def base_path(self, api_version: str) -> str:
        """The API's path prefix for ``api_version``, e.g. ``/api/v1``."""
        return self.path.format(version=api_version)

    def sink_class(self) -> type[Sink]:
        """The vendor client class."""
        module, name = self.sink.split(":")
        cls: type[Sink] = getattr(importlib.import_module(module), name)
        return cls


VENDORS: dict[str, Vendor] = {
    vendor.kind: vendor
    for vendor in (
        Vendor(
            kind="loop",
            api_versions=("v1", "2026-07", "2026-10"),
            default_rate_per_second=5.0,  # 300 requests a minute per key
            auth_header="X-Authorization",
            path="/api/{version}",
            models={"": LoopOrder, "2026-10": LoopOrder202610},
            order_key=_loop_key,
            key_field="order.external_id",
            key_rule="required, a string of 1 to 64 characters",
            keyed_by_record=False,
            sink="connector.sinks.loop:LoopSink",
            modes=("upsert", "create_update"),
        ),
        Vendor(
            kind="shoplazza",
            api_versions=("2025-06",),
            default_rate_per_second=2.0,  # a leaky bucket of 40 draining 2 a second per store
            auth_header="Access-Token",
            path="/openapi/{version}",
            models={"": ShoplazzaOrder},
            order_key=_shoplazza_key,
            key_field="order.id",
            key_rule="id (the order_id) or number is required to find the order",
            keyed_by_record=True,
            sink="connector.sinks.shoplazza:ShoplazzaSink",
        ),
    )
}


def vendor(kind: str) -> Vendor:
    """The registry entry of ``kind``; KeyError naming the known ones otherwise."""
    try:
        return VENDORS[kind]
    except KeyError:
        raise KeyError(f"unknown sink kind {kind!r}: one of {', '.join(sorted(VENDORS))}") from None


__all__ = ["VENDORS", "Vendor", "vendor"]
