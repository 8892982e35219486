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


class Gauges:
    """Sets every gauge from the state of the parts it reads (it writes none of them)."""

    def __init__(
        self, metrics: Metrics, assignment: Assignment, coalescer: Coalescer, tenancy: Tenancy, park: Parking
    ) -> None:
        self._metrics = metrics
        self._assignment = assignment
        self._coalescer = coalescer
        self._tenancy = tenancy
        self._park = park

    def refresh(self, now: float, source: Source | None) -> None:
        """Every gauge, now (``now``: the wall clock; ``source``: for the lag, once there is one)."""
        metrics, coalescer, tenancy, park = self._metrics, self._coalescer, self._tenancy, self._park
        metrics.oldest_unsynced.set(self._assignment.oldest_unsynced_age(now))
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
        for part in self._assignment:
            end = source.log_end(part.tp)
            if end is not None and part.committed is not None:
                tp = part.tp
                metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - part.committed))


__all__ = ["Gauges"]
