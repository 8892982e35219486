"""The sandbox's Shoplazza OpenAPI (2025-06): update, get by id or number, delete; its own validation.

Answers follow the documented shapes: ``{"code": "success", "message", "data": {"order"}}`` on success,
``{"error": "..."}`` for a missing or invalid ``Access-Token`` (401), ``{"errors": [...]}`` for invalid
input (422), and a ``Request-Id`` header on every response. Orders must exist before they can be
updated (seed them with ``POST /_sandbox/shoplazza/orders``), as on a real store.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Any

from aiohttp import web

from connector.sandbox.state import KEPT_VERSIONS

ADDRESS_FIELDS = (
    "last_name", "first_name", "phone", "email", "country", "country_code", "province", "province_code",
    "area", "city", "address", "address1", "company", "zip", "phone_area_code",
)  # fmt: skip
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


def shoplazza_error(status: int, errors: list[str] | None = None, error: str | None = None) -> web.Response:
    """A Shoplazza-shaped error: ``{"errors": [...]}`` or ``{"error": "..."}``."""
    body: dict[str, Any] = {"errors": errors} if errors is not None else {"error": error or "error"}
    return web.json_response(body, status=status)


def validate_update(body: Any) -> list[str]:
    """Check an Update Order body; each problem names its field path."""
    if not isinstance(body, dict) or not isinstance(body.get("order"), dict):
        return ["order is required and must be an object"]
    order = body["order"]
    problems = []
    if "note" in order and not isinstance(order["note"], str):
        problems.append("order.note must be a string")
    if "buyer_accepts_marketing" in order and not isinstance(order["buyer_accepts_marketing"], bool):
        problems.append("order.buyer_accepts_marketing must be a boolean")
    tags = order.get("tags")
    if tags is not None:
        values = tags.get("values") if isinstance(tags, dict) else None
        if not isinstance(tags, dict) or (
            values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values))
        ):
            problems.append("order.tags.values must be an array of strings")
    address = order.get("shipping_address")
    if address is not None:
        if not isinstance(address, dict):
            problems.append("order.shipping_address must be an object")
        else:
            problems += [
                f"order.shipping_address.{f} must be a string"
                for f in ADDRESS_FIELDS
                if f in address and not isinstance(address[f], str)
            ]
    line = order.get("shipping_line")
    if line is not None:
        if not isinstance(line, dict):
            problems.append("order.shipping_line must be an object")
        else:
            name, price = line.get("shipping_name"), line.get("shipping_price")
            if not isinstance(name, str) or not name:
                problems.append("order.shipping_line.shipping_name is required")
            if not isinstance(price, str) or not _NUMERIC.match(price):
                problems.append("order.shipping_line.shipping_price is required, a numeric string")
            if "shipping_desc" in line and not isinstance(line["shipping_desc"], str):
                problems.append("order.shipping_line.shipping_desc must be a string")
    return problems


class ShoplazzaStore:
    """Shoplazza orders by id, with their numbers."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self._before: dict[str, deque[dict[str, Any]]] = {}  # each order before its last updates
        self.tampers: list[dict[str, Any]] = []

    def seed(self, order_id: str, number: str) -> dict[str, Any]:
        """Create an order as the store would have it."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.orders[order_id] = {"id": order_id, "number": number, "created_at": now, "updated_at": now}
        return self.orders[order_id]

    def by_number(self, number: str) -> dict[str, Any] | None:
        """The order whose number is ``number`` (with or without its leading ``#``)."""
        wanted = number.lstrip("#")
        return next((o for o in self.orders.values() if str(o["number"]).lstrip("#") == wanted), None)

    def update(self, order_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Apply an update's fields; None when there is no such order."""
        order = self.orders.get(order_id)
        if order is None:
            return None
        self._before.setdefault(order_id, deque(maxlen=KEPT_VERSIONS)).append(dict(order))
        order.update(fields)
        order["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return order

    def tamper(
        self, lose: list[str], revert: list[str], alter: dict[str, dict[str, Any]]
    ) -> dict[str, list[str]]:
        """The store, by itself (its admin, a restored backup): loses the orders of ``lose`` (by id),
        puts those of ``revert`` back as they were before their last update, and edits the fields
        ``alter`` gives each. Returns the ids done by op, and those it could not do under
        ``skipped``, as the Loop store's ``tamper`` does."""
        done: dict[str, list[str]] = {"lose": [], "revert": [], "alter": [], "skipped": []}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for order_id in lose:
            gone = self.orders.pop(order_id, None) is not None
            done["lose" if gone else "skipped"].append(order_id)
        for order_id in revert:
            before = self._before.get(order_id)
            if order_id not in self.orders or not before:
                done["skipped"].append(order_id)
                continue
            self.orders[order_id] = {**before.pop(), "updated_at": now}
            done["revert"].append(order_id)
        for order_id, values in alter.items():
            order = self.orders.get(order_id)
            if order is None:
                done["skipped"].append(order_id)
                continue
            order.update({k: v for k, v in values.items() if k not in ("id", "number")}, updated_at=now)
            done["alter"].append(order_id)
        for op in ("lose", "revert", "alter"):
            self.tampers += [{"ts": time.time(), "op": op, "id": order_id} for order_id in done[op]]
        return done


def routes(store: ShoplazzaStore) -> list[web.RouteDef]:
    """The vendor routes; auth, rate limit and faults are applied by the sandbox's middleware."""
    base = "/openapi/{version}/orders"

    def ok(order: dict[str, Any], message: str) -> web.Response:
        return web.json_response({"code": "success", "message": message, "data": {"order": order}})

    async def update(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return shoplazza_error(400, ["request body is not valid JSON"])
        problems = validate_update(body)
        if problems:
            return shoplazza_error(422, problems)
        order = store.update(request.match_info["order_id"], body["order"])
        if order is None:
            return shoplazza_error(404, ["order not found"])
        return ok(order, "Order updated successfully")

    async def get(request: web.Request) -> web.Response:
        order = store.orders.get(request.match_info["order_id"])
        return (
            ok(order, "Order retrieved successfully") if order else shoplazza_error(404, ["order not found"])
        )

    async def by_number(request: web.Request) -> web.Response:
        order = store.by_number(request.match_info["number"])
        return (
            ok(order, "Order retrieved successfully") if order else shoplazza_error(404, ["order not found"])
        )

    async def delete(request: web.Request) -> web.Response:
        if store.orders.pop(request.match_info["order_id"], None) is None:
            return shoplazza_error(404, ["order not found"])
        return web.json_response({"code": "success", "message": "Order deleted", "data": {}})

    return [
        web.put(f"{base}/{{order_id}}", update),
        web.get(f"{base}/number/{{number}}", by_number),
        web.get(f"{base}/{{order_id}}", get),
        web.delete(f"{base}/{{order_id}}", delete),
    ]
