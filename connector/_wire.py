"""Reading the JSON records the members write to the small compacted topics beside the group's (the
pace topic, :mod:`connector.fleetpace`; the resync topic, :mod:`connector.resynclog`): one version
rule and one way of refusing a record, so that a reader skips what it cannot read with one log line
per kind."""

from __future__ import annotations

import json
import math
from typing import Any


class Unreadable(ValueError):
    """A record this member cannot read; ``kind`` says why, for the log."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def json_object(value: bytes, version: int) -> dict[str, Any]:
    """The JSON object of a record of ``version``; :class:`Unreadable` if it is not JSON, not an
    object, or of another version."""
    try:
        data = json.loads(value)
    except ValueError:
        raise Unreadable("not JSON") from None
    if not isinstance(data, dict):
        raise Unreadable("not a JSON object")
    if data.get("v") != version:
        raise Unreadable(f"version {data.get('v')!r}")
    return data


def number(value: Any) -> float:
    """A finite JSON number (not a boolean); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


def share(value: Any) -> float:
    """A share of a budget: a number above 0 and at most 1; ValueError otherwise."""
    part = number(value)
    if not 0.0 < part <= 1.0:
        raise ValueError(value)
    return part


__all__ = ["Unreadable", "json_object", "number", "share"]
