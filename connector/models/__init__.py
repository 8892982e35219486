"""Vendor request-body models, written field by field from the vendors' documentation.

``SCHEMAS`` maps a sink kind to the model an event's order must satisfy; every model has
``sync_key()`` (the key events are coalesced by) and ``updated_at``.
"""

from connector.models._types import parse_timestamp
from connector.models._unknown import unknown_fields
from connector.models.loop import LoopCreateOrder, LoopOrder, LoopUpdateOrder, Money
from connector.models.shoplazza import ShoplazzaOrder, shoplazza_update_body

SCHEMAS: dict[str, type[LoopOrder] | type[ShoplazzaOrder]] = {"loop": LoopOrder, "shoplazza": ShoplazzaOrder}

__all__ = [
    "SCHEMAS",
    "LoopCreateOrder",
    "LoopOrder",
    "LoopUpdateOrder",
    "Money",
    "ShoplazzaOrder",
    "parse_timestamp",
    "shoplazza_update_body",
    "unknown_fields",
]
