"""The connector's Prometheus series, grouped by what they describe (one registry for all).

Declarations only: :class:`connector.metrics.Metrics` builds one group of each on its registry and
writes them from the hooks. Labels are low-cardinality: never an external_id, never an offset.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ReadSeries:
    """The series of reading and resolution."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.consumed = Counter("connector_events_consumed", "Records read from Kafka.", registry=r)
        self.resolved = Counter(
            "connector_events_resolved", "Events resolved, by how.", ["resolution"], registry=r
        )
        self.unknown_fields = Counter(
            "connector_unknown_fields",
            "Order fields the model does not know (forwarded as sent), by field path.",
            ["field"],
            registry=r,
        )
        self.unresolved = Gauge("connector_unresolved_events", "Events read but not resolved.", registry=r)
        self.unresolved_bytes = Gauge(
            "connector_unresolved_bytes", "Bytes of events read but not resolved.", registry=r
        )
        self.held_offsets = Gauge(
            "connector_held_offsets",
            "Offsets kept from the first unresolved one of each partition to the last read.",
            registry=r,
        )
        self.oldest_unsynced = Gauge(
            "connector_oldest_unsynced_event_age_seconds",
            "Age of the oldest event read but not yet resolved (0 when all are synced).",
            registry=r,
        )
        self.remembered_keys = Gauge(
            "connector_remembered_keys",
            "Keys whose last delivered state is remembered (digest and version only).",
            registry=r,
        )
        self.lag = Gauge(
            "connector_consumer_lag",
            "Log end offset minus committed offset.",
            ["topic", "partition"],
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
        self.dead_lettered = Counter(
            "connector_events_dead_lettered",
            "Events written to the dead-letter topic.",
            ["stage"],
            registry=r,
        )
        self.dead_letter_failures = Counter(
            "connector_dead_letter_write_failures", "Failed writes to the dead-letter topic.", registry=r
        )


class PartitionSeries:
    """The series of partitions."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.paused = Gauge(
            "connector_paused_partitions", "Partitions paused by the read-ahead bound.", registry=r
        )
        self.committed = Gauge(
            "connector_committed_offset", "Last committed offset.", ["topic", "partition"], registry=r
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


class CallSeries:
    """The series of calls to the vendor, budget and pace."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "connector_api_requests", "Vendor API calls by outcome.", ["status_class"], registry=r
        )
        self.latency = Histogram(
            "connector_api_request_seconds",
            "Vendor API call latency.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.retries = Counter("connector_api_retries", "Calls retried after a retryable error.", registry=r)
        self.rate_limited = Counter("connector_api_rate_limited", "429 answers from the vendor.", registry=r)
        self.circuit_open = Gauge(
            "connector_circuit_open",
            "Tenants whose outage circuit is open (calls stopped; 1 or 0 with one shop).",
            registry=r,
        )
        self.in_flight = Gauge("connector_api_in_flight", "Vendor API calls in flight.", registry=r)
        self.retry_after_exceeded = Counter(
            "connector_retry_after_exceeded",
            "429s whose Retry-After exceeded delivery.max_retry_after_seconds (treated as an outage).",
            registry=r,
        )
        self.limiter_wait = Counter(
            "connector_rate_limiter_wait_seconds", "Time calls spent waiting for the API budget.", registry=r
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


class ParkSeries:
    """The series of parking (``connector/park/``): tenants that cannot be served, their events on
    the parking topic."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.parked_tenants = Gauge(
            "connector_parked_tenants",
            "Tenants parked on a partition this member owns (their events go to the parking topic).",
            registry=r,
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
        self.park_write_failures = Counter(
            "connector_park_write_failures",
            "Appends to the parking topic that failed (tried again; the partition holds meanwhile).",
            registry=r,
        )


class TenantSeries:
    """The series of many tenants: one series per tenant up to ``tenants.metrics_limit``, the rest
    under ``_other``."""

    def __init__(self, r: CollectorRegistry) -> None:
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
        self.tenant_parked = Gauge(
            "connector_tenant_parked", "1 while the tenant is parked on this member.", ["tenant"], registry=r
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


class AuditSeries:
    """The read-back audits' series (``connector/audit.py``)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.reads = Counter(
            "connector_audit_reads",
            "Orders read back on budget live traffic left unused, by result: in_sync, found (the "
            "vendor keeps no version of ours to compare), missing, older, differs, ahead (a "
            "drift's class), or failed (no answer).",
            ["result"],
            registry=r,
        )
        self.repairs = Counter(
            "connector_audit_repairs",
            "Drifts sent again (audit.repair), by class and outcome: delivered, failed, invalid, "
            "abandoned (the partition was revoked, or a newer change of the order took over).",
            ["drift", "outcome"],
            registry=r,
        )


class ResyncSeries:
    """Resyncs' series (``connector/resync.py``)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.orders = Counter(
            "connector_resync_orders",
            "Orders of a resync dealt with by this member, by result: sent, skipped (the live traffic "
            "sent a newer state, or the shop is not served here) or failed (refused for good: a 4xx).",
            ["result"],
            registry=r,
        )


__all__ = [
    "AuditSeries",
    "CallSeries",
    "ParkSeries",
    "PartitionSeries",
    "ReadSeries",
    "ResyncSeries",
    "TenantSeries",
]
