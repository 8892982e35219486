"""The gauges an on-call person watches, refreshed on every turn of the commit loop: the oldest event
not yet synced (per shop too), the keys remembered, the pace and budget share, and the lag of every
owned partition behind its log end."""

from __future__ import annotations

from connector.coalesce import Coalescer
from connector.metrics import Metrics
from connector.ownership import Assignment
from connector.park import Parking
from connector.source import Source
from connector.tenancy import Tenancy


def refresh(
    metrics: Metrics,
    now: float,
    assignment: Assignment,
    coalescer: Coalescer,
    tenancy: Tenancy,
    park: Parking,
    source: Source | None,
) -> None:
    """Set every gauge from the state of the parts named (``now``: the wall clock)."""
    metrics.oldest_unsynced.set(assignment.oldest_unsynced_age(now))
    metrics.remembered_keys.set(coalescer.remembered)
    if tenancy.many:
        oldest = coalescer.oldest_by_tenant()
        for tenant, stamp in park.oldest().items():
            oldest[tenant] = min(stamp, oldest.get(tenant, stamp))
        tenancy.refresh_metrics(oldest, park.tenants())
    metrics.pace.set(tenancy.rate)
    metrics.budget_share.set(tenancy.full_rate)
    metrics.available_estimate.set(tenancy.available_estimate())
    if source is None:
        return
    for part in assignment:
        end = source.log_end(part.tp)
        if end is not None and part.committed is not None:
            tp = part.tp
            metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - part.committed))
