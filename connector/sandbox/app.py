"""The sandbox HTTP server: Loop's Orders API as documented, in memory, with faults on demand.

Vendor routes (``X-Authorization`` required, rate limited, faults applied), ``{v}`` one of ``v1``,
``2026-07``, ``2026-10``, ``unstable``::

    PUT    /api/{v}/orders                       upsert by external_id
    POST   /api/{v}/orders                       create
    GET    /api/{v}/orders                       list
    GET    /api/{v}/orders/{id}                  get by Loop id
    PUT    /api/{v}/orders/{id}                  update by Loop id
    GET    /api/{v}/orders/external/{externalId} get by external id
    DELETE /api/{v}/orders/external/{externalId} delete by external id

Control routes (no auth, no limit): ``GET /_sandbox/orders``, ``GET /_sandbox/requests``,
``GET /_sandbox/writes`` (every change applied, in order), ``GET /_sandbox/stats``,
``GET|POST /_sandbox/faults``, ``POST /_sandbox/reset``, ``POST /_sandbox/config``.

Shoplazza routes (``Access-Token`` required, see ``connector.sandbox.shoplazza``), ``{v}`` ``2025-06``::

    PUT    /openapi/{v}/orders/{order_id}        update (the order must exist: seed it)
    GET    /openapi/{v}/orders/{order_id}        get
    GET    /openapi/{v}/orders/number/{number}   get by order number
    DELETE /openapi/{v}/orders/{order_id}        delete

Many tenants (``Sandbox(tenants={"acme": Sandbox(api_key=...), ...})``): each child sandbox is a shop or
merchant account of its own (its key, buckets, orders, faults and request log), served by the parent's
server under the path prefix ``/t/{name}``: a tenant's base URL is ``child.url``
(``http://host:port/t/acme``), its routes and control routes the ones above under that prefix. A
Shoplazza store's own domain (``acme.myshoplaza.com``) cannot be served locally; the prefix stands in
for it.

Rate limit (Shoplazza): a leaky bucket of 40 draining 2 a second per token, as documented.
Rate limit (Loop): a token bucket per API key, ``rate_per_minute / 60`` tokens a second holding ``burst``
(default: one second's worth). That is stricter than Loop's documented "300 requests per minute", so a
client that is never refused here is never refused there. Like Loop, a 429 carries no ``Retry-After``
unless the ``retry_after`` fault asks for one.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from connector.sandbox._ratelimit import TokenBucket
from connector.sandbox.shoplazza import ShoplazzaStore, shoplazza_error
from connector.sandbox.shoplazza import routes as shoplazza_routes
from connector.sandbox.state import Faults, LoggedRequest, Store
from connector.sandbox.validate import validate_order
from connector.vendors import VENDORS

# What the vendors' entries say of their APIs: the versions each serves, the first segment of their
# paths, the header carrying the key. (The order rules are the sandbox's own: ``validate.py``.)
VERSIONS = {kind: {*entry.api_versions, *entry.other_versions} for kind, entry in VENDORS.items()}
VENDOR_PREFIXES = {entry.prefix: kind for kind, entry in VENDORS.items()}
AUTH_HEADERS = {kind: entry.auth_header for kind, entry in VENDORS.items()}
LOG_ENTRY = web.RequestKey("log_entry", LoggedRequest)
CREDENTIALS = web.RequestKey("credentials", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, code: str, errors: dict[str, list[str]] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status)


def _invalid(errors: dict[str, list[str]]) -> web.Response:
    return _error(422, "The given data was invalid.", "UNPROCESSABLE_ENTITY", errors)


class Sandbox:
    """The sandbox server as an async context manager; ``url`` is its base URL once entered."""

    def __init__(
        self,
        *,
        api_key: str = "sandbox-key",
        host: str = "127.0.0.1",
        port: int = 0,
        rate_per_minute: float = 300.0,
        burst: float | None = None,
        faults: Faults | None = None,
        shoplazza_rate_per_second: float = 2.0,
        shoplazza_burst: float = 40.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        tenants: Mapping[str, Sandbox] | None = None,
    ) -> None:
        self.api_key = api_key
        self.prefix = ""  # "/t/{name}" when this sandbox is a tenant of another
        self._clock = clock
        self._rng = random.Random(seed)
        self.host, self.port = host, port
        self.store = Store()
        self.faults = faults or Faults()
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.shoplazza = ShoplazzaStore()
        self.shoplazza_rate_per_second = shoplazza_rate_per_second
        self.shoplazza_burst = shoplazza_burst
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._app = web.Application(middlewares=[self._vendor_middleware], client_max_size=16 * 1024 * 1024)
        self._routes(self._app)
        self.tenants = dict(tenants or {})
        for name, child in self.tenants.items():
            child.prefix = f"/t/{name}"
            self._app.add_subapp(child.prefix, child._app)
        self._runner = web.AppRunner(self._app, access_log=None)

    @property
    def url(self) -> str:
        """The base URL (``http://host:port``, then ``/t/{name}`` for a tenant), to pass as
        ``CONNECTOR_SINK__BASE_URL`` or a tenant's ``base_url``."""
        return f"http://{self.host}:{self.port}{self.prefix}"

    def _bucket(self, vendor: str, key: str) -> TokenBucket:
        bucket = self._buckets.get((vendor, key))
        if bucket is None:
            if vendor == "shoplazza":
                bucket = TokenBucket(self.shoplazza_rate_per_second, self.shoplazza_burst, self._clock)
            else:
                rate = self.rate_per_minute / 60.0
                bucket = TokenBucket(rate, self.burst or max(1.0, rate), self._clock)
            self._buckets[(vendor, key)] = bucket
        return bucket

    def _routes(self, app: web.Application) -> None:
        api = "/api/{version}"
        app.router.add_put(f"{api}/orders", self._upsert)
        app.router.add_post(f"{api}/orders", self._create)
        app.router.add_get(f"{api}/orders", self._list)
        app.router.add_get(f"{api}/orders/external/{{external_id}}", self._get_external)
        app.router.add_delete(f"{api}/orders/external/{{external_id}}", self._delete_external)
        app.router.add_get(f"{api}/orders/{{order_id}}", self._get)
        app.router.add_put(f"{api}/orders/{{order_id}}", self._update)
        app.router.add_routes(shoplazza_routes(self.shoplazza))
        app.router.add_get("/_sandbox/orders", self._ctl_orders)
        app.router.add_get("/_sandbox/shoplazza/orders", self._ctl_shoplazza_orders)
        app.router.add_post("/_sandbox/shoplazza/orders", self._ctl_shoplazza_orders)
        app.router.add_get("/_sandbox/requests", self._ctl_requests)
        app.router.add_get("/_sandbox/writes", self._ctl_writes)
        app.router.add_get("/_sandbox/stats", self._ctl_stats)
        app.router.add_get("/_sandbox/faults", self._ctl_faults)
        app.router.add_post("/_sandbox/faults", self._ctl_faults)
        app.router.add_post("/_sandbox/reset", self._ctl_reset)
        app.router.add_post("/_sandbox/config", self._ctl_config)

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        for child in self.tenants.values():
            child.host, child.port = self.host, self.port
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._runner.cleanup()

    # -- the vendor's behaviour around every API call --------------------------------------------
    @web.middleware
    async def _vendor_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path.removeprefix(self.prefix)
        vendor = VENDOR_PREFIXES.get(path.split("/", 2)[1] if path.count("/") > 1 else "")
        if vendor is None:
            return await handler(request)
        entry = LoggedRequest(time.time(), request.method, request.path, 0)
        self.store.requests.append(entry)
        response = await self._guarded(request, handler, entry, vendor)
        entry.status = response.status
        entry.done = time.time()
        if vendor == "shoplazza":
            response.headers["Request-Id"] = uuid.uuid4().hex
        return response

    def _refuse(self, vendor: str, status: int, message: str, code: str) -> web.Response:
        if vendor == "shoplazza":
            return (
                shoplazza_error(status, error=message)
                if status == 401
                else shoplazza_error(status, [message])
            )
        return _error(status, message, code)

    async def _guarded(
        self, request: web.Request, handler: Handler, entry: LoggedRequest, vendor: str
    ) -> web.StreamResponse:
        if request.match_info.get("version") not in VERSIONS[vendor]:
            return self._refuse(vendor, 404, "Not Found.", "NOT_FOUND")
        key = request.headers.get(AUTH_HEADERS[vendor], "")
        request[CREDENTIALS] = key
        if key != self.api_key:
            message = "store is not active" if vendor == "shoplazza" else "Unauthorized."
            if self.faults.echo_credentials:
                message += f" Received {AUTH_HEADERS[vendor]}: {key}"
            return self._refuse(vendor, 401, message, "NOT_AUTHORIZED")
        if not self._bucket(vendor, key).take():
            headers = {}
            if self.faults.retry_after is not None:
                headers["Retry-After"] = f"{self.faults.retry_after:g}"
            body: dict[str, Any] = (
                {"errors": ["Exceeded 2 calls per second for api client. Reduce request rates."]}
                if vendor == "shoplazza"
                else {"message": "Too Many Attempts."}
            )
            return web.json_response(body, status=429, headers=headers)
        f = self.faults
        if f.latency_ms or f.latency_jitter_ms:
            await asyncio.sleep((f.latency_ms + self._rng.uniform(0, f.latency_jitter_ms)) / 1000.0)
        if time.time() < f.outage_until:
            return self._refuse(vendor, f.outage_status, "Service Unavailable.", "UNEXPECTED_ERROR")
        if f.timeout_rate and self._rng.random() < f.timeout_rate:
            await asyncio.sleep(f.hang_seconds)
            return self._refuse(vendor, 504, "Gateway Timeout.", "UNEXPECTED_ERROR")
        if f.error_rate and self._rng.random() < f.error_rate:
            status = self._rng.choice(f.error_statuses)
            return self._refuse(vendor, status, "Internal Server Error.", "UNEXPECTED_ERROR")
        if f.late_rate and self._rng.random() < f.late_rate:
            # The vendor has the whole request (read now: once the client gives up, the connection
            # is gone and its body could no longer be read), and applies it after the client timed out.
            await request.read()
            await asyncio.sleep(f.late_seconds)
        if "order_id" in request.match_info:
            entry.external_id = request.match_info["order_id"]
        request[LOG_ENTRY] = entry
        return await handler(request)

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(
                text=json.dumps({"message": "The request body is not valid JSON.", "code": "BAD_REQUEST"}),
                content_type="application/json",
            ) from None

    def _note(self, request: web.Request, body: Any) -> None:
        entry = request.get(LOG_ENTRY)
        if entry is not None and isinstance(body, dict):
            ext, upd = body.get("external_id"), body.get("updated_at")
            entry.external_id = ext if isinstance(ext, str) else None
            entry.updated_at = upd if isinstance(upd, str) else None

    def _forced(self, body: Any, request: web.Request | None = None) -> web.Response | None:
        ext = body.get("external_id") if isinstance(body, dict) else None
        status = self.faults.reject_external_ids.get(ext) if isinstance(ext, str) else None
        if status is None:
            return None
        echo = (
            f" (key {request.get(CREDENTIALS)})"
            if request is not None and self.faults.echo_credentials
            else ""
        )
        return _error(
            status,
            f"Rejected by sandbox fault for external_id {ext}{echo}.",
            "UNPROCESSABLE_ENTITY",
            {"external_id": ["Rejected by the sandbox's reject_external_ids fault."]},
        )

    # -- vendor routes -------------------------------------------------------------------------
    async def _upsert(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self._note(request, body)
        errors = validate_order(body, operation="upsert", version=request.match_info["version"])
        if errors:
            return _invalid(errors)
        forced = self._forced(body, request)
        return forced or web.json_response({"order": self.store.upsert(body)})

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self._note(request, body)
        errors = validate_order(body, operation="create", version=request.match_info["version"])
        if not errors and body.get("external_id") and self.store.get_external(body["external_id"]):
            errors = {"external_id": ["The external_id has already been taken."]}
        if errors:
            return _invalid(errors)
        forced = self._forced(body, request)
        return forced or web.json_response({"order": self.store.create(body)})

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"orders": list(self.store.orders.values()), "next_page_url": None, "previous_page_url": None}
        )

    def _order_id(self, request: web.Request) -> int | None:
        try:
            value = int(request.match_info["order_id"])
        except ValueError:
            return None
        return value if value >= 1 else None

    async def _get(self, request: web.Request) -> web.Response:
        order_id = self._order_id(request)
        order = self.store.orders.get(order_id) if order_id else None
        if order is None:
            return _error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"order": order})

    async def _update(self, request: web.Request) -> web.Response:
        order_id = self._order_id(request)
        body = await self._body(request)
        self._note(request, body)
        errors = validate_order(body, operation="update", version=request.match_info["version"])
        if errors:
            return _invalid(errors)
        order = self.store.update(order_id, body) if order_id else None
        if order is None:
            return _error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"order": order})

    def _external_id(self, request: web.Request) -> tuple[str, web.Response | None]:
        ext = request.match_info["external_id"]
        entry = request.get(LOG_ENTRY)
        if entry is not None:
            entry.external_id = ext
        if len(ext) > 64:
            return ext, _invalid({"externalId": ["The externalId may not be greater than 64 characters."]})
        return ext, None

    async def _get_external(self, request: web.Request) -> web.Response:
        ext, bad = self._external_id(request)
        if bad:
            return bad
        order = self.store.get_external(ext)
        if order is None:
            return _error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"order": order})

    async def _delete_external(self, request: web.Request) -> web.Response:
        ext, bad = self._external_id(request)
        if bad:
            return bad
        order_id = self.store.delete_external(ext)
        if order_id is None:
            return _error(404, "Order not found.", "ORDER_NOT_FOUND")
        return web.json_response({"id": order_id, "success": True})

    # -- control routes ------------------------------------------------------------------------
    async def _ctl_orders(self, _: web.Request) -> web.Response:
        return web.json_response({"orders": list(self.store.orders.values())})

    async def _ctl_shoplazza_orders(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            for item in await request.json():
                self.shoplazza.seed(str(item["id"]), str(item["number"]))
        return web.json_response({"orders": list(self.shoplazza.orders.values())})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        since = float(request.query.get("since", 0))
        return web.json_response(
            {
                "requests": [
                    {
                        "ts": r.ts,
                        "method": r.method,
                        "path": r.path,
                        "status": r.status,
                        "external_id": r.external_id,
                        "updated_at": r.updated_at,
                        "done": r.done,
                    }
                    for r in self.store.requests
                    if r.ts >= since
                ]
            }
        )

    async def _ctl_writes(self, _: web.Request) -> web.Response:
        return web.json_response({"writes": [asdict(w) for w in self.store.writes]})

    def holds(self, latest: dict[str, dict[str, Any]]) -> bool:
        """Whether every order in ``latest`` (external_id -> body) is held at that body's updated_at."""
        return len(self.in_sync(latest)) == len(latest)

    def in_sync(self, latest: dict[str, dict[str, Any]]) -> list[str]:
        """The external_ids of ``latest`` that the sandbox holds at their latest updated_at."""
        return [
            key
            for key, body in latest.items()
            if (held := self.store.get_external(key)) is not None
            and held.get("updated_at") == body["updated_at"]
        ]

    def stats(self) -> dict[str, Any]:
        """Counts of requests by status, and of orders held."""
        by_status = Counter(str(r.status) for r in self.store.requests)
        return {
            "requests": len(self.store.requests),
            "by_status": dict(by_status),
            "orders": len(self.store.orders),
        }

    async def _ctl_stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.faults.update(await request.json())
            except (KeyError, ValueError, TypeError) as exc:
                return web.json_response({"message": f"unknown or bad fault: {exc}"}, status=400)
        return web.json_response(self.faults.as_dict())

    async def _ctl_reset(self, _: web.Request) -> web.Response:
        self.store.reset()
        self.shoplazza.orders.clear()
        self.faults = Faults()
        return web.json_response({"reset": True})

    async def _ctl_config(self, request: web.Request) -> web.Response:
        values = await request.json()
        if "api_key" in values:
            self.api_key = str(values["api_key"])
        if "rate_per_minute" in values or "burst" in values:
            self.rate_per_minute = float(values.get("rate_per_minute", self.rate_per_minute))
            self.burst = values.get("burst", self.burst)
            self._buckets.clear()
        return web.json_response({"rate_per_minute": self.rate_per_minute, "burst": self.burst})
