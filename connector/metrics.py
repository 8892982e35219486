"""Prometheus metrics (served by ``endpoints.py``): the Prometheus implementation of the hooks.

The core reports what happened to the hooks of :mod:`connector.instruments`, with frozen payloads;
:class:`Metrics` turns each payload into its series. This is the one module that imports
``prometheus_client`` (with the endpoints, which serve the registry), and only the composition root
(``app.py``) builds it. Each :class:`Metrics` owns its registry, so several pipelines can run in one
process (the tests do). Labels are low-cardinality: never an external_id, never an offset.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connector.coalesce import Resolution
from connector.instruments import (
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
    Resolved,
    RetryAfterTooLong,
    RetryScheduled,
    TenantsReloaded,
    TenantsState,
    Throttled,
    UnknownField,
)


class Metrics:
    """The connector's metrics, registered in a registry of their own, and the hooks
    (:class:`~connector.instruments.Hooks`) that write them. The series are public attributes, for
    the tests and the simulation to read."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.consumed = Counter("connector_events_consumed", "Records read from Kafka.", registry=r)
        self.resolved = Counter(
            "connector_events_resolved", "Events resolved, by how.", ["resolution"], registry=r
        )
        # Every resolution's series from the start (at 0), its child kept: one is resolved per record.
        self._resolved = {why.value: self.resolved.labels(why.value) for why in Resolution}
        self.dead_lettered = Counter(
            "connector_events_dead_lettered",
            "Events written to the dead-letter topic.",
            ["stage"],
            registry=r,
        )
        self.requests = Counter(
            "connector_api_requests", "Vendor API calls by outcome.", ["status_class"], registry=r
        )
        self.latency = Histogram(
            "connector_api_request_seconds",
            "Vendor API call latency.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.unknown_fields = Counter(
            "connector_unknown_fields",
            "Order fields the model does not know (forwarded as sent), by field path.",
            ["field"],
            registry=r,
        )
        self.retries = Counter("connector_api_retries", "Calls retried after a retryable error.", registry=r)
        self.rate_limited = Counter("connector_api_rate_limited", "429 answers from the vendor.", registry=r)
        self.circuit_open = Gauge(
            "connector_circuit_open",
            "Tenants whose outage circuit is open (calls stopped; 1 or 0 with one shop).",
            registry=r,
        )
        self.dead_letter_failures = Counter(
            "connector_dead_letter_write_failures", "Failed writes to the dead-letter topic.", registry=r
        )
        self.in_flight = Gauge("connector_api_in_flight", "Vendor API calls in flight.", registry=r)
        self.unresolved = Gauge("connector_unresolved_events", "Events read but not resolved.", registry=r)
        self.unresolved_bytes = Gauge(
            "connector_unresolved_bytes", "Bytes of events read but not resolved.", registry=r
        )
        self.held_offsets = Gauge(
            "connector_held_offsets",
            "Offsets kept from the first unresolved one of each partition to the last read.",
            registry=r,
        )
        self.paused = Gauge(
            "connector_paused_partitions", "Partitions paused by the read-ahead bound.", registry=r
        )
        self.oldest_unsynced = Gauge(
            "connector_oldest_unsynced_event_age_seconds",
            "Age of the oldest event read but not yet resolved (0 when all are synced).",
            registry=r,
        )
        self.lag = Gauge(
            "connector_consumer_lag",
            "Log end offset minus committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.limiter_wait = Counter(
            "connector_rate_limiter_wait_seconds", "Time calls spent waiting for the API budget.", registry=r
        )
        self.committed = Gauge(
            "connector_committed_offset", "Last committed offset.", ["topic", "partition"], registry=r
        )
        self.remembered_keys = Gauge(
            "connector_remembered_keys",
            "Keys whose last delivered state is remembered (digest and version only).",
            registry=r,
        )
        self.pace = Gauge(
            "connector_pace_requests_per_second",
            "Requests a second this member may send now (its share of the budget, slowed by 429s).",
            registry=r,
        )
        self.budget_share = Gauge(
            "connector_budget_share_requests_per_second",
            "This member's share of the account's budget (the ticks of the partitions it owns).",
            registry=r,
        )
        self.available_estimate = Gauge(
            "connector_available_rate_estimate_requests_per_second",
            "Requests a second this member's pace came to when the last 429 came, its own or one "
            "another member told it of (its share while no 429 was seen): what others on the same key "
            "leave is below it.",
            registry=r,
        )
        self.pace_cuts = Counter(
            "connector_pace_cuts",
            "Cuts of the pace after a 429: made by this member (origin=429) or followed from another "
            "member through the pace topic (origin=fleet).",
            ["origin"],
            registry=r,
        )
        self.retry_after_exceeded = Counter(
            "connector_retry_after_exceeded",
            "429s whose Retry-After exceeded delivery.max_retry_after_seconds (treated as an outage).",
            registry=r,
        )
        # Many tenants: one series per tenant up to tenants.metrics_limit, the rest under "_other".
        self.tenant_pace = Gauge(
            "connector_tenant_pace_requests_per_second",
            "Requests a second this member may send now for the tenant.",
            ["tenant"],
            registry=r,
        )
        self.tenant_rate_limited = Counter(
            "connector_tenant_rate_limited", "429 answers from the tenant's API.", ["tenant"], registry=r
        )
        self.tenant_circuit_open = Gauge(
            "connector_tenant_circuit_open",
            "Tenants whose outage circuit is open (1 or 0 for a tenant of its own).",
            ["tenant"],
            registry=r,
        )
        self.tenant_oldest_unsynced = Gauge(
            "connector_tenant_oldest_unsynced_event_age_seconds",
            "Age of the tenant's oldest event read and not yet delivered (0: none).",
            ["tenant"],
            registry=r,
        )
        self.tenants_reloads_refused = Counter(
            "connector_tenants_reloads_refused",
            "Reloads of tenants.path not applied, by why: load (a file does not parse, or names a "
            "shop twice) or removal (more than tenants.max_removed_share of the shops, or all).",
            ["reason"],
            registry=r,
        )
        self.tenants_reload_refused = Gauge(
            "connector_tenants_reload_refused",
            "1 while the tenants on disk are not applied (the last reload was refused), else 0.",
            registry=r,
        )
        self.tenants_invalid = Gauge(
            "connector_tenants_invalid",
            "Shops whose definition on disk does not load (kept as they were, or not added).",
            registry=r,
        )
        # Parking (connector/park/): tenants that cannot be served, their events on the parking topic.
        self.parked_tenants = Gauge(
            "connector_parked_tenants",
            "Tenants parked on a partition this member owns (their events go to the parking topic).",
            registry=r,
        )
        self.tenant_parked = Gauge(
            "connector_tenant_parked", "1 while the tenant is parked on this member.", ["tenant"], registry=r
        )
        self.parked_events = Counter(
            "connector_events_parked", "Events appended to the parking topic.", registry=r
        )
        self.replayed_events = Counter(
            "connector_events_replayed", "Parked events read back and handed to delivery.", registry=r
        )
        self.parked_unresolved = Gauge(
            "connector_parked_unresolved_events",
            "Parked events of this member's partitions read back and not yet resolved.",
            registry=r,
        )
        self.park_records_lost = Counter(
            "connector_park_records_lost",
            "Parked records deleted by the parking topic's retention before they were replayed.",
            registry=r,
        )
        self.park_refused = Counter(
            "connector_park_refused",
            "Parks refused on a partition because its commit metadata would not fit.",
            registry=r,
        )
        self.lookahead_truncated = Counter(
            "connector_lookahead_truncated_events",
            "Events not noted by a lookahead past its bound (kafka.remember_keys orders).",
            registry=r,
        )
        self.partitions_held = Gauge(
            "connector_partitions_held",
            "Owned partitions neither read, sent for nor committed: their last commit's metadata "
            "cannot be used (written by a newer release, or damaged).",
            registry=r,
        )
        self.park_write_failures = Counter(
            "connector_park_write_failures",
            "Appends to the parking topic that failed (tried again; the partition holds meanwhile).",
            registry=r,
        )
        self.registry_unavailable = Gauge(
            "connector_schema_registry_unavailable",
            "1 while reading waits for the schema registry (unreachable, or refusing the credentials).",
            registry=r,
        )
        self.registry_outages = Counter(
            "connector_schema_registry_outages",
            "Times reading began to wait for the schema registry.",
            registry=r,
        )
        self.port: int | None = None

    # -- reading and resolution ------------------------------------------------------------------
    def records_read(self, event: RecordsRead) -> None:
        self.consumed.inc(event.records)

    def record_resolved(self, event: Resolved) -> None:
        child = self._resolved.get(event.resolution)
        if child is None:
            child = self._resolved[event.resolution] = self.resolved.labels(event.resolution)
        child.inc()

    def unknown_field_forwarded(self, event: UnknownField) -> None:
        self.unknown_fields.labels(event.field).inc()

    def backlog_measured(self, event: Backlog) -> None:
        self.unresolved.set(event.unresolved)
        self.unresolved_bytes.set(event.unresolved_bytes)
        self.held_offsets.set(event.held_offsets)

    def registry_wait_changed(self, event: RegistryWait) -> None:
        if event.began:
            self.registry_outages.inc()
        self.registry_unavailable.set(1 if event.waiting else 0)

    def progress_sampled(self, event: Progress) -> None:
        self.oldest_unsynced.set(event.oldest_unsynced_age)
        self.remembered_keys.set(event.remembered_keys)
        for lag in event.lags:
            self.lag.labels(lag.topic, str(lag.partition)).set(lag.lag)

    # -- partitions ------------------------------------------------------------------------------
    def reading_paused(self, event: PartitionsPaused) -> None:
        self.paused.set(event.partitions)

    def offset_committed(self, event: OffsetCommitted) -> None:
        self.committed.labels(event.topic, str(event.partition)).set(event.offset)

    def partition_released(self, event: Released) -> None:
        for gauge in (self.lag, self.committed):
            with contextlib.suppress(KeyError):
                gauge.remove(event.topic, str(event.partition))

    def lookahead_overflowed(self, event: LookaheadTruncated) -> None:
        self.lookahead_truncated.inc(event.events)

    def held_partitions_counted(self, event: PartitionsHeld) -> None:
        self.partitions_held.set(event.partitions)

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letter_written(self, event: DeadLettered) -> None:
        self.dead_lettered.labels(event.stage).inc()

    def dead_letter_failed(self, event: DeadLetterFailed) -> None:
        self.dead_letter_failures.inc()

    # -- calls to the vendor ---------------------------------------------------------------------
    def call_sent(self, event: CallSent) -> None:
        self.in_flight.inc()

    def call_ended(self, event: CallEnded) -> None:
        self.in_flight.dec()
        if event.status_class is not None:
            self.latency.observe(event.seconds)
            self.requests.labels(event.status_class).inc()

    def probe_answered(self, event: ProbeAnswered) -> None:
        self.requests.labels(event.status_class).inc()

    def retry_scheduled(self, event: RetryScheduled) -> None:
        self.retries.inc()

    def throttled(self, event: Throttled) -> None:
        self.rate_limited.inc()

    def retry_after_too_long(self, event: RetryAfterTooLong) -> None:
        self.retry_after_exceeded.inc()

    def circuits_counted(self, event: OpenCircuits) -> None:
        self.circuit_open.set(event.count)

    # -- budget and pace -------------------------------------------------------------------------
    def budget_waited(self, event: BudgetWaited) -> None:
        self.limiter_wait.inc(event.seconds)

    def pace_cut(self, event: PaceCut) -> None:
        self.pace_cuts.labels(event.origin).inc()

    def pace_sampled(self, event: Pace) -> None:
        self.pace.set(event.rate)
        self.budget_share.set(event.share)
        self.available_estimate.set(event.available_estimate)

    # -- parking ---------------------------------------------------------------------------------
    def event_parked(self, event: ParkAppended) -> None:
        self.parked_events.inc()

    def event_replayed(self, event: ParkReplayed) -> None:
        self.replayed_events.inc()

    def park_write_failed(self, event: ParkWriteFailed) -> None:
        self.park_write_failures.inc()

    def parking_refused(self, event: ParkRefused) -> None:
        self.park_refused.inc()

    def parked_records_lost(self, event: ParkRecordsLost) -> None:
        self.park_records_lost.inc(event.records)

    def parking_sampled(self, event: ParkingState) -> None:
        self.parked_tenants.set(event.tenants)
        self.parked_unresolved.set(event.unresolved)

    # -- tenants ---------------------------------------------------------------------------------
    def tenants_reloaded(self, event: TenantsReloaded) -> None:
        if event.refused_for:
            self.tenants_reloads_refused.labels(event.refused_for).inc()
        self.tenants_reload_refused.set(1 if event.standing else 0)

    def invalid_tenants_counted(self, event: InvalidTenants) -> None:
        self.tenants_invalid.set(event.count)

    def tenants_sampled(self, event: TenantsState) -> None:
        for f in event.figures:
            if f.throttled > 0:
                self.tenant_rate_limited.labels(f.label).inc(f.throttled)
            self.tenant_pace.labels(f.label).set(f.pace)
            self.tenant_circuit_open.labels(f.label).set(f.circuits_open)
            self.tenant_parked.labels(f.label).set(f.parked)
            self.tenant_oldest_unsynced.labels(f.label).set(f.oldest_unsynced_age)
        per_tenant = (
            self.tenant_pace,
            self.tenant_circuit_open,
            self.tenant_parked,
            self.tenant_oldest_unsynced,
            self.tenant_rate_limited,
        )
        for label in event.dropped:
            for metric in per_tenant:
                with contextlib.suppress(KeyError):
                    metric.remove(label)


__all__ = ["Metrics"]
