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
