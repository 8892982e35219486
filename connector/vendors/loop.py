"""Loop Returns: its registry entry and its client. Orders API ``/api/{version}/orders``, auth header
``X-Authorization``, 300 requests a minute per key; an order is named by ``external_id``.

Modes:
- ``upsert`` (default): ``PUT /orders`` upserts by ``external_id``; one call per change.
- ``create_update``, for accounts that cannot upsert: the Loop id of each external id is looked up once
  (``GET /orders/external/{externalId}``) and cached; then ``PUT /orders/{id}`` updates, or
  ``POST /orders`` creates when there is no such order.
Deletion: ``DELETE /orders/external/{externalId}``; a 404 there means the order is already gone.
A 404 from ``PUT /orders`` cannot be the event's fault (the path names no order): it means a wrong base
URL or a retired API version, an outage (:class:`EndpointError`), not a dead letter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from connector.errors import EndpointError, NotFoundError, RejectedError
from connector.models import parse_instant
from connector.models.loop import LoopOrder, LoopOrder202610
from connector.pacing import Pacer
from connector.sinks import BoundedCache, HttpClient, Prepaid, SinkOptions
from connector.structs import OrderChange
from connector.vendors._registry import Vendor, register


def loop_error_detail(response: httpx.Response) -> str | None:
    """Loop answers ``{"message", "code", "errors": {field: [messages]}}``."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts = [str(body.get("message") or body.get("code") or "")]
    errors = body.get("errors")
    if isinstance(errors, dict):
        parts += [f"{field}: {'; '.join(map(str, msgs))}" for field, msgs in errors.items()]
    return " ".join(p for p in parts if p) or None


class LoopSink:
    """Upserts (or creates and updates) and deletes orders on Loop, through its own HTTP client."""

    name = "loop"

    def __init__(
        self,
        settings: SinkOptions,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        path, header = LOOP.base_path(settings.api_version), LOOP.auth_header
        self._http = HttpClient(settings, path, header, transport, pacer, loop_error_detail)
        self._mode = settings.mode
        self._ids: BoundedCache[str, int] = BoundedCache(settings.cache_size)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    def set_api_key(self, api_key: SecretStr) -> None:
        """Send ``api_key`` from the next request on (a key rotated without a restart)."""
        self._http.set_api_key(api_key)

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        """``GET /orders/external/{a name no order has}``: 404 means reachable and authenticated."""
        with contextlib.suppress(NotFoundError):
            await self._http.request("GET", "/orders/external/connector-probe", prepaid=prepaid)

    async def held_order(self, change: OrderChange, prepaid: Prepaid | None = None) -> dict[str, Any] | None:
        """``GET /orders/external/{id}``: the order Loop holds for ``change``'s external id, as Loop
        answers it; None when it holds none (``prepaid``: the tick the request uses)."""
        path = f"/orders/external/{quote(change.external_id, safe='')}"
        try:
            found = await self._http.request("GET", path, prepaid=prepaid)
        except NotFoundError:
            return None
        order = found.json().get("order")
        return order if isinstance(order, dict) else {}

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        """Whether Loop holds the order, and the ``updated_at`` it was last sent with (Loop keeps the
        field as sent)."""
        order = await self.held_order(change)
        return (False, None) if order is None else (True, parse_instant(order.get("updated_at")))

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        """Make Loop hold ``change``: upsert, create/update, or delete."""
        path = f"/orders/external/{quote(change.external_id, safe='')}"
        if change.op == "delete":
            self._ids.pop(change.external_id, None)
            try:
                await self._http.request("DELETE", path, prepaid=prepaid)
            except NotFoundError:
                return
            return
        if self._mode == "upsert":
            try:
                await self._http.request("PUT", "/orders", json=change.body, prepaid=prepaid)
            except NotFoundError as exc:
                raise EndpointError(
                    f"{exc} (PUT /orders names no order: check sink.base_url and sink.api_version)",
                    status=exc.status,
                    body=exc.body,
                ) from None
            return
        await self._create_or_update(change, path, prepaid)

    async def _create_or_update(self, change: OrderChange, path: str, prepaid: Prepaid | None) -> None:
        try:
            await self._create_or_update_once(change, path, prepaid)
        except NotFoundError:  # the cached id is gone (deleted elsewhere): look up or create again
            await self._create_or_update_once(change, path, prepaid)

    async def _create_or_update_once(self, change: OrderChange, path: str, prepaid: Prepaid | None) -> None:
        loop_id = self._ids.get(change.external_id)
        if loop_id is None:
            try:
                found = await self._http.request("GET", path, prepaid=prepaid)
                loop_id = int(found.json()["order"]["id"])
            except NotFoundError:
                try:
                    created = await self._http.request("POST", "/orders", json=change.body, prepaid=prepaid)
                except RejectedError as exc:
                    if "already been taken" not in exc.body:
                        raise
                    found = await self._http.request(
                        "GET", path, prepaid=prepaid
                    )  # created by an earlier, unanswered call
                    loop_id = int(found.json()["order"]["id"])
                else:
                    self._ids.remember(change.external_id, int(created.json()["order"]["id"]))
                    return
        self._ids.remember(change.external_id, loop_id)
        try:
            await self._http.request("PUT", f"/orders/{loop_id}", json=change.body, prepaid=prepaid)
        except NotFoundError:
            self._ids.pop(change.external_id, None)
            raise


def _order_key(order: Mapping[str, Any]) -> str | None:
    ext = order.get("external_id")
    return ext if isinstance(ext, str) and 1 <= len(ext) <= 64 else None


LOOP = register(
    Vendor(
        kind="loop",
        api_versions=("v1", "2026-07", "2026-10"),
        default_rate_per_second=5.0,  # 300 requests a minute per key
        auth_header="X-Authorization",
        path="/api/{version}",
        models={"": LoopOrder, "2026-10": LoopOrder202610},
        order_key=_order_key,
        key_field="order.external_id",
        key_rule="required, a string of 1 to 64 characters",
        keyed_by_record=False,
        sink=LoopSink,
        modes=("upsert", "create_update"),
        other_versions=("unstable",),
    )
)
