"""The member's health: alive while the loop beats; ready once in the group, unless every shop's API
is down or reading waits for the schema registry; the endpoints that serve it."""

from __future__ import annotations

import httpx

from connector.endpoints import MetricsServer
from connector.health import Health
from connector.metrics import Metrics


class _Shops:
    def __init__(self) -> None:
        self.all_down = False

    def state(self) -> list[dict[str, object]]:
        return [{"tenant": "acme"}]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ready_once_joined_and_not_while_every_api_is_down_or_the_registry_is_awaited() -> None:
    metrics, shops = Metrics(), _Shops()
    health = Health(metrics)
    health.watch(shops)
    assert not health.ready, "not in the group yet"
    health.join()
    assert health.ready
    shops.all_down = True
    assert not health.ready
    assert health.outage
    shops.all_down = False
    health.registry_waiting(True)
    assert not health.ready
    assert metrics.registry.get_sample_value("connector_schema_registry_unavailable") == 1
    health.registry_waiting(True)  # the same outage: counted once
    health.registry_waiting(False)
    assert health.ready
    assert metrics.registry.get_sample_value("connector_schema_registry_outages_total") == 1
    assert metrics.registry.get_sample_value("connector_schema_registry_unavailable") == 0


def test_alive_is_the_time_since_the_last_beat() -> None:
    clock = _Clock()
    health = Health(monotonic=clock)
    clock.now += 42.0
    assert health.age() == 42.0
    health.beat()
    assert health.age() == 0.0


async def test_the_endpoints_answer_from_health_and_metrics() -> None:
    metrics, shops, clock = Metrics(), _Shops(), _Clock()
    health = Health(metrics, monotonic=clock)
    health.watch(shops)
    server = MetricsServer(metrics, health, "127.0.0.1", 0, stale_after_s=60.0)
    async with server, httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{server.port}"
        assert (await client.get(url + "/readyz")).status_code == 503
        health.join()
        ready = await client.get(url + "/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "outage": False, "registry_unavailable": False}
        assert (await client.get(url + "/healthz")).status_code == 200
        clock.now += 61.0
        assert (await client.get(url + "/healthz")).status_code == 503, "the loop stopped beating"
        assert (await client.get(url + "/tenants")).json() == {"tenants": [{"tenant": "acme"}]}
        assert "connector_events_consumed" in (await client.get(url + "/metrics")).text
