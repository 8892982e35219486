"""What the core reports as it works: the hooks it calls, and the payload each call carries.

The core never writes a metric. It tells a hook what happened, with a frozen payload named after the
fact (a record resolved, a vendor call ended, an event parked), and knows nothing of what the hook
does with it: :class:`~connector.metrics.Metrics` turns the payloads into Prometheus series (the only
module with ``prometheus_client``), :class:`NoHooks` drops them (tests). Facts read from state once
per turn of the commit loop (the oldest unsynced event, the pace, the per-shop figures) come as one
snapshot payload each. Health is not reported here: :class:`~connector.health.Health` owns it.

The hooks are grouped by the part that reports them (reading, partitions, dead letters, vendor calls,
pace, parking, tenants); :class:`Hooks` is all of them, which a part that hands hooks on takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# -- reading and resolution ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordsRead:
    """A fetched batch was handled: ``records`` records read from Kafka."""

    records: int


@dataclass(frozen=True, slots=True)
class Resolved:
    """A record was resolved (``resolution``: a :class:`~connector.coalesce.Resolution` value)."""

    resolution: str


@dataclass(frozen=True, slots=True)
class UnknownField:
    """An order field the vendor model does not know was forwarded as sent (``field``: its path)."""

    field: str


@dataclass(frozen=True, slots=True)
class Backlog:
    """What is read and not resolved, measured after a batch (the read-ahead bounds' figures)."""

    unresolved: int
    unresolved_bytes: int
    held_offsets: int


@dataclass(frozen=True, slots=True)
class RegistryWait:
    """Reading began (``began``) or goes on (``waiting``) waiting for the schema registry, or stopped."""

    waiting: bool
    began: bool


@dataclass(frozen=True, slots=True)
class Lag:
    """An owned partition's log end offset minus its committed offset."""

    topic: str
    partition: int
    lag: int


@dataclass(frozen=True, slots=True)
class Progress:
    """How far behind the member is, read on a turn of the commit loop: the age of the oldest event
    read and not resolved (0: none), the keys remembered, and the lag of each owned partition whose
    log end and committed offset are known."""

    oldest_unsynced_age: float
    remembered_keys: int
    lags: tuple[Lag, ...] = ()


class ReadHooks(Protocol):
    """What reading and resolving records reports."""

    def records_read(self, event: RecordsRead) -> None: ...
    def record_resolved(self, event: Resolved) -> None: ...
    def unknown_field_forwarded(self, event: UnknownField) -> None: ...
    def backlog_measured(self, event: Backlog) -> None: ...
    def registry_wait_changed(self, event: RegistryWait) -> None: ...
    def progress_sampled(self, event: Progress) -> None: ...


# -- partitions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionsPaused:
    """The owned partitions not read now (paused by a bound, a warm-up or a hold), after a change."""

    partitions: int


@dataclass(frozen=True, slots=True)
class OffsetCommitted:
    """``offset`` was committed for a partition."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Released:
    """A partition is no longer owned (revoked): its figures are gone."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class LookaheadTruncated:
    """A warm-up's lookahead passed its bound: ``events`` events were not noted."""

    events: int


@dataclass(frozen=True, slots=True)
class PartitionsHeld:
    """The owned partitions held (their last commit unreadable to this release), after a change."""

    partitions: int


class PartitionHooks(Protocol):
    """What owning, pausing and committing partitions reports."""

    def reading_paused(self, event: PartitionsPaused) -> None: ...
    def offset_committed(self, event: OffsetCommitted) -> None: ...
    def partition_released(self, event: Released) -> None: ...
    def lookahead_overflowed(self, event: LookaheadTruncated) -> None: ...
    def held_partitions_counted(self, event: PartitionsHeld) -> None: ...


# -- dead letters --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A record was written to the dead-letter topic (``stage``: where it failed)."""

    stage: str


@dataclass(frozen=True, slots=True)
class DeadLetterFailed:
    """A write to the dead-letter topic failed (it is tried again)."""


class DeadLetterHooks(Protocol):
    """What the dead-letter topic's writes report."""

    def dead_letter_written(self, event: DeadLettered) -> None: ...
    def dead_letter_failed(self, event: DeadLetterFailed) -> None: ...


# -- calls to the vendor -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallSent:
    """A call to the vendor's API went out (``tenant``: the shop, "" with one)."""

    tenant: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call sent ended after ``seconds``: answered (``status_class``, see
    :func:`~connector.deliver.status_class`), or cancelled (None: its partition was revoked)."""

    tenant: str
    status_class: str | None
    seconds: float


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """A read sent to ask whether the key works at all (the circuit opened on a 403) was answered."""

    tenant: str
    status_class: str


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A call that failed with a retryable error is tried again later."""

    tenant: str


@dataclass(frozen=True, slots=True)
class Throttled:
    """The vendor answered 429."""

    tenant: str


@dataclass(frozen=True, slots=True)
class RetryAfterTooLong:
    """A 429's Retry-After (``seconds``) exceeded ``delivery.max_retry_after_seconds``: an outage."""

    tenant: str
    seconds: float


@dataclass(frozen=True, slots=True)
class OpenCircuits:
    """The shops whose outage circuit is open, after a change (1 or 0 with one shop)."""

    count: int


class CallHooks(Protocol):
    """What the calls to the vendor and their outage circuit report."""

    def call_sent(self, event: CallSent) -> None: ...
    def call_ended(self, event: CallEnded) -> None: ...
    def probe_answered(self, event: ProbeAnswered) -> None: ...
    def retry_scheduled(self, event: RetryScheduled) -> None: ...
    def throttled(self, event: Throttled) -> None: ...
    def retry_after_too_long(self, event: RetryAfterTooLong) -> None: ...
    def circuits_counted(self, event: OpenCircuits) -> None: ...


# -- budget and pace -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetWaited:
    """A call waited ``seconds`` for the API budget."""

    seconds: float


@dataclass(frozen=True, slots=True)
class PaceCut:
    """The pace was cut after a 429: by this member (``origin`` "429") or following another member
    through the pace topic ("fleet")."""

    origin: str


@dataclass(frozen=True, slots=True)
class Pace:
    """The member's pace, read on a turn of the commit loop (requests a second, over every shop):
    what it may send now, its share of the budgets, and what the vendors are estimated to leave it."""

    rate: float
    share: float
    available_estimate: float


class PaceHooks(Protocol):
    """What the budget and the pace report."""

    def budget_waited(self, event: BudgetWaited) -> None: ...
    def pace_cut(self, event: PaceCut) -> None: ...
    def pace_sampled(self, event: Pace) -> None: ...


# -- parking -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParkAppended:
    """An event of ``tenant`` was appended to the parking topic."""

    tenant: str


@dataclass(frozen=True, slots=True)
class ParkReplayed:
    """A parked event of ``tenant`` was read back and handed to delivery."""

    tenant: str


@dataclass(frozen=True, slots=True)
class ParkWriteFailed:
    """An append of an event of ``tenant`` to the parking topic failed (tried again, or, too large
    for the topic, dead-lettered)."""

    tenant: str


@dataclass(frozen=True, slots=True)
class ParkRefused:
    """``tenant`` was not parked on ``partition``: its commit metadata would not fit."""

    tenant: str
    partition: str


@dataclass(frozen=True, slots=True)
class ParkRecordsLost:
    """``records`` parked records were deleted by the parking topic's retention before a replay."""

    records: int


@dataclass(frozen=True, slots=True)
class ParkingState:
    """The parking of this member's partitions after a replay round: the tenants parked, and the
    parked events read back and not yet resolved."""

    tenants: int
    unresolved: int


class ParkHooks(Protocol):
    """What parking and replaying report."""

    def event_parked(self, event: ParkAppended) -> None: ...
    def event_replayed(self, event: ParkReplayed) -> None: ...
    def park_write_failed(self, event: ParkWriteFailed) -> None: ...
    def parking_refused(self, event: ParkRefused) -> None: ...
    def parked_records_lost(self, event: ParkRecordsLost) -> None: ...
    def parking_sampled(self, event: ParkingState) -> None: ...


# -- tenants -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantsReloaded:
    """``tenants.path`` was read again: this reload was refused (``refused_for``: "load" or
    "removal"; "": not refused), and whether the tenants on disk are not applied (``standing``)."""

    refused_for: str
    standing: bool


@dataclass(frozen=True, slots=True)
class InvalidTenants:
    """The shops whose definition on disk does not load, after a read of ``tenants.path``."""

    count: int


@dataclass(frozen=True, slots=True)
class TenantFigures:
    """One shop label's figures (a shop past ``tenants.metrics_limit`` is summed under ``_other``):
    its pace, circuits open, shops parked, the age of its oldest event not delivered, and the 429s
    seen since the last report."""

    label: str
    pace: float
    circuits_open: int
    parked: int
    oldest_unsynced_age: float
    throttled: int


@dataclass(frozen=True, slots=True)
class TenantsState:
    """The shops' figures, read on a turn of the commit loop (``figures``), and the labels that no
    shop has any more (``dropped``: a shop removed, renamed or now under ``_other``)."""

    figures: tuple[TenantFigures, ...] = ()
    dropped: tuple[str, ...] = ()


class TenantHooks(Protocol):
    """What serving many tenants reports."""

    def tenants_reloaded(self, event: TenantsReloaded) -> None: ...
    def invalid_tenants_counted(self, event: InvalidTenants) -> None: ...
    def tenants_sampled(self, event: TenantsState) -> None: ...


# -- read-back audits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audited:
    """An order was read back: ``result`` is ``in_sync``, a drift's class (``missing``, ``older``,
    ``differs``, ``ahead``), or ``failed`` (the read did not answer)."""

    tenant: str
    result: str


@dataclass(frozen=True, slots=True)
class RepairEnded:
    """A drift's repair ended: ``outcome`` is ``delivered``, ``failed``, ``invalid`` or ``abandoned``."""

    tenant: str
    drift: str
    outcome: str


class AuditHooks(Protocol):
    """What the read-back audits report."""

    def order_audited(self, event: Audited) -> None: ...
    def repair_ended(self, event: RepairEnded) -> None: ...


@dataclass(frozen=True, slots=True)
class Resynced:
    """An order of a resync was dealt with: ``result`` is ``sent``, ``skipped`` (the live traffic
    sent a newer state, or its shop is not served here) or ``failed``."""

    result: str


class ResyncHooks(Protocol):
    """What resyncs report."""

    def order_resynced(self, event: Resynced) -> None: ...


class Hooks(
    ReadHooks,
    PartitionHooks,
    DeadLetterHooks,
    CallHooks,
    PaceHooks,
    ParkHooks,
    TenantHooks,
    AuditHooks,
    ResyncHooks,
    Protocol,
):
    """Every hook: what a part that hands hooks on to the parts it builds takes."""


class NoHooks:
    """Hooks that drop every payload (a part tested without metrics)."""

    def order_audited(self, event: Audited) -> None:
        pass

    def order_resynced(self, event: Resynced) -> None:
        pass

    def repair_ended(self, event: RepairEnded) -> None:
        pass

    def records_read(self, event: RecordsRead) -> None:
        pass

    def record_resolved(self, event: Resolved) -> None:
        pass

    def unknown_field_forwarded(self, event: UnknownField) -> None:
        pass

    def backlog_measured(self, event: Backlog) -> None:
        pass

    def registry_wait_changed(self, event: RegistryWait) -> None:
        pass

    def progress_sampled(self, event: Progress) -> None:
        pass

    def reading_paused(self, event: PartitionsPaused) -> None:
        pass

    def offset_committed(self, event: OffsetCommitted) -> None:
        pass

    def partition_released(self, event: Released) -> None:
        pass

    def lookahead_overflowed(self, event: LookaheadTruncated) -> None:
        pass

    def held_partitions_counted(self, event: PartitionsHeld) -> None:
        pass

    def dead_letter_written(self, event: DeadLettered) -> None:
        pass

    def dead_letter_failed(self, event: DeadLetterFailed) -> None:
        pass

    def call_sent(self, event: CallSent) -> None:
        pass

    def call_ended(self, event: CallEnded) -> None:
        pass

    def probe_answered(self, event: ProbeAnswered) -> None:
        pass

    def retry_scheduled(self, event: RetryScheduled) -> None:
        pass

    def throttled(self, event: Throttled) -> None:
        pass

    def retry_after_too_long(self, event: RetryAfterTooLong) -> None:
        pass

    def circuits_counted(self, event: OpenCircuits) -> None:
        pass

    def budget_waited(self, event: BudgetWaited) -> None:
        pass

    def pace_cut(self, event: PaceCut) -> None:
        pass

    def pace_sampled(self, event: Pace) -> None:
        pass

    def event_parked(self, event: ParkAppended) -> None:
        pass

    def event_replayed(self, event: ParkReplayed) -> None:
        pass

    def park_write_failed(self, event: ParkWriteFailed) -> None:
        pass

    def parking_refused(self, event: ParkRefused) -> None:
        pass

    def parked_records_lost(self, event: ParkRecordsLost) -> None:
        pass

    def parking_sampled(self, event: ParkingState) -> None:
        pass

    def tenants_reloaded(self, event: TenantsReloaded) -> None:
        pass

    def invalid_tenants_counted(self, event: InvalidTenants) -> None:
        pass

    def tenants_sampled(self, event: TenantsState) -> None:
        pass


NO_HOOKS: Hooks = NoHooks()
"""Hooks that drop every payload."""


__all__ = [
    "NO_HOOKS",
    "AuditHooks",
    "Audited",
    "Backlog",
    "BudgetWaited",
    "CallEnded",
    "CallHooks",
    "CallSent",
    "DeadLetterFailed",
    "DeadLetterHooks",
    "DeadLettered",
    "Hooks",
    "InvalidTenants",
    "Lag",
    "LookaheadTruncated",
    "NoHooks",
    "OffsetCommitted",
    "OpenCircuits",
    "Pace",
    "PaceCut",
    "PaceHooks",
    "ParkAppended",
    "ParkHooks",
    "ParkRecordsLost",
    "ParkRefused",
    "ParkReplayed",
    "ParkWriteFailed",
    "ParkingState",
    "PartitionHooks",
    "PartitionsHeld",
    "PartitionsPaused",
    "ProbeAnswered",
    "Progress",
    "ReadHooks",
    "RecordsRead",
    "RegistryWait",
    "Released",
    "RepairEnded",
    "Resolved",
    "RetryAfterTooLong",
    "RetryScheduled",
    "TenantFigures",
    "TenantHooks",
    "TenantsReloaded",
    "TenantsState",
    "Throttled",
    "UnknownField",
]
