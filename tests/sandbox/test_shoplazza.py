"""The sandbox's Shoplazza endpoints follow the documented shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from connector.sandbox import Sandbox


@pytest.fixture
async def shop(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    sandbox.shoplazza.seed("o-1", "1001")
    async with httpx.AsyncClient(
        base_url=f"{sandbox.url}/openapi/2025-06", headers={"Access-Token": "test-key"}
    ) as c:
        yield c


async def test_update_answers_the_success_envelope_with_a_request_id(shop: httpx.AsyncClient) -> None:
    """PUT /orders/{id}: {code: success, message, data: {order}} and a Request-Id header."""
    response = await shop.put("/orders/o-1", json={"order": {"note": "hi", "tags": {"values": ["a"]}}})
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == "success"
    assert body["data"]["order"]["note"] == "hi"
    assert response.headers["Request-Id"]


async def test_missing_token_is_401_with_error_string(sandbox: Sandbox) -> None:
    """No or wrong Access-Token: 401 {"error": "..."}."""
    async with httpx.AsyncClient(base_url=sandbox.url) as anon:
        response = await anon.put("/openapi/2025-06/orders/o-1", json={"order": {}})
    assert response.status_code == 401
    assert response.json() == {"error": "store is not active"}


async def test_invalid_update_is_422_listing_fields(shop: httpx.AsyncClient) -> None:
    """Invalid input: 422 {"errors": [...]} naming each field."""
    response = await shop.put("/orders/o-1", json={"order": {"shipping_line": {"shipping_price": "x"}}})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert "order.shipping_line.shipping_name is required" in errors
    assert any("shipping_price" in e for e in errors)


async def test_unknown_order_is_404_and_number_lookup_finds_the_order(shop: httpx.AsyncClient) -> None:
    """Orders must exist; GET /orders/number/{number} finds one by number."""
    assert (await shop.put("/orders/nope", json={"order": {}})).status_code == 404
    found = await shop.get("/orders/number/1001")
    assert found.json()["data"]["order"]["id"] == "o-1"
    assert (await shop.get("/orders/number/9999")).status_code == 404


async def test_leaky_bucket_allows_the_documented_burst_then_429() -> None:
    """40 requests of burst per app and store, then 429 with {"errors": [...]}.

    The bucket's clock is frozen: 42 requests take longer than half a second on a loaded machine,
    and the bucket would rightly have drained one more by then.
    """
    async with (
        Sandbox(api_key="k", clock=lambda: 0.0) as sb,
        httpx.AsyncClient(base_url=f"{sb.url}/openapi/2025-06", headers={"Access-Token": "k"}) as c,
    ):
        codes = [(await c.get("/orders/x")).status_code for _ in range(42)]
    assert codes[:40] == [404] * 40
    assert codes[40:] == [429, 429]


async def test_the_store_can_lose_revert_and_edit_orders_by_itself(
    sandbox: Sandbox, shop: httpx.AsyncClient
) -> None:
    """POST /_sandbox/shoplazza/tamper, by order id: a lost order is gone (404), a reverted one is
    back as it was before its last update, an edited one holds the new values; what cannot be done
    is skipped; GET lists what the store did."""
    sandbox.shoplazza.seed("o-2", "1002")
    sandbox.shoplazza.seed("o-3", "1003")
    for order_id, note in (("o-2", "first"), ("o-2", "second"), ("o-3", "kept")):
        assert (await shop.put(f"/orders/{order_id}", json={"order": {"note": note}})).status_code == 200
    async with httpx.AsyncClient(base_url=sandbox.url) as ctl:
        done = (
            await ctl.post(
                "/_sandbox/shoplazza/tamper",
                json={"lose": ["o-1", "nope"], "revert": ["o-2"], "alter": {"o-3": {"note": "admin"}}},
            )
        ).json()
        assert done == {"lose": ["o-1"], "revert": ["o-2"], "alter": ["o-3"], "skipped": ["nope"]}
        assert (await ctl.post("/_sandbox/shoplazza/tamper", json={"lose": "o-2"})).status_code == 400
        tampers = (await ctl.get("/_sandbox/shoplazza/tamper")).json()["tampers"]
    assert [(t["op"], t["id"]) for t in tampers] == [("lose", "o-1"), ("revert", "o-2"), ("alter", "o-3")]
    assert (await shop.get("/orders/o-1")).status_code == 404
    assert (await shop.get("/orders/o-2")).json()["data"]["order"]["note"] == "first"
    assert (await shop.get("/orders/o-3")).json()["data"]["order"]["note"] == "admin"
