"""Vendor request-body models, written field by field from the vendors' documentation."""

from connector.models.loop import LoopOrder, Money

__all__ = ["LoopOrder", "Money"]
