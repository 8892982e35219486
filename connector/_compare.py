"""What a vendor holds against what was sent: the fields that differ, on the projection of what was
sent (``connector trace``; the read-back audits will use it too).

Only the fields sent are compared (a vendor adds its own: ids, timestamps of its own); values are
compared as the vendor may represent them: timestamps as instants (``2026-12-01T10:00:00Z`` and
``2026-12-01T11:00:00+01:00`` are one time), numbers as numbers (``12.5`` and ``"12.50"``), objects
field by field, lists element by element.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_SHOWN = 10
"""Fields named at most (the rest are counted)."""


def differences(sent: Any, held: Any, skip: frozenset[str] = frozenset()) -> list[str]:
    """The paths (``total_price.amount``, ``line_items[0].quantity``) where ``held`` differs from
    ``sent``; fields whose path is in ``skip`` are not compared, a list index written ``[]`` there
    (``line_items[].note``: the vendor model's unknown fields, which a vendor may drop)."""
    return list(_walk(sent, held, "", "", skip))


def _walk(sent: Any, held: Any, path: str, pattern: str, skip: frozenset[str]) -> Iterator[str]:
    if isinstance(sent, dict):
        if not isinstance(held, dict):
            yield path or "(the order)"
            return
        for name, value in sent.items():
            inner = f"{pattern}.{name}" if pattern else name
            if inner in skip:
                continue
            yield from _walk(value, held.get(name), f"{path}.{name}" if path else name, inner, skip)
        return
    if isinstance(sent, list):
        if not isinstance(held, list) or len(held) != len(sent):
            yield path
            return
        for i, (a, b) in enumerate(zip(sent, held, strict=True)):
            yield from _walk(a, b, f"{path}[{i}]", f"{pattern}[]", skip)
        return
    if not _same(sent, held):
        yield path


def _same(sent: Any, held: Any) -> bool:
    if isinstance(sent, bool) or isinstance(held, bool):
        return sent is held  # True == 1 in Python, not in JSON
    if sent == held:
        return True
    number_a, number_b = _number(sent), _number(held)
    if number_a is not None and number_b is not None:
        return number_a == number_b
    time_a, time_b = _instant(sent), _instant(held)
    return time_a is not None and time_a == time_b


def _number(value: Any) -> Decimal | None:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    return None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def shown(paths: list[str]) -> str:
    """``paths`` for a line of text: the first :data:`MAX_SHOWN`, and how many more."""
    more = len(paths) - MAX_SHOWN
    return ", ".join(paths[:MAX_SHOWN]) + (f" and {more} more" if more > 0 else "")


__all__ = ["differences", "shown"]
