"""The gauges an on-call person watches, set from the parts they read on each turn of the commit loop:
the oldest event not yet synced (per shop too), the keys remembered, the pace and budget share, and
every owned partition's lag behind its log end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from random import Random

from connector.clock import SYSTEM_CLOCK
from connector.coalesce import Coalescer
from connector.config import Settings, SinkSettings, TenantsSettings
from connector.decode import decode
from connector.fence import Fence
from connector.gauges import Gauges
from connector.metrics import Metrics
from connector.ownership import Assignment
from connector.pacing import Pacer
from connector.park import Parking
from connector.structs import OrderChange, Record, TopicPartition
from connector.tenancy import Tenancy
from tests.fakes import Member, NoLinger, NoWork, Vendor

TP = TopicPartition("orders", 0)


@asynccontextmanager
async def gauges(settings: Settings) -> AsyncIterator[tuple[Gauges, Metrics, Assignment, Coalescer, Tenancy]]:
    metrics, assignment, coalescer = Metrics(), Assignment(), Coalescer()
    fence = Fence(SYSTEM_CLOCK, lease_seconds=10.0, settle_seconds=10.0)

    def vendor(settings: SinkSettings, pacer: Pacer) -> Vendor:
        return Vendor()

    tenancy = Tenancy(settings, vendor, metrics, clock=SYSTEM_CLOCK, rng=Random(1), fence=fence)
    tenancy.connect(NoWork(), NoLinger())
    park = Parking(settings, None, assignment, coalescer, tenancy, metrics, clock=SYSTEM_CLOCK, rng=Random(1))
    async with tenancy:
        yield Gauges(metrics, assignment, coalescer, tenancy, park), metrics, assignment, coalescer, tenancy


def change(key: str, offset: int, produced: float, shop: str = "") -> OrderChange:
    value = json.dumps({"external_id": key, "updated_at": "2026-01-01T00:00:00Z"}).encode()
    record = Record(TP.topic, TP.partition, offset, key.encode(), value, (), int(produced * 1000))
    found = decode(record, validate=False)
    found.tenant = shop
    return found


async def test_every_gauge_is_set_from_the_parts_it_reads() -> None:
    async with gauges(Settings()) as (g, metrics, assignment, coalescer, tenancy):
        part = assignment.add(TP)
        part.offsets.start_at(40)
        part.offsets.track(40, timestamp=1_000.0)
        part.committed = 40
        coalescer.remember(change("A1", 3, 900.0))
        g.refresh(1_030.0, None)
        sample = metrics.registry.get_sample_value
        assert sample("connector_oldest_unsynced_event_age_seconds") == 30.0
        assert sample("connector_remembered_keys") == 1
        assert sample("connector_pace_requests_per_second") == tenancy.rate
        assert sample("connector_budget_share_requests_per_second") == tenancy.full_rate
        assert sample("connector_consumer_lag", {"topic": "orders", "partition": "0"}) is None, (
            "no consumer yet"
        )
        g.refresh(1_030.0, Member(ends={TP: 100}))
        assert sample("connector_consumer_lag", {"topic": "orders", "partition": "0"}) == 60


async def test_with_many_shops_each_shops_oldest_unsynced_event_is_its_own(tmp_path: Path) -> None:
    for shop in ("acme", "bolt"):
        (tmp_path / f"{shop}.toml").write_text(f'base_url = "http://{shop}"\napi_key = "{shop}-key"\n')
    settings = Settings(tenants=TenantsSettings(path=str(tmp_path)))
    now = SYSTEM_CLOCK.wall()
    async with gauges(settings) as (g, metrics, _, coalescer, _):
        coalescer.offer(change("A1", 0, now - 50.0, "acme"))
        coalescer.offer(change("A2", 1, now - 20.0, "acme"))
        g.refresh(now, None)
        oldest = "connector_tenant_oldest_unsynced_event_age_seconds"
        acme = metrics.registry.get_sample_value(oldest, {"tenant": "acme"})
        assert acme is not None
        assert 49.0 < acme < 60.0
        assert metrics.registry.get_sample_value(oldest, {"tenant": "bolt"}) == 0.0
