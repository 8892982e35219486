"""Prometheus metrics (served by ``endpoints.py``): the Prometheus implementation of the hooks.

The core reports what happened to the hooks of :mod:`connector.instruments`, with frozen payloads;
:class:`Metrics` turns each payload into its series. This is the one module that imports
``prometheus_client`` (with the endpoints, which serve the registry), and only the composition root
(``app.py``) builds it. Each :class:`Metrics` owns its registry, so several pipelines can run in one
process (the tests do). Labels are low-cardinality: never an external_id, never an offset.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from connector._series import (
    AuditSeries,
    CallSeries,
    ParkSeries,
    PartitionSeries,
    ReadSeries,
    ResyncSeries,
    TenantSeries,
)
from connector.coalesce import Resolution
from connector.instruments import (
    Audited,
    Backlog,
    BudgetWaited,
    CallEnded,
    CallSent,
    DeadLettered,
    DeadLetterFailed,
    InvalidTenants,
    LookaheadTruncated,
    OffsetCommitted,
    OpenCircuits,
    Pace,
    PaceCut,
    ParkAppended,
    ParkingState,
    ParkRecordsLost,
    ParkRefused,
    ParkReplayed,
    ParkWriteFailed,
    PartitionsHeld,
    PartitionsPaused,
    ProbeAnswered,
    Progress,
    RecordsRead,
    RegistryWait,
    Released,
    RepairEnded,
    Resolved,
    Resynced,
    RetryAfterTooLong,
    RetryScheduled,
    TenantsReloaded,
    TenantsState,
    Throttled,
    UnknownField,
)

_TenantGauges = tuple[Gauge, Gauge, Gauge, Gauge]
"""A shop label's pace, circuit-open, parked and oldest-unsynced series."""
_TenantFigures = tuple[float, int, int, float]
"""The figures those series were last set to, in that order."""


