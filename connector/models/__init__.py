"""Vendor request-body models, written field by field from the vendors' documentation.

``schema_for(kind, api_version)`` is the model an event's order must satisfy; every model has
``sync_key()`` (the key events are coalesced by) and ``updated_at``.
"""

from connector.models._types import parse_timestamp
from connector.models._unknown import unknown_fields
from connector.models.loop import LoopCreateOrder, LoopOrder, LoopOrder202610, LoopUpdateOrder, Money
from connector.models.shoplazza import ShoplazzaOrder, shoplazza_update_body

SCHEMAS: dict[str, type[LoopOrder] | type[ShoplazzaOrder]] = {"loop": LoopOrder, "shoplazza": ShoplazzaOrder}
_BY_VERSION: dict[tuple[str, str], type[LoopOrder]] = {("loop", "2026-10"): LoopOrder202610}


def schema_for(kind: str, api_version: str = "") -> type[LoopOrder] | type[ShoplazzaOrder]:
    """The model an event's order must satisfy for this vendor and API version."""
    return _BY_VERSION.get((kind, api_version)) or SCHEMAS[kind]


__all__ = [
    "SCHEMAS",
    "LoopCreateOrder",
    "LoopOrder",
    "LoopOrder202610",
    "LoopUpdateOrder",
    "Money",
    "ShoplazzaOrder",
    "parse_timestamp",
    "schema_for",
    "shoplazza_update_body",
    "unknown_fields",
]
