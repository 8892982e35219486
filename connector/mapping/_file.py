"""A mapping file: one JMESPath expression per field of the mapped event, in TOML.

::

    # examples/shopify/mapping.toml
    external_id = "str(id)"
    updated_at  = "updated_at"
    event_type  = "cancelled_at && 'order.cancelled' || 'order.updated'"
    order = '''{
      external_id: str(id),
      name: name,
      total_price: {amount: minor_units(total_price), currency_code: currency}
    }'''

``external_id`` and ``order`` are required, ``updated_at`` and ``event_type`` optional (the envelope's
defaults; an expression giving null also leaves the default). In ``order``, a key whose value is null
is left out: JMESPath writes null for a field the event does not have, and the connector forwards
nothing the producer did not send. Every expression is compiled when the file is loaded, so a
syntax error stops the start-up with the file, the field and the position; compiled to closures
(``_compile.py``), since a mapping runs on every record read. Each field is evaluated
on its own so that a failure names the field and its expression. For a delete, ``order`` is not
evaluated: a delete needs only the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from connector.errors import ConfigError, MappingError
from connector.mapping._compile import PATH, Compiled, Compiler
from connector.mapping._functions import CURRENT, FUNCTIONS
from connector.mapping._types import MAPPED_FIELDS, Event

_REQUIRED = ("external_id", "order")
_COMPILER = Compiler(jmespath.Options(custom_functions=FUNCTIONS))
_SHOWN = 120


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[:_SHOWN] + "…"


@dataclass(frozen=True, slots=True)
class Expression:
    """One field's compiled expression, and where it came from (for error messages)."""

    field: str
    source: str
    compiled: Compiled
    where: str

    def __call__(self, document: Any) -> Any:
        """The expression's value on ``document``; a MappingError naming the file, the field and the
        expression when it fails."""
        try:
            return self.compiled(document)
        except (JMESPathError, ValueError, TypeError, ArithmeticError) as exc:
            inside = "".join(getattr(exc, PATH, ()))
            where = f" at {self.field}{inside}" if inside else ""
            raise self.error(f"failed{where}: {exc}", self.field + inside) from None

    def error(self, problem: str, path: str = "") -> MappingError:
        """A MappingError about this field's expression (``path``: where in the value it builds, when
        known: ``order.line_items[1].unit_price.amount``)."""
        return MappingError(
            f"mapping {self.where}: {self.field} = {_short(self.source)!r}: {problem}",
            mapping=f"{self.where}: {self.field} = {self.source}",
            path=path or self.field,
        )


class FileMapping:
    """The expressions of a mapping file, applied to one event at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"mapping.file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"mapping.file {path}: not TOML: {exc}") from None
        unknown = sorted(set(data) - MAPPED_FIELDS)
        if unknown:
            fields = ", ".join(sorted(MAPPED_FIELDS))
            raise ConfigError(f"mapping.file {path}: unknown field {unknown[0]} (fields: {fields})")
        for name in _REQUIRED:
            if name not in data:
                raise ConfigError(f"mapping.file {path}: {name} is required")
        self.expressions: dict[str, Expression] = {}
        for name, source in data.items():
            if not isinstance(source, str) or not source.strip():
                raise ConfigError(f"mapping.file {path}: {name}: must be a JMESPath expression (a string)")
            try:
                compiled = _COMPILER.compile(source)
            except JMESPathError as exc:
                detail = " ".join(str(exc).split())
                raise ConfigError(
                    f"mapping.file {path}: {name}: not a JMESPath expression: {detail}"
                ) from None
            self.expressions[name] = Expression(name, source, compiled, self.path)

    def __str__(self) -> str:
        return f"mapping file {self.path}"

    def apply(self, event: Event) -> dict[str, Any]:
        """``{external_id, updated_at, event_type, order}`` for ``event``: each field from its
        expression (optional ones left out when they give null). A required field that gives null,
        or the wrong type, is a MappingError naming it."""
        token = CURRENT.set(event)
        try:
            return self._apply(event)
        finally:
            CURRENT.reset(token)

    def head(self, event: Event) -> dict[str, Any]:
        """What coalescing needs of ``event``, without its order: ``{external_id, updated_at,
        event_type}`` (optional ones left out when they give null), as :meth:`apply` gives them."""
        token = CURRENT.set(event)
        try:
            return self._head(event.value)
        finally:
            CURRENT.reset(token)

    def body(self, event: Event, external_id: str) -> dict[str, Any]:
        """The order of ``event`` (an upsert), as :meth:`apply` gives it; evaluated when the change is
        about to be sent, so an event replaced before then never runs its largest expression."""
        token = CURRENT.set(event)
        try:
            return self._order(event.value, external_id)
        finally:
            CURRENT.reset(token)

    def _apply(self, event: Event) -> dict[str, Any]:
        out = self._head(event.value)
        if event.deleted or out.get("event_type") == "order.deleted":
            return out
        out["order"] = self._order(event.value, out["external_id"])
        return out

    def _head(self, document: Any) -> dict[str, Any]:
        exprs = self.expressions
        out: dict[str, Any] = {}
        if "event_type" in exprs:
            event_type = exprs["event_type"](document)
            if event_type is not None:
                out["event_type"] = event_type
        key_expr = exprs["external_id"]
        external_id = key_expr(document)
        if external_id is None:
            raise key_expr.error("gave null: is the field missing from the event?")
        if not isinstance(external_id, str) or not external_id:
            raise key_expr.error(f"gave {external_id!r}, expected a non-empty string (wrap it in str())")
        out["external_id"] = external_id
        if "updated_at" in exprs:
            updated_at = exprs["updated_at"](document)
            if updated_at is not None:
                out["updated_at"] = updated_at
        return out

    def _order(self, document: Any, external_id: str) -> dict[str, Any]:
        order_expr = self.expressions["order"]
        try:
            order = order_expr(document)
            if order is None:
                raise order_expr.error("gave null: is the field missing from the event?")
            if not isinstance(order, dict):
                raise order_expr.error(f"gave a {type(order).__name__}, expected an object")
        except MappingError as exc:
            exc.external_id = external_id
            raise
        return _without_nulls(order)


def _without_nulls(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` without the keys whose value is null, in nested objects and lists of objects too."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, dict):
            item = _without_nulls(item)
        elif isinstance(item, list):
            item = [_without_nulls(i) if isinstance(i, dict) else i for i in item]
        out[key] = item
    return out