class Metrics:
    """The connector's metrics, registered in a registry of their own, and the hooks
    (:class:`~connector.instruments.Hooks`) that write them. The series are public attributes of
    their groups (``read``, ``partitions``, ``calls``, ``parking``, ``tenants``, ``audit``,
    ``resync``; declared in ``_series.py``), for the tests to read."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.read = ReadSeries(r)
        self.partitions = PartitionSeries(r)
        self.calls = CallSeries(r)
        self.parking = ParkSeries(r)
        self.tenants = TenantSeries(r)
        self.audit = AuditSeries(r)
        self.resync = ResyncSeries(r)
        # Every resolution's series from the start (at 0), its child kept: one is resolved per record.
        self._resolved = {why.value: self.read.resolved.labels(why.value) for why in Resolution}
        self._requests: dict[str, Counter] = {}  # by status class: one a call
        # Each shop label's series and the figures they were last set to (see tenants_sampled).
        self._tenant_shown: dict[str, tuple[_TenantGauges, _TenantFigures]] = {}
        self.port: int | None = None

    # -- read-back audits ------------------------------------------------------------------------
    def order_audited(self, event: Audited) -> None:
        self.audit.reads.labels(event.result).inc()

    def repair_ended(self, event: RepairEnded) -> None:
        self.audit.repairs.labels(event.drift, event.outcome).inc()

    # -- resyncs -----------------------------------------------------------------------------------
    def order_resynced(self, event: Resynced) -> None:
        self.resync.orders.labels(event.result).inc()

    # -- reading and resolution ------------------------------------------------------------------
    def records_read(self, event: RecordsRead) -> None:
        self.read.consumed.inc(event.records)

    def record_resolved(self, event: Resolved) -> None:
        _child(self._resolved, self.read.resolved, event.resolution).inc()

    def unknown_field_forwarded(self, event: UnknownField) -> None:
        self.read.unknown_fields.labels(event.field).inc()

    def backlog_measured(self, event: Backlog) -> None:
        self.read.unresolved.set(event.unresolved)
        self.read.unresolved_bytes.set(event.unresolved_bytes)
        self.read.held_offsets.set(event.held_offsets)

    def registry_wait_changed(self, event: RegistryWait) -> None:
        if event.began:
            self.read.registry_outages.inc()
        self.read.registry_unavailable.set(1 if event.waiting else 0)

    def progress_sampled(self, event: Progress) -> None:
        self.read.oldest_unsynced.set(event.oldest_unsynced_age)
        self.read.remembered_keys.set(event.remembered_keys)
        for lag in event.lags:
            self.read.lag.labels(lag.topic, str(lag.partition)).set(lag.lag)

    # -- partitions ------------------------------------------------------------------------------
    def reading_paused(self, event: PartitionsPaused) -> None:
        self.partitions.paused.set(event.partitions)

    def offset_committed(self, event: OffsetCommitted) -> None:
        self.partitions.committed.labels(event.topic, str(event.partition)).set(event.offset)

    def partition_released(self, event: Released) -> None:
        for gauge in (self.read.lag, self.partitions.committed):
            with contextlib.suppress(KeyError):
                gauge.remove(event.topic, str(event.partition))

    def lookahead_overflowed(self, event: LookaheadTruncated) -> None:
        self.partitions.lookahead_truncated.inc(event.events)

    def held_partitions_counted(self, event: PartitionsHeld) -> None:
        self.partitions.partitions_held.set(event.partitions)

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letter_written(self, event: DeadLettered) -> None:
        self.read.dead_lettered.labels(event.stage).inc()

    def dead_letter_failed(self, event: DeadLetterFailed) -> None:
        self.read.dead_letter_failures.inc()

    # -- calls to the vendor ---------------------------------------------------------------------
    def call_sent(self, event: CallSent) -> None:
        self.calls.in_flight.inc()

    def call_ended(self, event: CallEnded) -> None:
        self.calls.in_flight.dec()
        if event.status_class is not None:
            self.calls.latency.observe(event.seconds)
            _child(self._requests, self.calls.requests, event.status_class).inc()

    def probe_answered(self, event: ProbeAnswered) -> None:
        _child(self._requests, self.calls.requests, event.status_class).inc()

    def retry_scheduled(self, event: RetryScheduled) -> None:
        self.calls.retries.inc()

    def throttled(self, event: Throttled) -> None:
        self.calls.rate_limited.inc()

    def retry_after_too_long(self, event: RetryAfterTooLong) -> None:
        self.calls.retry_after_exceeded.inc()

    def circuits_counted(self, event: OpenCircuits) -> None:
        self.calls.circuit_open.set(event.count)

    # -- budget and pace -------------------------------------------------------------------------
    def budget_waited(self, event: BudgetWaited) -> None:
        self.calls.limiter_wait.inc(event.seconds)

    def pace_cut(self, event: PaceCut) -> None:
        self.calls.pace_cuts.labels(event.origin).inc()

    def pace_sampled(self, event: Pace) -> None:
        self.calls.pace.set(event.rate)
        self.calls.budget_share.set(event.share)
        self.calls.available_estimate.set(event.available_estimate)

    # -- parking ---------------------------------------------------------------------------------
    def event_parked(self, event: ParkAppended) -> None:
        self.parking.parked_events.inc()

    def event_replayed(self, event: ParkReplayed) -> None:
        self.parking.replayed_events.inc()

    def park_write_failed(self, event: ParkWriteFailed) -> None:
        self.parking.park_write_failures.inc()

    def parking_refused(self, event: ParkRefused) -> None:
        self.parking.park_refused.inc()

    def parked_records_lost(self, event: ParkRecordsLost) -> None:
        self.parking.park_records_lost.inc(event.records)

    def parking_sampled(self, event: ParkingState) -> None:
        self.parking.parked_tenants.set(event.tenants)
        self.parking.parked_unresolved.set(event.unresolved)

    # -- tenants ---------------------------------------------------------------------------------
    def tenants_reloaded(self, event: TenantsReloaded) -> None:
        if event.refused_for:
            self.tenants.tenants_reloads_refused.labels(event.refused_for).inc()
        self.tenants.tenants_reload_refused.set(1 if event.standing else 0)

    def invalid_tenants_counted(self, event: InvalidTenants) -> None:
        self.tenants.tenants_invalid.set(event.count)

    def tenants_sampled(self, event: TenantsState) -> None:
        """Each label's gauges, set only where a figure changed since the last sample (every second:
        with a thousand shops, a series looked up and set four times each took 5 ms of the loop, most
        of them for idle shops whose figures stay as they were)."""
        tenants = self.tenants
        for f in event.figures:
            if f.throttled > 0:
                tenants.tenant_rate_limited.labels(f.label).inc(f.throttled)
            shown = (f.pace, f.circuits_open, f.parked, f.oldest_unsynced_age)
            known = self._tenant_shown.get(f.label)
            if known is None:
                series = (
                    tenants.tenant_pace.labels(f.label),
                    tenants.tenant_circuit_open.labels(f.label),
                    tenants.tenant_parked.labels(f.label),
                    tenants.tenant_oldest_unsynced.labels(f.label),
                )
                for gauge, value in zip(series, shown, strict=True):
                    gauge.set(value)
            else:
                series, last = known
                if last == shown:
                    continue  # an idle shop, mostly
                for gauge, value, before in zip(series, shown, last, strict=True):
                    if value != before:
                        gauge.set(value)
            self._tenant_shown[f.label] = (series, shown)
        per_tenant = (
            tenants.tenant_pace,
            tenants.tenant_circuit_open,
            tenants.tenant_parked,
            tenants.tenant_oldest_unsynced,
            tenants.tenant_rate_limited,
        )
        for label in event.dropped:
            self._tenant_shown.pop(label, None)
            for metric in per_tenant:
                with contextlib.suppress(KeyError):
                    metric.remove(label)


def _child(children: dict[str, Counter], series: Counter, label: str) -> Counter:
    """``series``' child for ``label``, looked up once and kept in ``children`` (a lookup takes a
    lock and builds the label tuple: about 1.5 µs, for series written once a record or a call)."""
    child = children.get(label)
    if child is None:
        child = children[label] = series.labels(label)
    return child


__all__ = ["Metrics"]
