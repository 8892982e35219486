"""A mapping written in Python, named by import path (``mapping.function = "package.module:function"``),
for what an expression cannot say; and the checks every mapping's result goes through."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import orjson

from connector.errors import ConfigError, MappingError
from connector.mapping._types import MAPPED_FIELDS, Event, MappingFunction


def load_function(path: str) -> MappingFunction:
    """The function ``package.module:function``, imported from ``sys.path`` or else from the working
    directory (so that ``examples.shopify.mapping:to_loop`` works from a checkout). Raises ConfigError
    naming what could not be found."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"mapping.function {path}: no module {exc.name}") from None
        finally:
            sys.path.remove(os.getcwd())
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"mapping.function {path}: {module_name} has no function {name}")
    return function  # type: ignore[no-any-return]


def _where_raised(exc: BaseException) -> str:
    """The innermost frame of ``exc``'s traceback, as ``file:line in function``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.relpath(last.filename)}:{last.lineno} in {last.name}"


class FunctionMapping:
    """A Python mapping function, applied to one event at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.function = load_function(path)

    def __str__(self) -> str:
        return f"mapping function {self.path}"

    def apply(self, event: Event) -> dict[str, Any]:
        """The function's result for ``event``; whatever it raises becomes a MappingError naming the
        function, the exception and where it was raised (a missing key: the key)."""
        try:
            result = self.function(event)
        except Exception as exc:
            where = _where_raised(exc)
            path = repr(exc.args[0]) if isinstance(exc, KeyError) and exc.args else where
            what = f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")
            raise MappingError(
                f"mapping function {self.path} raised {what}", mapping=self.path, path=path
            ) from None
        if not isinstance(result, dict):
            raise MappingError(
                f"mapping function {self.path} returned {type(result).__name__}, expected a dict "
                "{external_id, updated_at, event_type, order}",
                mapping=self.path,
            )
        try:
            orjson.dumps(result)
        except TypeError as exc:  # a Decimal, a set, an object: the body must be JSON
            raise MappingError(
                f"mapping function {self.path} returned a value JSON cannot carry: {exc}", mapping=self.path
            ) from None
        return check_result(dict(result), f"mapping function {self.path}", self.path, event.deleted)


def check_result(result: dict[str, Any], where: str, mapping: str, deleted: bool) -> dict[str, Any]:
    """``result`` if it has the mapped event's shape: a non-empty string ``external_id``, an object
    ``order`` unless it is a delete, no other fields. Null optional fields are dropped."""
    unknown = sorted(set(result) - MAPPED_FIELDS)
    if unknown:
        raise MappingError(
            f"{where}: unknown field {unknown[0]} (fields: {', '.join(sorted(MAPPED_FIELDS))})",
            mapping=mapping,
            path=unknown[0],
        )
    external_id = result.get("external_id")
    if not isinstance(external_id, str) or not external_id:
        raise MappingError(
            f"{where}: external_id: gave {external_id!r}, expected a non-empty string",
            mapping=mapping,
            path="external_id",
        )
    for name in ("updated_at", "event_type", "order"):
        if result.get(name, 0) is None:
            del result[name]
    if deleted or result.get("event_type") == "order.deleted":
        return result
    order = result.get("order")
    if not isinstance(order, dict):
        shown = "nothing" if order is None else f"a {type(order).__name__}"
        raise MappingError(f"{where}: order: gave {shown}, expected an object", mapping=mapping, path="order")
    return result
