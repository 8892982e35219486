"""The sandbox serves many tenants at once: each its own key, bucket, orders and faults."""

from __future__ import annotations

import httpx

from connector.samples import order_body
from connector.sandbox import Sandbox


async def test_each_tenant_has_its_own_key_orders_bucket_and_faults() -> None:
    """Two Loop accounts and a Shoplazza store under one server: a key works only on its own
    tenant, orders land only in it, one tenant's bucket running dry or outage leaves the others
    answering."""
    frozen = 0.0
    tenants = {
        "acme": Sandbox(api_key="acme-key", rate_per_minute=60, clock=lambda: frozen),
        "bolt": Sandbox(api_key="bolt-key"),
        "cask": Sandbox(api_key="cask-token"),
    }
    tenants["cask"].shoplazza.seed("o-1", "1001")
    async with Sandbox(api_key="root-key", tenants=tenants) as root, httpx.AsyncClient() as http:
        acme, bolt, cask = (tenants[n].url for n in ("acme", "bolt", "cask"))
        assert acme == f"{root.url}/t/acme"
        put = await http.put(
            f"{acme}/api/v1/orders", json=order_body("A-1", 1), headers={"X-Authorization": "acme-key"}
        )
        assert put.status_code == 200
        wrong = await http.put(
            f"{bolt}/api/v1/orders", json=order_body("A-1", 1), headers={"X-Authorization": "acme-key"}
        )
        assert wrong.status_code == 401
        assert tenants["acme"].store.get_external("A-1") is not None
        assert tenants["bolt"].store.get_external("A-1") is None
        assert root.store.get_external("A-1") is None

        second = await http.put(
            f"{acme}/api/v1/orders", json=order_body("A-2", 1), headers={"X-Authorization": "acme-key"}
        )
        assert second.status_code == 429, "acme's bucket (1 a second, frozen clock) is empty"
        tenants["bolt"].faults.outage_status, tenants["bolt"].faults.outage_until = 503, 1e12
        down = await http.put(
            f"{bolt}/api/v1/orders", json=order_body("B-1", 1), headers={"X-Authorization": "bolt-key"}
        )
        assert down.status_code == 503
        shop = await http.put(
            f"{cask}/openapi/2025-06/orders/o-1",
            json={"order": {"note": "hi"}},
            headers={"Access-Token": "cask-token"},
        )
        assert shop.status_code == 200, "neither acme's bucket nor bolt's outage reaches cask"
        stats = (await http.get(f"{acme}/_sandbox/stats")).json()
        assert stats["requests"] == 2
        everyone = (await http.get(f"{root.url}/_sandbox/stats")).json()
        assert (everyone["requests"], everyone["requests_all"]) == (0, 5), (
            "the tenants' own, summed at the root"
        )
        assert [r.path for r in tenants["cask"].store.requests] == ["/t/cask/openapi/2025-06/orders/o-1"]
