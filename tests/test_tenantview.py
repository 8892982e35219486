"""How each shop served looks from outside (``connector/_tenantview.py``): its per-shop series
(bounded by ``tenants.metrics_limit``, removed with the shop), its ``/tenants`` row, the shops whose
circuit is open (``/readyz``) and a shop's health as parking asks it. Driven through ``TenantView``'s
methods with shops built by ``tests/shops.py``; the series read back from the metrics registry."""

from __future__ import annotations

from connector._tenantview import TenantView
from connector.circuit import State
from connector.clock import SYSTEM_CLOCK
from connector.metrics import Metrics
from tests.shops import by_name, owning, shop

PACE = "connector_tenant_pace_requests_per_second"
DOWN = "connector_tenant_circuit_open"
PARKED = "connector_tenant_parked"
AGE = "connector_tenant_oldest_unsynced_event_age_seconds"


def view(metrics: Metrics, *, many: bool = True, limit: int = 10) -> TenantView:
    return TenantView(metrics, SYSTEM_CLOCK, many=many, metrics_limit=limit)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_shop_has_its_series_and_those_past_the_limit_are_summed_under_other() -> None:
    metrics = Metrics()
    v = view(metrics, limit=1)
    fence = owning()
    served = by_name(
        shop("b", budget=10.0, fence=fence), shop("a", budget=10.0, fence=fence), shop("c", fence=fence)
    )
    v.circuit_changed("c", State.OPEN)
    now = SYSTEM_CLOCK.wall()
    v.refresh(served, {"b": now - 30.0, "c": now - 60.0}, parked={"b", "c"})
    a_pace = served["a"].pacer.rate
    assert sample(metrics, PACE, tenant="a") == a_pace  # first in name order: its own series
    assert sample(metrics, PACE, tenant="_other") == served["b"].pacer.rate + served["c"].pacer.rate
    assert sample(metrics, DOWN, tenant="_other") == 1
    assert sample(metrics, DOWN, tenant="a") == 0
    assert sample(metrics, PARKED, tenant="_other") == 2
    assert (sample(metrics, AGE, tenant="_other") or 0.0) >= 60.0  # the oldest of those summed
    assert sample(metrics, AGE, tenant="a") == 0.0
    assert sample(metrics, PACE, tenant="b") is None


def test_a_shops_series_go_with_it() -> None:
    metrics = Metrics()
    v = view(metrics)
    served = by_name(shop("a"), shop("b"))
    v.refresh(served, {})
    assert sample(metrics, PACE, tenant="b") is not None
    del served["b"]
    v.forget_labels()
    v.prune(served)
    assert sample(metrics, PACE, tenant="b") is None
    assert sample(metrics, DOWN, tenant="b") is None
    assert sample(metrics, PACE, tenant="a") is not None


def test_a_shops_row_says_what_it_is_and_how_it_is_doing() -> None:
    v = view(Metrics())
    fence = owning()
    served = by_name(
        shop("zed", fence=fence), shop("old", shown="new", aliases=("old",), retiring=True, fence=fence)
    )
    v.refresh(served, {"zed": SYSTEM_CLOCK.wall() - 12.0}, parked={"zed"})
    rows = v.rows(served)
    assert [row["tenant"] for row in rows] == ["new", "zed"]  # by the name in the tenants file
    new, zed = rows
    assert new["aliases"] == ["old"]
    assert new["routed"] is False
    assert new["parked"] is False
    assert new["oldest_unsynced_s"] == 0.0
    assert zed["routed"] is True
    assert zed["parked"] is True
    assert zed["base_url"] == "http://zed"
    assert zed["budget_per_second"] == 10.0
    assert zed["circuit"] == "closed"
    assert zed["pace_per_second"] == round(served["zed"].pacer.rate, 3)
    assert 12.0 <= float(str(zed["oldest_unsynced_s"])) < 20.0


def test_the_member_is_down_only_when_every_shop_it_serves_has_its_circuit_open() -> None:
    metrics = Metrics()
    v = view(metrics)
    served = by_name(shop("a"), shop("b"))
    assert not v.all_down(served)
    v.circuit_changed("a", State.OPEN)
    assert not v.all_down(served)
    assert sample(metrics, "connector_circuit_open") == 1
    v.circuit_changed("b", State.OPEN)
    assert v.all_down(served)
    assert sample(metrics, "connector_circuit_open") == 2
    v.circuit_changed("b", State.HALF_OPEN)
    assert not v.all_down(served)
    v.forget_circuit("a")
    assert sample(metrics, "connector_circuit_open") == 0
    assert not v.all_down(by_name(shop("a")))


def test_a_shops_health_is_its_circuit_and_pace_now() -> None:
    a = shop("a", budget=10.0)
    health = view(Metrics()).health(a)
    assert health.closed
    assert health.open_since is None
    assert health.full_rate == a.pacer.full_rate > 0
    assert health.pace_factor == 1.0


def test_one_shop_writes_no_per_shop_series_and_has_no_rows() -> None:
    metrics = Metrics()
    v = view(metrics, many=False)
    served = by_name(shop(""))
    v.refresh(served, {})
    v.prune(served)
    assert v.rows(served) == []
    assert sample(metrics, PACE, tenant="") is None
    v.circuit_changed("", State.OPEN)
    assert v.all_down(served)  # the outage still counts
