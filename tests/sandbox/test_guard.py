"""What the sandbox does before a vendor route answers: the version, the key, the rate limit, the
faults; read at each request from the sandbox it guards (a reset or a new key applies at once)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connector.sandbox import Faults, LoggedRequest
from connector.sandbox.guard import CREDENTIALS, LOG_ENTRY, Guard


class Account:
    """The sandbox's key and faults (``connector.sandbox.guard.Account``)."""

    def __init__(self) -> None:
        self.api_key = "k"
        self.faults = Faults()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


Served = tuple[httpx.AsyncClient, Guard, Account, Clock, list[LoggedRequest]]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A server whose routes are guarded: Loop's under ``/api``, Shoplazza's under ``/openapi``;
    the route answers with what the guard left on the request."""
    account, clock, log = Account(), Clock(), []
    guard = Guard(account, rate_per_minute=60.0, burst=2.0, shoplazza_burst=1.0, seed=1, clock=clock)

    async def answer(request: web.Request) -> web.StreamResponse:
        entry = request[LOG_ENTRY]
        return web.json_response({"key": request[CREDENTIALS], "order": entry.external_id})

    def route(vendor: str) -> web.RouteDef:
        async def guarded(request: web.Request) -> web.StreamResponse:
            entry = LoggedRequest(time.time(), request.method, request.path, 0)
            log.append(entry)
            return await guard.admit(request, answer, entry, vendor)

        prefix = "api" if vendor == "loop" else "openapi"
        return web.get(f"/{prefix}/{{version}}/orders/{{order_id}}", guarded)

    app = web.Application()
    app.add_routes([route("loop"), route("shoplazza")])
    async with TestServer(app) as server, httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
        yield client, guard, account, clock, log


async def test_a_known_version_and_the_key_reach_the_route(served: Served) -> None:
    client, _, _, _, log = served
    ok = await client.get("/api/v1/orders/7", headers={"X-Authorization": "k"})
    assert ok.status_code == 200
    assert ok.json() == {"key": "k", "order": "7"}
    assert log[0].external_id == "7"
    assert (await client.get("/api/v0/orders/7", headers={"X-Authorization": "k"})).status_code == 404


async def test_a_wrong_key_is_refused_as_each_vendor_does(served: Served) -> None:
    client, _, account, _, _ = served
    loop = await client.get("/api/v1/orders/7", headers={"X-Authorization": "nope"})
    assert loop.status_code == 401
    assert loop.json() == {"message": "Unauthorized.", "code": "NOT_AUTHORIZED"}
    shop = await client.get("/openapi/2025-06/orders/7", headers={"Access-Token": "nope"})
    assert shop.status_code == 401
    assert shop.json() == {"error": "store is not active"}
    account.faults.echo_credentials = True
    echoed = await client.get("/api/v1/orders/7", headers={"X-Authorization": "nope"})
    assert echoed.json()["message"] == "Unauthorized. Received X-Authorization: nope"
    account.api_key = "nope"  # the sandbox's key changed: read at the next request
    assert (await client.get("/api/v1/orders/7", headers={"X-Authorization": "nope"})).status_code == 200


async def test_the_budget_is_a_bucket_per_key_refilled_by_the_clock(served: Served) -> None:
    client, guard, account, clock, _ = served
    auth = {"X-Authorization": "k"}
    statuses = [(await client.get("/api/v1/orders/1", headers=auth)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    account.faults.retry_after = 5.0
    refused = await client.get("/api/v1/orders/1", headers=auth)
    assert refused.headers["Retry-After"] == "5"
    assert refused.json() == {"message": "Too Many Attempts."}
    clock.now += 1.0  # one token a second
    assert (await client.get("/api/v1/orders/1", headers=auth)).status_code == 200
    assert (await client.get("/api/v1/orders/1", headers=auth)).status_code == 429
    guard.configure(6000.0, None)  # a new budget: the buckets start full
    assert guard.rate_per_minute == 6000.0
    assert (await client.get("/api/v1/orders/1", headers=auth)).status_code == 200


async def test_faults_are_the_sandbox_s_current_ones(served: Served) -> None:
    client, _, account, clock, _ = served
    auth = {"X-Authorization": "k"}
    account.faults.outage_until, account.faults.outage_status = time.time() + 60, 502
    down = await client.get("/api/v1/orders/1", headers=auth)
    assert down.status_code == 502
    assert down.json()["code"] == "UNEXPECTED_ERROR"
    account.faults = Faults(error_rate=1.0, error_statuses=[500])  # a reset, then a new fault
    assert (await client.get("/api/v1/orders/1", headers=auth)).status_code == 500
    account.faults = Faults()
    clock.now += 2.0  # the budget of two calls spent: two more
    assert (await client.get("/api/v1/orders/1", headers=auth)).status_code == 200
