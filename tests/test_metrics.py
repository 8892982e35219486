"""The Prometheus implementation of the hooks (``connector/metrics.py``): each payload the core
reports becomes the right series, read back from the registry. One row a fact: the hooks called,
in order, on a fresh :class:`Metrics`, and the samples expected after (None: no such series)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from connector._series import CallSeries, ParkSeries, PartitionSeries, ReadSeries, TenantSeries
from connector.instruments import (
    NO_HOOKS,
    Audited,
    Backlog,
    BudgetWaited,
    CallEnded,
    CallSent,
    DeadLettered,
    DeadLetterFailed,
    Hooks,
    InvalidTenants,
    Lag,
    LookaheadTruncated,
    NoHooks,
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
    TenantFigures,
    TenantsReloaded,
    TenantsState,
    Throttled,
    UnknownField,
)
from connector.metrics import Metrics

Sample = tuple[str, tuple[tuple[str, str], ...]]
Row = tuple[list[tuple[str, Any]], dict[Sample, float | None]]


def s(name: str, **labels: str) -> Sample:
    """A sample by its name and labels."""
    return name, tuple(sorted(labels.items()))


TP = {"topic": "orders", "partition": "2"}
ACME = {"tenant": "acme"}

ROWS: dict[str, Row] = {
    "records read": ([("records_read", RecordsRead(3))], {s("connector_events_consumed_total"): 3}),
    "a record resolved; every resolution has its series from the start": (
        [("record_resolved", Resolved("delivered"))],
        {
            s("connector_events_resolved_total", resolution="delivered"): 1,
            s("connector_events_resolved_total", resolution="parked"): 0,
        },
    ),
    "an unknown field forwarded": (
        [("unknown_field_forwarded", UnknownField("customer.nickname"))],
        {s("connector_unknown_fields_total", field="customer.nickname"): 1},
    ),
    "the backlog": (
        [("backlog_measured", Backlog(5, 600, 7))],
        {
            s("connector_unresolved_events"): 5,
            s("connector_unresolved_bytes"): 600,
            s("connector_held_offsets"): 7,
        },
    ),
    "the registry awaited: one outage, however long": (
        [
            ("registry_wait_changed", RegistryWait(True, began=True)),
            ("registry_wait_changed", RegistryWait(True, began=False)),
        ],
        {s("connector_schema_registry_unavailable"): 1, s("connector_schema_registry_outages_total"): 1},
    ),
    "the registry back": (
        [
            ("registry_wait_changed", RegistryWait(True, began=True)),
            ("registry_wait_changed", RegistryWait(False, began=False)),
        ],
        {s("connector_schema_registry_unavailable"): 0, s("connector_schema_registry_outages_total"): 1},
    ),
    "progress": (
        [("progress_sampled", Progress(12.5, 9, (Lag("orders", 2, 40),)))],
        {
            s("connector_oldest_unsynced_event_age_seconds"): 12.5,
            s("connector_remembered_keys"): 9,
            s("connector_consumer_lag", **TP): 40,
        },
    ),
    "partitions paused": ([("reading_paused", PartitionsPaused(3))], {s("connector_paused_partitions"): 3}),
    "an offset committed": (
        [("offset_committed", OffsetCommitted("orders", 2, 99))],
        {s("connector_committed_offset", **TP): 99},
    ),
    "a partition released: its lag and commit go": (
        [
            ("offset_committed", OffsetCommitted("orders", 2, 99)),
            ("progress_sampled", Progress(0.0, 0, (Lag("orders", 2, 40),))),
            ("partition_released", Released("orders", 2)),
            ("partition_released", Released("orders", 2)),  # twice: nothing left to remove
        ],
        {s("connector_committed_offset", **TP): None, s("connector_consumer_lag", **TP): None},
    ),
    "a lookahead truncated": (
        [("lookahead_overflowed", LookaheadTruncated(4))],
        {s("connector_lookahead_truncated_events_total"): 4},
    ),
    "partitions held": (
        [("held_partitions_counted", PartitionsHeld(2))],
        {s("connector_partitions_held"): 2},
    ),
    "a dead letter written": (
        [("dead_letter_written", DeadLettered("decode"))],
        {s("connector_events_dead_lettered_total", stage="decode"): 1},
    ),
    "a dead letter failed": (
        [("dead_letter_failed", DeadLetterFailed())],
        {s("connector_dead_letter_write_failures_total"): 1},
    ),
    "a call in flight": ([("call_sent", CallSent("acme"))], {s("connector_api_in_flight"): 1}),
    "a call answered": (
        [("call_sent", CallSent("")), ("call_ended", CallEnded("", "2xx", 0.3))],
        {
            s("connector_api_in_flight"): 0,
            s("connector_api_requests_total", status_class="2xx"): 1,
            s("connector_api_request_seconds_count"): 1,
            s("connector_api_request_seconds_sum"): 0.3,
            s("connector_api_request_seconds_bucket", le="0.25"): 0,
            s("connector_api_request_seconds_bucket", le="0.5"): 1,
        },
    ),
    "calls answered, by status class": (
        [("call_ended", CallEnded("", c, 0.1)) for c in ("2xx", "5xx", "2xx")],
        {
            s("connector_api_requests_total", status_class="2xx"): 2,
            s("connector_api_requests_total", status_class="5xx"): 1,
            s("connector_api_request_seconds_count"): 3,
        },
    ),
    "a call cancelled: no answer, no latency": (
        [("call_sent", CallSent("")), ("call_ended", CallEnded("", None, 0.3))],
        {
            s("connector_api_in_flight"): 0,
            s("connector_api_requests_total", status_class="2xx"): None,
            s("connector_api_request_seconds_count"): 0,
        },
    ),
    "a probe answered": (
        [("probe_answered", ProbeAnswered("", "4xx"))],
        {
            s("connector_api_requests_total", status_class="4xx"): 1,
            s("connector_api_request_seconds_count"): 0,
        },
    ),
    "a retry": ([("retry_scheduled", RetryScheduled(""))], {s("connector_api_retries_total"): 1}),
    "a 429": ([("throttled", Throttled(""))], {s("connector_api_rate_limited_total"): 1}),
    "an order read back": (
        [("order_audited", Audited("", "missing")), ("order_audited", Audited("", "in_sync"))],
        {
            s("connector_audit_reads_total", result="missing"): 1,
            s("connector_audit_reads_total", result="in_sync"): 1,
        },
    ),
    "a drift's repair ended": (
        [("repair_ended", RepairEnded("", "older", "delivered"))],
        {s("connector_audit_repairs_total", drift="older", outcome="delivered"): 1},
    ),
    "an order of a resync dealt with": (
        [("order_resynced", Resynced("sent")), ("order_resynced", Resynced("skipped"))],
        {
            s("connector_resync_orders_total", result="sent"): 1,
            s("connector_resync_orders_total", result="skipped"): 1,
        },
    ),
    "a Retry-After too long": (
        [("retry_after_too_long", RetryAfterTooLong("", 600.0))],
        {s("connector_retry_after_exceeded_total"): 1},
    ),
    "circuits open": ([("circuits_counted", OpenCircuits(2))], {s("connector_circuit_open"): 2}),
    "the budget waited for": (
        [("budget_waited", BudgetWaited(0.25)), ("budget_waited", BudgetWaited(0.5))],
        {s("connector_rate_limiter_wait_seconds_total"): 0.75},
    ),
    "a pace cut followed": (
        [("pace_cut", PaceCut("fleet"))],
        {
            s("connector_pace_cuts_total", origin="fleet"): 1,
            s("connector_pace_cuts_total", origin="429"): None,
        },
    ),
    "the pace": (
        [("pace_sampled", Pace(8.0, 10.0, 6.0))],
        {
            s("connector_pace_requests_per_second"): 8,
            s("connector_budget_share_requests_per_second"): 10,
            s("connector_available_rate_estimate_requests_per_second"): 6,
        },
    ),
    "an event parked": ([("event_parked", ParkAppended("acme"))], {s("connector_events_parked_total"): 1}),
    "an event replayed": (
        [("event_replayed", ParkReplayed("acme"))],
        {s("connector_events_replayed_total"): 1},
    ),
    "a park write failed": (
        [("park_write_failed", ParkWriteFailed("acme"))],
        {s("connector_park_write_failures_total"): 1},
    ),
    "a park refused": (
        [("parking_refused", ParkRefused("acme", "orders-2"))],
        {s("connector_park_refused_total"): 1},
    ),
    "parked records lost": (
        [("parked_records_lost", ParkRecordsLost(3))],
        {s("connector_park_records_lost_total"): 3},
    ),
    "parking": (
        [("parking_sampled", ParkingState(2, 11))],
        {s("connector_parked_tenants"): 2, s("connector_parked_unresolved_events"): 11},
    ),
    "a reload refused, then one applied": (
        [
            ("tenants_reloaded", TenantsReloaded("removal", standing=True)),
            ("tenants_reloaded", TenantsReloaded("", standing=False)),
        ],
        {
            s("connector_tenants_reloads_refused_total", reason="removal"): 1,
            s("connector_tenants_reloads_refused_total", reason="load"): None,
            s("connector_tenants_reload_refused"): 0,
        },
    ),
    "a refusal standing": (
        [("tenants_reloaded", TenantsReloaded("", standing=True))],
        {s("connector_tenants_reload_refused"): 1},
    ),
    "invalid tenants": (
        [("invalid_tenants_counted", InvalidTenants(2))],
        {s("connector_tenants_invalid"): 2},
    ),
    "the tenants' figures; no 429s, no series of them": (
        [
            (
                "tenants_sampled",
                TenantsState(
                    (TenantFigures("acme", 4.0, 1, 1, 30.0, 2), TenantFigures("_other", 2.0, 0, 0, 0.0, 0))
                ),
            ),
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 1, 1, 30.0, 1),))),
        ],
        {
            s("connector_tenant_pace_requests_per_second", **ACME): 4,
            s("connector_tenant_circuit_open", **ACME): 1,
            s("connector_tenant_parked", **ACME): 1,
            s("connector_tenant_oldest_unsynced_event_age_seconds", **ACME): 30,
            s("connector_tenant_rate_limited_total", **ACME): 3,
            s("connector_tenant_pace_requests_per_second", tenant="_other"): 2,
            s("connector_tenant_rate_limited_total", tenant="_other"): None,
        },
    ),
    "a tenant's figures sampled again: only what changed is set, each to its new value": (
        [
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 1, 1, 30.0, 0),))),
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 1, 1, 30.0, 0),))),
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 0, 1, 31.0, 0),))),
        ],
        {
            s("connector_tenant_pace_requests_per_second", **ACME): 4,
            s("connector_tenant_circuit_open", **ACME): 0,
            s("connector_tenant_parked", **ACME): 1,
            s("connector_tenant_oldest_unsynced_event_age_seconds", **ACME): 31,
        },
    ),
    "a tenant's label dropped, then back with the figures it had: its series are there again": (
        [
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 1, 1, 30.0, 0),))),
            ("tenants_sampled", TenantsState(dropped=("acme",))),
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 1, 1, 30.0, 0),))),
        ],
        {
            s("connector_tenant_pace_requests_per_second", **ACME): 4,
            s("connector_tenant_circuit_open", **ACME): 1,
            s("connector_tenant_parked", **ACME): 1,
            s("connector_tenant_oldest_unsynced_event_age_seconds", **ACME): 30,
        },
    ),
    "a tenant's label dropped: every series of it goes": (
        [
            ("tenants_sampled", TenantsState((TenantFigures("acme", 4.0, 1, 1, 30.0, 2),))),
            ("tenants_sampled", TenantsState(dropped=("acme", "never-seen"))),
        ],
        {
            s("connector_tenant_pace_requests_per_second", **ACME): None,
            s("connector_tenant_circuit_open", **ACME): None,
            s("connector_tenant_parked", **ACME): None,
            s("connector_tenant_oldest_unsynced_event_age_seconds", **ACME): None,
            s("connector_tenant_rate_limited_total", **ACME): None,
        },
    ),
}


@pytest.mark.parametrize(("calls", "expected"), ROWS.values(), ids=ROWS.keys())
def test_each_payload_becomes_its_series(
    calls: list[tuple[str, Any]], expected: dict[Sample, float | None]
) -> None:
    metrics = Metrics()
    for hook, payload in calls:
        getattr(metrics, hook)(payload)
    got = {(name, labels): metrics.registry.get_sample_value(name, dict(labels)) for name, labels in expected}
    assert got == expected


def _hook_names() -> set[str]:
    return {name for name, _ in inspect.getmembers(Hooks, inspect.isfunction) if not name.startswith("_")}


def test_every_hook_has_a_row() -> None:
    """A hook added to ``connector.instruments`` gets a row here (and its series in ``Metrics``)."""
    called = {hook for calls, _ in ROWS.values() for hook, _ in calls}
    assert _hook_names() == called
    assert len(_hook_names()) > 25


def test_every_series_declared_is_written_by_a_hook() -> None:
    """Each series of each group (``connector/_series.py``) has a row that writes it: a series
    declared and never written would be a dashboard panel that stays empty."""
    registry = CollectorRegistry()
    for group in (ReadSeries, PartitionSeries, CallSeries, ParkSeries, TenantSeries):
        group(registry)
    declared = {family.name for family in registry.collect()}
    written = {name for _, expected in ROWS.values() for name, _ in expected}
    unwritten = {name for name in declared if not any(w == name or w.startswith(name + "_") for w in written)}
    assert len(declared) > 40
    assert unwritten == set()


def test_the_null_hooks_take_every_payload() -> None:
    """``NoHooks`` drops every payload (for a part tested without metrics)."""
    assert isinstance(NO_HOOKS, NoHooks)
    for calls, _ in ROWS.values():
        for hook, payload in calls:
            assert getattr(NO_HOOKS, hook)(payload) is None


def test_payloads_are_frozen() -> None:
    payload = Backlog(1, 2, 3)
    with pytest.raises(AttributeError):
        payload.unresolved = 4  # type: ignore[misc]
