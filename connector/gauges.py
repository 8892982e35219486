"""The gauges an on-call person watches, refreshed on every turn of the commit loop: the oldest event
not yet synced (per shop too), the keys remembered, the pace and budget share, and the lag of every
owned partition behind its log end, reported to the hooks as snapshots (:mod:`connector.instruments`)."""

from __future__ import annotations

from connector.coalesce import Coalescer
from connector.instruments import Hooks, Lag, Pace, Progress
from connector.ownership import Assignment
from connector.park import Parking
from connector.source import Source
from connector.tenancy import Tenancy


class Gauges:
    """Reports every gauge's figure from the state of the parts it reads (it writes none of them)."""

    def __init__(
        self, hooks: Hooks, assignment: Assignment, coalescer: Coalescer, tenancy: Tenancy, park: Parking
    ) -> None:
        self._hooks = hooks
        self._assignment = assignment
        self._coalescer = coalescer
        self._tenancy = tenancy
        self._park = park

    def refresh(self, now: float, source: Source | None) -> None:
        """Every gauge, now (``now``: the wall clock; ``source``: for the lag, once there is one)."""
        coalescer, tenancy, park = self._coalescer, self._tenancy, self._park
        lags = self._lags(source) if source is not None else ()
        age = self._assignment.oldest_unsynced_age(now)
        self._hooks.progress_sampled(Progress(age, coalescer.remembered, lags))
        if tenancy.many:
            oldest = coalescer.oldest_by_tenant()
            for tenant, stamp in park.oldest().items():
                oldest[tenant] = min(stamp, oldest.get(tenant, stamp))
            tenancy.refresh_metrics(oldest, park.tenants())
        self._hooks.pace_sampled(Pace(tenancy.rate, tenancy.full_rate, tenancy.available_estimate()))

    def _lags(self, source: Source) -> tuple[Lag, ...]:
        """Each owned partition's lag behind its log end (those whose end and commit are known)."""
        lags = []
        for part in self._assignment:
            end = source.log_end(part.tp)
            if end is not None and part.committed is not None:
                lags.append(Lag(part.tp.topic, part.tp.partition, max(0, end - part.committed)))
        return tuple(lags)


__all__ = ["Gauges"]
