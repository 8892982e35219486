"""Conform: a change's body checked against its vendor's model just before it is sent.

The second step of reading (the first is :func:`connector.decode.decode`, which takes only what
coalescing needs): the deliverer calls :func:`check` on the change it is about to send, so a change
replaced by a newer one of its order before it is sent is never judged. A failure names every field
path, rule and offending value (:func:`describe_validation`), and is dead-lettered with stage
``validate``. ``decode(..., validate=True)`` calls it at once (``connector validate``, ``explain``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from connector.errors import DecodeError, OrderValidationError
from connector.models import unknown_fields
from connector.structs import OrderChange
from connector.vendors import Target

_VALUE_PREVIEW = 80


def preview(value: Any) -> str:
    """``value`` as compact JSON, cut at 80 characters: how an error message shows what it refused."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _VALUE_PREVIEW else text[:_VALUE_PREVIEW] + "…"


def _path(loc: tuple[int | str, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_validation(exc: ValidationError, prefix: str = "order") -> OrderValidationError:
    """Turn pydantic's errors into one message naming each field path, rule and offending value."""
    problems = []
    for err in exc.errors():
        path = _path(err["loc"], prefix)
        rule = err["msg"].removeprefix("Value error, ")
        value = "(missing)" if err["type"] == "missing" else preview(err.get("input"))
        problems.append((path, rule, value))
    text = "; ".join(f"{p}: {r} (value: {v})" for p, r, v in problems)
    return OrderValidationError(f"invalid order: {text}", problems)


def complete(change: OrderChange) -> None:
    """Make the body of ``change`` when it is still to be made (a mapping file's ``order``): raises
    the MappingError (stage ``map``) the mapping raises."""
    change.complete()


def check(change: OrderChange, target: Target) -> None:
    """Validate ``change``'s body against the vendor model of ``target`` (just
    before it is sent), made first if it is still to be made (:func:`complete`); note its unknown
    fields. Raises OrderValidationError naming every problem (or the mapping's MappingError)."""
    complete(change)
    if change.validated:
        return
    try:
        model = target.model().model_validate(change.body)
    except ValidationError as exc:
        error = describe_validation(exc, "order")
        error.external_id = change.external_id
        raise error from None
    except RecursionError:
        raise DecodeError("order is nested too deeply to validate") from None
    change.unknown = tuple(unknown_fields(model))
    change.validated = True


__all__ = ["check", "complete", "describe_validation", "preview"]
