"""Loop's Orders API in the sandbox: its routes over the sandbox's :class:`~connector.sandbox.state.Store`.

Auth, rate limit and faults are applied before a route runs (``connector.sandbox.guard``); a route
checks the body as Loop documents it (``validate.py``), notes the order it names in the request log,
and answers as Loop does. The one fault a route applies itself is ``reject_external_ids`` (after the
body is checked, as a vendor refusing one order would). Split out of the server as Shoplazza's routes
are (``connector.sandbox.shoplazza``): one module per vendor's route group.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from aiohttp import web

from connector.sandbox.guard import CREDENTIALS, LOG_ENTRY, Account, loop_error
from connector.sandbox.state import Store
from connector.sandbox.validate import validate_order


def _invalid(errors: dict[str, list[str]]) -> web.Response:
    return loop_error(422, "The given data was invalid.", "UNPROCESSABLE_ENTITY", errors)


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"message": "The request body is not valid JSON.", "code": "BAD_REQUEST"}),
            content_type="application/json",
        ) from None


def _note(request: web.Request, body: Any) -> None:
    entry = request.get(LOG_ENTRY)
    if entry is not None and isinstance(body, dict):
        ext, upd = body.get("external_id"), body.get("updated_at")
        entry.external_id = ext if isinstance(ext, str) else None
        entry.updated_at = upd if isinstance(upd, str) else None


def _order_id(request: web.Request) -> int | None:
    try:
        value = int(request.match_info["order_id"])
    except ValueError:
        return None
    return value if value >= 1 else None


def _external_id(request: web.Request) -> tuple[str, web.Response | None]:
    ext = request.match_info["external_id"]
    entry = request.get(LOG_ENTRY)
    if entry is not None:
        entry.external_id = ext
    if len(ext) > 64:
        return ext, _invalid({"externalId": ["The externalId may not be greater than 64 characters."]})
    return ext, None


PAGE_SIZE = 50
"""Orders a page of List Orders. Loop's excerpt documents only the answer's ``next_page_url`` and
``previous_page_url``, not its parameters or page size: the sandbox pages by ``?page=`` (from 1), and
a client follows the URLs it is given rather than building them."""


def routes(store: Store, account: Account) -> list[web.RouteDef]:
    """Loop's vendor routes (``/api/{version}/orders…``) over ``store``; ``account``'s faults now
    say which external ids are refused."""

    def forced(body: Any, request: web.Request) -> web.Response | None:
        ext = body.get("external_id") if isinstance(body, dict) else None
        faults = account.faults
        status = faults.reject_external_ids.get(ext) if isinstance(ext, str) else None
        if status is None:
            return None
        echo = f" (key {request.get(CREDENTIALS)})" if faults.echo_credentials else ""
        return loop_error(
            status,
            f"Rejected by sandbox fault for external_id {ext}{echo}.",
            "UNPROCESSABLE_ENTITY",
            {"external_id": ["Rejected by the sandbox's reject_external_ids fault."]},
        )

    async def upsert(request: web.Request) -> web.Response:
        body = await _body(request)
        _note(request, body)
        errors = validate_order(body, operation="upsert", version=request.match_info["version"])
        if errors:
            return _invalid(errors)
        return forced(body, request) or web.json_response({"order": store.upsert(body)})

    async def create(request: web.Request) -> web.Response:
        body = await _body(request)
        _note(request, body)
        errors = validate_order(body, operation="create", version=request.match_info["version"])
        if not errors and body.get("external_id") and store.get_external(body["external_id"]):
            errors = {"external_id": ["The external_id has already been taken."]}
        if errors:
            return _invalid(errors)
        return forced(body, request) or web.json_response({"order": store.create(body)})

    async def list_orders(request: web.Request) -> web.Response:
        try:
            page = int(request.query.get("page", "1"))
        except ValueError:
            page = 0
        if page < 1:
            return loop_error(400, "The page must be a whole number from 1.", "BAD_REQUEST")
        start = (page - 1) * PAGE_SIZE  # by Loop id: ids only grow, and dicts keep insertion order
        held = list(itertools.islice(store.orders.values(), start, start + PAGE_SIZE + 1))
        more, back = len(held) > PAGE_SIZE, page > 1
        return web.json_response(
            {
                "orders": held[:PAGE_SIZE],
                "next_page_url": str(request.url.update_query(page=page + 1)) if more else None,
                "previous_page_url": str(request.url.update_query(page=page - 1)) if back else None,
            }
        )

    async def get(request: web.Request) -> web.Response:
        order_id = _order_id(request)
        order = store.orders.get(order_id) if order_id else None
        if order is None:
            return loop_error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"order": order})

    async def update(request: web.Request) -> web.Response:
        order_id = _order_id(request)
        body = await _body(request)
        _note(request, body)
        errors = validate_order(body, operation="update", version=request.match_info["version"])
        if errors:
            return _invalid(errors)
        order = store.update(order_id, body) if order_id else None
        if order is None:
            return loop_error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"order": order})

    async def get_external(request: web.Request) -> web.Response:
        ext, bad = _external_id(request)
        if bad:
            return bad
        order = store.get_external(ext)
        if order is None:
            return loop_error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"order": order})

    async def delete_external(request: web.Request) -> web.Response:
        ext, bad = _external_id(request)
        if bad:
            return bad
        order_id = store.delete_external(ext)
        if order_id is None:
            return loop_error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"id": order_id, "success": True})

    api = "/api/{version}"
    return [
        web.put(f"{api}/orders", upsert),
        web.post(f"{api}/orders", create),
        web.get(f"{api}/orders", list_orders),
        web.get(f"{api}/orders/external/{{external_id}}", get_external),
        web.delete(f"{api}/orders/external/{{external_id}}", delete_external),
        web.get(f"{api}/orders/{{order_id}}", get),
        web.put(f"{api}/orders/{{order_id}}", update),
    ]
