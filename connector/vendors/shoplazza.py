"""Shoplazza: its registry entry and its client. OpenAPI 2025-06: ``PUT /openapi/2025-06/orders/{order_id}``
with ``{"order": {...}}``; a leaky bucket of 40 draining 2 a second per store. A tenant may name its
store (``shop = "acme"``) instead of a base URL: ``https://acme.myshoplaza.com``.

Auth header ``Access-Token``. The order is named by ``id`` in the event, or by ``number``, resolved once
with ``GET /orders/number/{number}`` and cached. Responses are ``{code, message, data}``; errors come as
``{"error": "..."}`` or ``{"errors": [...]}``; every response's ``Request-Id`` goes into error messages.
Deletion uses ``DELETE /orders/{order_id}`` (documented in Shoplazza's 2026-01 CLI metadata).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from connector.errors import NotFoundError, RejectedError
from connector.models.shoplazza import ShoplazzaOrder, shoplazza_update_body
from connector.pacing import Pacer
from connector.sinks import BoundedCache, HttpClient, Prepaid, SinkOptions
from connector.structs import OrderChange
from connector.vendors._registry import ShopRule, Vendor, register


def shoplazza_error_detail(response: httpx.Response) -> str | None:
    """``{"error": ...}``, ``{"errors": [...]}`` or ``{code, message}``, with the Request-Id."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    said = None
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list):
            said = "; ".join(map(str, body["errors"]))
        else:
            said = body.get("error") or body.get("message") or body.get("code")
    request_id = response.headers.get("Request-Id")
    text = str(said) if said else response.text[:300]
    return f"{text} (Request-Id {request_id})" if request_id else text


class ShoplazzaSink:
    """Updates and deletes orders on a Shoplazza store, through its own HTTP client."""

    name = "shoplazza"

    def __init__(
        self,
        settings: SinkOptions,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        path, header = SHOPLAZZA.base_path(settings.api_version), SHOPLAZZA.auth_header
        self._http = HttpClient(settings, path, header, transport, pacer, shoplazza_error_detail)
        self._ids: BoundedCache[str, str] = BoundedCache(settings.cache_size)  # number -> order id
        self._keys: BoundedCache[str, str] = BoundedCache(settings.cache_size)  # record key -> order id
        self.lookups = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    def set_api_key(self, api_key: SecretStr) -> None:
        """Send ``api_key`` from the next request on (a key rotated without a restart)."""
        self._http.set_api_key(api_key)

    async def _order_id(self, change: OrderChange, prepaid: Prepaid | None = None) -> str:
        """The order id: the event's ``id``, its ``number`` resolved, what its key resolved to before,
        or the key itself (``number:N`` resolved; else the key is the order id)."""
        order_id = change.body.get("id")
        if isinstance(order_id, str) and order_id:
            return order_id
        known = self._keys.get(change.external_id)
        if not change.body.get("number") and known is not None:
            return known
        if not change.body.get("number") and not change.external_id.startswith("number:"):
            return change.external_id
        number = str(change.body.get("number") or change.external_id.removeprefix("number:"))
        cached = self._ids.get(number)
        if cached is not None:
            return cached
        self.lookups += 1
        response = await self._http.request(
            "GET", f"/orders/number/{quote(number, safe='')}", prepaid=prepaid
        )
        found = _data(response).get("order", {}).get("id")
        if not isinstance(found, str | int) or found == "":
            raise RejectedError(f"order number {number}: no order id in the answer", status=200)
        self._ids.remember(number, str(found))
        return str(found)

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        """``GET /orders/number/0``: 404 (no such order) means reachable and authenticated."""
        with contextlib.suppress(NotFoundError):
            await self._http.request("GET", "/orders/number/0", prepaid=prepaid)

    async def held_fields(
        self, change: OrderChange, prepaid: Prepaid | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What an update of ``change`` sends (its ``order``), and the order Shoplazza holds (``GET
        /orders/{id}``, its number resolved first when the event names it by number; None: none;
        ``prepaid``: the tick the first request uses)."""
        sent = shoplazza_update_body(change.body)["order"] if change.op == "upsert" else {}
        try:
            order_id = await self._order_id(change, prepaid)
            response = await self._http.request("GET", f"/orders/{quote(order_id, safe='')}", prepaid=prepaid)
        except NotFoundError:
            return sent, None
        held = _data(response).get("order")
        return sent, held if isinstance(held, dict) else {}

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        """Shoplazza keeps its own ``updated_at``, not the event's: nothing to compare with."""
        raise NotImplementedError("Shoplazza keeps no timestamp of ours: cannot tell a stale event")

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        """Update the order, or delete it."""
        order_id = await self._order_id(change, prepaid)
        self._keys.remember(change.external_id, order_id)
        if change.op == "delete":
            try:
                await self._http.request("DELETE", f"/orders/{quote(order_id, safe='')}", prepaid=prepaid)
            except NotFoundError:
                return  # already gone
            return
        response = await self._http.request(
            "PUT",
            f"/orders/{quote(order_id, safe='')}",
            json=shoplazza_update_body(change.body),
            prepaid=prepaid,
        )
        _data(response)


def _data(response: httpx.Response) -> dict[str, Any]:
    """The ``data`` of a ``{code, message, data}`` answer; a non-success code is a rejection."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    code = body.get("code")
    if code not in (None, "success", "Success", "OK", 0, 200):
        raise RejectedError(
            f"{response.request.method} {response.request.url.path}: {code}: {body.get('message')}",
            status=response.status_code,
            body=response.text[:4096],
        )
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def _order_key(order: Mapping[str, Any]) -> str | None:
    named = order.get("id") or (f"number:{order['number']}" if order.get("number") else None)
    return named if isinstance(named, str) and named else None


SHOPLAZZA = register(
    Vendor(
        kind="shoplazza",
        api_versions=("2025-06",),
        default_rate_per_second=2.0,  # a leaky bucket of 40 draining 2 a second per store
        auth_header="Access-Token",
        path="/openapi/{version}",
        models={"": ShoplazzaOrder},
        order_key=_order_key,
        key_field="order.id",
        key_rule="id (the order_id) or number is required to find the order",
        keyed_by_record=True,
        sink=ShoplazzaSink,
        shop=ShopRule(
            domain="myshoplaza.com",
            pattern=re.compile(r"[a-z0-9][a-z0-9-]{0,62}"),
            hint="a Shoplazza store name such as 'acme'",
        ),
        other_versions=("2026-01",),
    )
)
