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
``GET|POST /_sandbox/faults``, ``GET|POST /_sandbox/tamper`` and ``/_sandbox/shoplazza/tamper`` (the
vendor loses, reverts or edits orders by itself: ``{"lose": [ids], "revert": [ids], "alter": {id:
{field: value}}}``, Loop's by external id, Shoplazza's by id, and ``GET`` lists what it did; kept
apart from the writes), ``POST /_sandbox/reset``, ``POST /_sandbox/config``.

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

The server holds the stores and the control routes; Loop's routes are ``loop.py``, Shoplazza's
``shoplazza.py``, and what runs before every vendor route (version, key, rate limit, faults) is the
:class:`~connector.sandbox.guard.Guard` it owns.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from connector.sandbox import loop
from connector.sandbox.guard import VENDOR_PREFIXES, Guard, Handler
from connector.sandbox.shoplazza import ShoplazzaStore
from connector.sandbox.shoplazza import routes as shoplazza_routes
from connector.sandbox.state import Faults, LoggedRequest, Store

_TAMPER_SHAPE = '{"lose": [ids], "revert": [ids], "alter": {id: {field: value}}}'


Tampering = Callable[[list[str], list[str], dict[str, dict[str, Any]]], dict[str, list[str]]]


async def _tamper(request: web.Request, tamper: Tampering, done: Callable[[], list[Any]]) -> web.Response:
    """``POST``: ``tamper`` (a store's) loses, reverts and alters the orders the body names (Loop's by
    external id, Shoplazza's by id); ``GET``: what it did (``done``)."""
    if request.method != "POST":
        return web.json_response({"tampers": done()})
    try:
        values = await request.json()
        lose, revert, alter = values.get("lose", []), values.get("revert", []), values.get("alter", {})
        unknown = set(values) - {"lose", "revert", "alter"}
        ids = [*lose, *revert] if isinstance(lose, list) and isinstance(revert, list) else [None]
        if unknown or not all(isinstance(i, str) for i in ids) or not isinstance(alter, dict):
            raise ValueError(f"unknown keys {sorted(unknown)}, or lose/revert not lists of ids")
        if not all(isinstance(v, dict) for v in alter.values()):
            raise ValueError("an alter value is not an object")
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"message": f"bad tamper ({exc}): {_TAMPER_SHAPE}"}, status=400)
    return web.json_response(tamper(lose, revert, alter))


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
        self.host, self.port = host, port
        self.store = Store()
        self.faults = faults or Faults()
        self.shoplazza = ShoplazzaStore()
        self._guard = Guard(  # the version, the key, the rate limit and the faults, before every route
            self,
            rate_per_minute=rate_per_minute,
            burst=burst,
            shoplazza_rate_per_second=shoplazza_rate_per_second,
            shoplazza_burst=shoplazza_burst,
            seed=seed,
            clock=clock,
        )
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

    @property
    def rate_per_minute(self) -> float:
        """Loop's budget per key (``POST /_sandbox/config`` changes it)."""
        return self._guard.rate_per_minute

    @property
    def burst(self) -> float | None:
        """Loop's bucket per key (None: one second's worth)."""
        return self._guard.burst

    def set_rate(self, rate_per_minute: float, burst: float | None = None) -> None:
        """Loop's budget per key from now on, every bucket full again (as ``POST /_sandbox/config``)."""
        self._guard.configure(rate_per_minute, burst)

    def _routes(self, app: web.Application) -> None:
        app.router.add_routes(loop.routes(self.store, self))
        app.router.add_routes(shoplazza_routes(self.shoplazza))
        app.router.add_get("/_sandbox/orders", self._ctl_orders)
        app.router.add_get("/_sandbox/shoplazza/orders", self._ctl_shoplazza_orders)
        app.router.add_post("/_sandbox/shoplazza/orders", self._ctl_shoplazza_orders)
        app.router.add_get("/_sandbox/shoplazza/tamper", self._ctl_shoplazza_tamper)
        app.router.add_post("/_sandbox/shoplazza/tamper", self._ctl_shoplazza_tamper)
        app.router.add_get("/_sandbox/requests", self._ctl_requests)
        app.router.add_get("/_sandbox/writes", self._ctl_writes)
        app.router.add_get("/_sandbox/stats", self._ctl_stats)
        app.router.add_get("/_sandbox/faults", self._ctl_faults)
        app.router.add_post("/_sandbox/faults", self._ctl_faults)
        app.router.add_get("/_sandbox/tamper", self._ctl_tamper)
        app.router.add_post("/_sandbox/tamper", self._ctl_tamper)
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
        response = await self._guard.admit(request, handler, entry, vendor)
        entry.status = response.status
        entry.done = time.time()
        if vendor == "shoplazza":
            response.headers["Request-Id"] = uuid.uuid4().hex
        return response

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
        """Counts of requests by status, and of orders held; ``requests_all`` adds its tenants'
        requests (a cheap count to poll: a benchmark's poll of the connector's /metrics would cost
        the connector the CPU it measures)."""
        by_status = Counter(str(r.status) for r in self.store.requests)
        return {
            "requests": len(self.store.requests),
            "requests_all": len(self.store.requests)
            + sum(len(t.store.requests) for t in self.tenants.values()),
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

    async def _ctl_tamper(self, request: web.Request) -> web.Response:
        return await _tamper(request, self.store.tamper, lambda: [asdict(t) for t in self.store.tampers])

    async def _ctl_shoplazza_tamper(self, request: web.Request) -> web.Response:
        return await _tamper(request, self.shoplazza.tamper, lambda: self.shoplazza.tampers)

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
            rate = float(values.get("rate_per_minute", self.rate_per_minute))
            self._guard.configure(rate, values.get("burst", self.burst))
        return web.json_response({"rate_per_minute": self.rate_per_minute, "burst": self.burst})
