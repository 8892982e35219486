"""Vendor request-body models, written field by field from the vendors' documentation.

Which model an event's order must satisfy, per vendor and API version, is said by the vendor's entry
in :data:`connector.vendors.VENDORS`.
"""

from connector.models._types import parse_instant, parse_timestamp
from connector.models._unknown import unknown_fields
from connector.models.loop import LoopCreateOrder, LoopOrder, LoopOrder202610, LoopUpdateOrder, Money
from connector.models.shoplazza import ShoplazzaOrder, shoplazza_update_body

__all__ = [
    "LoopCreateOrder",
    "LoopOrder",
    "LoopOrder202610",
    "LoopUpdateOrder",
    "Money",
    "ShoplazzaOrder",
    "parse_instant",
    "parse_timestamp",
    "shoplazza_update_body",
    "unknown_fields",
]
