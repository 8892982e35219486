"""The sandbox behaves like Loop's documented Orders API: auth, validation, rate limit, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from connector.samples import order_body
from connector.sandbox import Sandbox
from connector.sandbox.loop import PAGE_SIZE

AUTH = {"X-Authorization": "test-key"}


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as c:
        yield c


async def test_upsert_creates_then_replaces_by_external_id(
    client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """PUT /orders twice with one external_id: one order, holding the second body."""
    first = await client.put("/api/v1/orders", json=order_body("E-1", 1))
    second = await client.put("/api/v1/orders", json=order_body("E-1", 2))
    assert first.status_code == second.status_code == 200
    assert first.json()["order"]["id"] == second.json()["order"]["id"]
    got = await client.get("/api/v1/orders/external/E-1")
    assert got.json()["order"]["updated_at"] == order_body("E-1", 2)["updated_at"]
    assert len(sandbox.store.orders) == 1


async def test_missing_or_wrong_key_is_401(sandbox: Sandbox) -> None:
    """X-Authorization is required and checked."""
    async with httpx.AsyncClient(base_url=sandbox.url) as anon:
        assert (await anon.put("/api/v1/orders", json={})).status_code == 401
        wrong = await anon.put("/api/v1/orders", json={}, headers={"X-Authorization": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "NOT_AUTHORIZED"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "no id"}, "external_id"),
        ({"external_id": "x" * 65}, "external_id"),
        ({"external_id": "a", "name": "n" * 101}, "name"),
        ({"external_id": "a", "channel": "c" * 65}, "channel"),
        ({"external_id": "a", "status": "open"}, "status"),
        ({"external_id": "a", "financial_status": "owed"}, "financial_status"),
        ({"external_id": "a", "cancel_reason": "bored"}, "cancel_reason"),
        ({"external_id": "a", "total_price": {"amount": 1.5}}, "total_price.amount"),
        (
            {"external_id": "a", "total_price": {"amount": 1, "currency_code": "usd"}},
            "total_price.currency_code",
        ),
        ({"external_id": "a", "updated_at": "2026-01-01"}, "updated_at"),
        ({"external_id": "a", "status": "cancelled"}, "cancelled_at"),
        ({"external_id": "a", "customer": {"id": 1, "external_id": "c"}}, "customer"),
        ({"external_id": "a", "line_items": [{"quantity": -1}]}, "line_items.0.quantity"),
        ({"external_id": "a", "browser_ip": "1" * 46}, "browser_ip"),
    ],
)
async def test_validation_errors_name_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    """A body breaking a documented rule is answered 422 naming the field."""
    response = await client.put("/api/v1/orders", json=body)
    assert response.status_code == 422
    assert field in response.json()["errors"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is a 400."""
    response = await client.put(
        "/api/v1/orders", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_create_requires_documented_fields(client: httpx.AsyncClient) -> None:
    """POST /orders requires name, sales_channel, status, taxes_included, total_price, line_items, source."""
    response = await client.post("/api/v1/orders", json={"external_id": "c-1"})
    assert response.status_code == 422
    assert set(response.json()["errors"]) >= {
        "name",
        "sales_channel",
        "status",
        "taxes_included",
        "total_price",
        "line_items",
        "source",
    }


async def test_version_2026_10_requires_created_at(client: httpx.AsyncClient) -> None:
    """From 2026-10, created_at is required; v1 (2026-07) accepts an order without it."""
    assert (await client.put("/api/2026-10/orders", json={"external_id": "a"})).status_code == 422
    assert (await client.put("/api/v1/orders", json={"external_id": "a"})).status_code == 200
    assert (await client.put("/api/1999-01/orders", json={"external_id": "a"})).status_code == 404


async def test_update_and_delete(client: httpx.AsyncClient) -> None:
    """PUT /orders/{id} updates by Loop id; DELETE by external id removes; unknown ids are 404."""
    created = (await client.put("/api/v1/orders", json={"external_id": "u-1", "name": "a"})).json()["order"]
    updated = await client.put(f"/api/v1/orders/{created['id']}", json={"name": "b"})
    assert updated.json()["order"]["name"] == "b"
    assert (await client.put("/api/v1/orders/99999", json={"name": "b"})).status_code == 404
    deleted = await client.delete("/api/v1/orders/external/u-1")
    assert deleted.json() == {"id": created["id"], "success": True}
    assert (await client.delete("/api/v1/orders/external/u-1")).status_code == 404
    assert (await client.get("/api/v1/orders/external/" + "x" * 65)).status_code == 422


async def test_rate_limit_answers_429_past_the_budget() -> None:
    """With 60 requests/minute and a burst of 3, the 4th immediate request is refused with 429.

    The bucket's clock is frozen, so a slow machine cannot refill a token mid-test.
    """
    async with (
        Sandbox(api_key="k", rate_per_minute=60, burst=3, clock=lambda: 0.0) as sb,
        httpx.AsyncClient(base_url=sb.url, headers={"X-Authorization": "k"}) as c,
    ):
        codes = [(await c.put("/api/v1/orders", json={"external_id": f"r{i}"})).status_code for i in range(6)]
        assert codes[:3] == [200, 200, 200]
        assert set(codes[3:]) == {429}
        refused = await c.put("/api/v1/orders", json={"external_id": "r"})
        assert "Retry-After" not in refused.headers, "Loop documents no Retry-After"


async def test_outage_fault_answers_503_until_it_ends(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """POST /_sandbox/faults {outage_seconds} makes every call a 503 for that long."""
    await client.post("/_sandbox/faults", json={"outage_seconds": 30})
    assert (await client.put("/api/v1/orders", json={"external_id": "o"})).status_code == 503
    await client.post("/_sandbox/faults", json={"outage_seconds": 0})
    assert (await client.put("/api/v1/orders", json={"external_id": "o"})).status_code == 200


async def test_error_rate_and_rejections_by_external_id(client: httpx.AsyncClient) -> None:
    """error_rate 1.0 fails every call with a 5xx; reject_external_ids forces a status for one order."""
    await client.post("/_sandbox/faults", json={"error_rate": 1.0})
    assert (await client.put("/api/v1/orders", json={"external_id": "e"})).status_code >= 500
    await client.post("/_sandbox/faults", json={"error_rate": 0.0, "reject_external_ids": {"bad": 422}})
    assert (await client.put("/api/v1/orders", json={"external_id": "bad"})).status_code == 422
    assert (await client.put("/api/v1/orders", json={"external_id": "good"})).status_code == 200


async def test_request_log_records_every_call(client: httpx.AsyncClient) -> None:
    """GET /_sandbox/requests lists each call with its time, status and external id."""
    await client.put("/api/v1/orders", json=order_body("L-1", 1))
    log = (await client.get("/_sandbox/requests")).json()["requests"]
    assert log[-1]["external_id"] == "L-1"
    assert log[-1]["status"] == 200
    assert log[-1]["ts"] > 0
    assert (await client.post("/_sandbox/faults", json={"no_such_fault": 1})).status_code == 400


async def test_a_late_write_lands_after_the_client_gave_up_and_the_write_log_shows_it(
    sandbox: Sandbox,
) -> None:
    """The late_rate fault holds a write past the client's timeout and applies it afterwards: a
    client that sends a newer state meanwhile without waiting sees the order moved backwards, and
    GET /_sandbox/writes lists the writes in the order they were applied (the late one last)."""
    sandbox.faults.update({"late_rate": 1.0, "late_seconds": 0.5})
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as c:
        with pytest.raises(httpx.TimeoutException):
            await c.put("/api/v1/orders", json=order_body("W-1", 1), timeout=0.1)
        sandbox.faults.update({"late_rate": 0.0})
        assert (await c.put("/api/v1/orders", json=order_body("W-1", 2))).status_code == 200
        assert sandbox.store.get_external("W-1")["updated_at"] == order_body("W-1", 2)["updated_at"]  # type: ignore[index]
        await asyncio.sleep(0.8)
        assert (await c.delete("/api/v1/orders/external/W-1")).status_code == 200
        writes = (await c.get("/_sandbox/writes")).json()["writes"]
    assert [(w["op"], w["external_id"], w["updated_at"]) for w in writes] == [
        ("upsert", "W-1", order_body("W-1", 2)["updated_at"]),
        ("upsert", "W-1", order_body("W-1", 1)["updated_at"]),
        ("delete", "W-1", None),
    ]
    assert writes[1]["ts"] >= writes[0]["ts"]


async def test_list_orders_pages_by_the_urls_it_answers(client: httpx.AsyncClient) -> None:
    """GET /orders answers a page of orders (``PAGE_SIZE``) with the next and previous pages' URLs,
    None at either end; following them visits every order once."""
    for i in range(PAGE_SIZE + 3):
        await client.put("/api/v1/orders", json=order_body(f"P-{i}", 1))
    first = (await client.get("/api/v1/orders")).json()
    assert len(first["orders"]) == PAGE_SIZE
    assert first["previous_page_url"] is None
    seen, url = [], "/api/v1/orders"
    while url:
        page = (await client.get(url)).json()
        seen += [o["external_id"] for o in page["orders"]]
        url = page["next_page_url"]
    assert seen == [f"P-{i}" for i in range(PAGE_SIZE + 3)]
    assert page["previous_page_url"] is not None
    assert (await client.get("/api/v1/orders", params={"page": "0"})).status_code == 400


async def test_the_vendor_loses_reverts_and_edits_orders_by_itself(client: httpx.AsyncClient) -> None:
    """POST /_sandbox/tamper: a lost order is gone, a reverted one holds its previous version, an
    edited one the fields given (its updated_at unchanged); each is listed by GET, none among the
    clients' writes. What it cannot do (no such order, no older version) is skipped, a bad request
    refused."""
    for ext, versions in (("T-lost", 1), ("T-back", 2), ("T-edit", 1), ("T-once", 1)):
        for v in range(1, versions + 1):
            await client.put("/api/v1/orders", json=order_body(ext, v))
    writes = len((await client.get("/_sandbox/writes")).json()["writes"])
    done = await client.post(
        "/_sandbox/tamper",
        json={
            "lose": ["T-lost", "T-none"],
            "revert": ["T-back", "T-once"],
            "alter": {"T-edit": {"name": "#edited"}},
        },
    )
    assert done.json() == {
        "lose": ["T-lost"],
        "revert": ["T-back"],
        "alter": ["T-edit"],
        "skipped": ["T-none", "T-once"],
    }
    assert (await client.get("/api/v1/orders/external/T-lost")).status_code == 404
    back = (await client.get("/api/v1/orders/external/T-back")).json()["order"]
    assert back["updated_at"] == order_body("T-back", 1)["updated_at"]
    edited = (await client.get("/api/v1/orders/external/T-edit")).json()["order"]
    assert (edited["name"], edited["updated_at"]) == ("#edited", order_body("T-edit", 1)["updated_at"])
    tampers = (await client.get("/_sandbox/tamper")).json()["tampers"]
    assert [(t["op"], t["external_id"]) for t in tampers] == [
        ("lose", "T-lost"),
        ("revert", "T-back"),
        ("alter", "T-edit"),
    ]
    assert tampers[1]["updated_at_before"] == order_body("T-back", 2)["updated_at"]
    assert tampers[2]["fields"] == ["name"]
    assert len((await client.get("/_sandbox/writes")).json()["writes"]) == writes
    for bad in ({"drop": ["x"]}, {"lose": "T-edit"}, {"alter": {"T-edit": "x"}}, {"revert": [1]}):
        assert (await client.post("/_sandbox/tamper", json=bad)).status_code == 400, bad
