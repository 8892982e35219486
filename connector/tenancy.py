"""Tenancy: one deliverer per tenant, so that one shop's trouble stops only that shop's calls.

Each tenant (``connector/tenants.py``) gets its own vendor client (:class:`~connector.sinks.Sink`),
budget (:class:`~connector.pacing.Pacer`), outage circuit, retry policy, 429 adaptation and pool of
workers: a 401 for one shop opens that shop's circuit only, and one shop's 429s slow that shop only.
Every tenant's pacer shares the member's :class:`~connector.fence.Fence`, so each tenant's budget is
dealt out over the fleet by partition exactly as a single budget is, and never exceeded in any second.

Without ``tenants.path`` there is one tenant, named ``""``, made of the ``sink`` section: the
single-shop deployment, unchanged. With it, :meth:`Tenancy.locate` names each record's tenant from
``tenants.route`` (a RouteError for a tenant not served: the event is dead-lettered with stage
``route``), and the tenants file or directory is read again every ``tenants.reload_seconds``:

- an added tenant starts (its deliverer, sink and pacer) before its first event is routed;
- a removed tenant is routed no more (its later events are dead-lettered, stage ``route``); what it
  already has in hand is still delivered;
- a new key or budget takes effect at once; a change of vendor, address, API version or mode is logged
  and needs a restart (the orders already synced were synced with the old ones);
- a change that does not load is logged with its file and field, and the tenants stay as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from random import Random
from types import TracebackType
from typing import Any, Self

from connector.circuit import Circuit, State
from connector.clock import Clock
from connector.config import Settings, SinkSettings
from connector.deliver import Behind, Claim, Deliverer, Report
from connector.errors import ConfigError, RouteError
from connector.fence import Fence
from connector.logs import get_logger
from connector.metrics import Metrics
from connector.pacing import Pacer, phase_of
from connector.retry import RetryPolicy
from connector.route import Route
from connector.sinks import Sink
from connector.structs import Record, TopicPartition
from connector.tenants import Tenant, TenantDirectory

log = get_logger("connector.tenancy")

SinkFactory = Callable[[SinkSettings, Pacer], AbstractAsyncContextManager[Sink]]
"""Makes a tenant's vendor client, whose every request waits on the tenant's pacer."""

_IN_PLACE = frozenset({"api_key", "rate_limit_per_second"})


@dataclass(slots=True)
class Served:
    """One tenant being served: its settings, and the parts that deliver for it."""

    name: str
    settings: SinkSettings
    pacer: Pacer
    sink: Sink
    deliverer: Deliverer
    reported_429_before: int = 0


class Tenancy:
    """The tenants this member delivers for, each with its own deliverer."""

    def __init__(
        self,
        settings: Settings,
        make_sink: SinkFactory,
        claim: Claim,
        report: Report,
        metrics: Metrics,
        *,
        clock: Clock,
        rng: Random,
        fence: Fence,
        behind: Behind,
    ) -> None:
        self._settings = settings
        self._make_sink = make_sink
        self._claim = claim
        self._report = report
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self._fence = fence
        self._behind = behind
        self._served: dict[str, Served] = {}
        self._open: set[str] = set()
        self._labels: dict[str, str] = {}
        self._oldest: dict[str, float] = {}
        self._parked: set[str] = set()
        self._routable: set[str] = set()
        self._layout: dict[str, int] = {}
        self._draining: set[TopicPartition] = set()
        self._stack = AsyncExitStack()
        self._directory: TenantDirectory | None = None
        self._reloader: asyncio.Task[None] | None = None
        self.route: Route | None = None
        if settings.tenants.path:
            self.route = Route.parse(settings.tenants.route)

    @property
    def many(self) -> bool:
        """Whether tenants come from ``tenants.path`` (else the ``sink`` section is the only one)."""
        return self.route is not None

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        try:
            if self.route is None:
                await self._start("", self._settings.sink)
            else:
                self._directory = TenantDirectory(self._settings.tenants.path)
                for name, tenant in sorted(self._directory.tenants.items()):
                    await self._start(name, tenant.sink_settings(self._settings.sink))
                self._reloader = asyncio.create_task(self._reload_loop(), name="tenants-reload")
                self._metrics.tenants_state = self.state
                log.info("tenants_loaded", tenants=len(self._served), route=str(self.route))
        except BaseException:
            await self._stack.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        await self._stack.__aexit__(et, e, tb)

    async def _start(self, name: str, settings: SinkSettings) -> None:
        pacer = Pacer(
            settings.rate_limit_per_second,
            self._clock,
            self._fence,
            on_wait=self._metrics.limiter_wait.inc,
            phase=phase_of(name) if name else 0.0,
            name=name,
        )
        if self._layout:
            pacer.set_layout(self._layout)
        sink = await self._stack.enter_async_context(self._make_sink(settings, pacer))
        deliverer = Deliverer(
            sink,
            self._claim,
            self._report,
            self._metrics,
            clock=self._clock,
            rng=self._rng,
            pacer=pacer,
            circuit=Circuit(
                settings.circuit_window,
                settings.circuit_min_calls,
                settings.circuit_failure_ratio,
                settings.probe_interval_seconds,
            ),
            policy=RetryPolicy(
                settings.backoff_base_seconds,
                settings.backoff_cap_seconds,
                settings.max_attempts,
                settings.max_elapsed_seconds,
                self._rng,
            ),
            max_in_flight=settings.max_in_flight,
            max_retry_after=settings.max_retry_after_seconds,
            behind=self._behind,
            linger_seconds=settings.linger_seconds,
            tenant=name,
            on_circuit=self._circuit_changed,
        )
        await self._stack.enter_async_context(deliverer)
        if self._draining:
            await deliverer.drain(set(self._draining), timeout=0.0)
        self._served[name] = Served(name, settings, pacer, sink, deliverer)
        self._routable.add(name)

    def _circuit_changed(self, tenant: str, state: State) -> None:
        """``connector_circuit_open`` counts the tenants whose circuit is open; the member is in an
        outage (``/readyz`` 503) only when every tenant it serves is."""
        if state is State.OPEN:
            self._open.add(tenant)
        else:
            self._open.discard(tenant)
        self._metrics.circuit_open.set(len(self._open))
        self._metrics.outage = bool(self._open) and self._open.issuperset(self._served)

    # -- routing ------------------------------------------------------------------------------
    def locate(self, record: Record, data: Any) -> tuple[str, str, str]:
        """The tenant ``record`` belongs to, and its vendor kind and API version (many tenants);
        a RouteError when the record names none, or one this deployment does not serve."""
        assert self.route is not None
        name = self.route.tenant_of(record, data)
        if name not in self._routable:
            raise RouteError(
                f"tenant {name!r} is not served by this deployment (tenants.path); replay with "
                f"`connector dlq redrive --tenant {name}` once it is",
                tenant=name,
            )
        settings = self._served[name].settings
        return name, settings.kind, settings.api_version

    def mapping_of(self, tenant: str) -> tuple[str, str] | None:
        """The tenant's own mapping, ``(file, function)``, or None: the deployment's applies."""
        if self._directory is None:
            return None
        entry = self._directory.tenants.get(tenant)
        if entry is None or entry.mapping is None:
            return None
        return entry.mapping.file, entry.mapping.function

    def vendor_of(self, tenant: str) -> tuple[str, str]:
        """The vendor kind and API version changes of ``tenant`` are checked against."""
        served = self._served.get(tenant)
        settings = served.settings if served is not None else self._settings.sink
        return settings.kind, settings.api_version

    def served(self) -> Mapping[str, Served]:
        """Every tenant being served, by name."""
        return self._served

    # -- delivery, for every tenant -----------------------------------------------------------
    def submit(self, key: str, tp: TopicPartition, tenant: str, hold: float = 0.0) -> None:
        """Start delivering ``key`` of ``tenant`` (not before ``hold`` seconds from now)."""
        self._served[tenant].deliverer.submit(key, tp, hold)

    async def drain(self, partitions: set[TopicPartition], timeout: float) -> None:
        """Every tenant's deliverer stops delivering ``partitions`` (see :meth:`Deliverer.drain`)."""
        self._draining |= partitions
        await asyncio.gather(*(s.deliverer.drain(partitions, timeout) for s in self._served.values()))

    def undrain(self, partitions: set[TopicPartition]) -> None:
        """``partitions`` are owned again: every tenant accepts their jobs."""
        self._draining -= partitions
        for served in self._served.values():
            served.deliverer.undrain(partitions)

    def set_layout(self, partitions: Mapping[str, int]) -> None:
        """The subscribed topics' partition counts, for every tenant's pacer."""
        self._layout = dict(partitions)
        for served in self._served.values():
            served.pacer.set_layout(self._layout)

    @property
    def rate(self) -> float:
        """Requests a second this member may send now, over every tenant."""
        return sum(s.pacer.rate for s in self._served.values())

    @property
    def full_rate(self) -> float:
        """Requests a second this member's ticks allow, over every tenant."""
        return sum(s.pacer.full_rate for s in self._served.values())

    def available_estimate(self) -> float:
        """Requests a second the vendors are estimated to leave this member, over every tenant."""
        now = self._clock.wall()
        return sum(s.pacer.full_rate * s.pacer.adaptation.estimate(now) for s in self._served.values())

    # -- observability ------------------------------------------------------------------------
    def _label(self, name: str) -> str:
        """A tenant's metrics label: its name for the first ``tenants.metrics_limit`` tenants in name
        order (the same on every member), ``_other`` for the rest, so that series stay bounded."""
        if name not in self._labels:
            ranked = sorted(self._served)
            limit = self._settings.tenants.metrics_limit
            self._labels = {n: (n if i < limit else "_other") for i, n in enumerate(ranked)}
        return self._labels[name]

    def refresh_metrics(self, oldest: Mapping[str, float], parked: set[str] | None = None) -> None:
        """Per-tenant gauges and counters (many tenants only): pace, circuit, parked, 429s and the
        age of the oldest event not yet delivered (``oldest``: its record time per tenant); tenants
        past the label limit are summed (ages: the oldest) under ``_other``."""
        if not self.many:
            return
        now = self._clock.wall()
        self._parked = set(parked or ())
        pace: dict[str, float] = {}
        down: dict[str, int] = {}
        held: dict[str, int] = {}
        age: dict[str, float] = {}
        for name, served in self._served.items():
            label = self._label(name)
            pace[label] = pace.get(label, 0.0) + served.pacer.rate
            down[label] = down.get(label, 0) + (name in self._open)
            held[label] = held.get(label, 0) + (name in self._parked)
            stamp = oldest.get(name)
            age[label] = max(age.get(label, 0.0), now - stamp if stamp else 0.0)
            seen = served.deliverer.rate_limited_count
            if seen > served.reported_429_before:
                self._metrics.tenant_rate_limited.labels(label).inc(seen - served.reported_429_before)
            served.reported_429_before = seen
        for label, value in pace.items():
            self._metrics.tenant_pace.labels(label).set(value)
            self._metrics.tenant_circuit_open.labels(label).set(down[label])
            self._metrics.tenant_parked.labels(label).set(held[label])
            self._metrics.tenant_oldest_unsynced.labels(label).set(max(0.0, age[label]))
        self._oldest = dict(oldest)

    def state(self) -> list[dict[str, object]]:
        """Every tenant's state, for ``/tenants`` and ``connector tenants``: its vendor, address and
        budget, whether it is routed, its circuit, pace, 429s and oldest event not yet delivered."""
        now = self._clock.wall()
        rows: list[dict[str, object]] = []
        for name, served in sorted(self._served.items()):
            stamp = self._oldest.get(name)
            rows.append(
                {
                    "tenant": name,
                    "kind": served.settings.kind,
                    "base_url": served.settings.base_url,
                    "budget_per_second": served.settings.rate_limit_per_second,
                    "routed": name in self._routable,
                    "circuit": served.deliverer.circuit.state.value,
                    "parked": name in self._parked,
                    "pace_per_second": round(served.pacer.rate, 3),
                    "rate_limited": served.deliverer.rate_limited_count,
                    "jobs": served.deliverer.pending,
                    "oldest_unsynced_s": round(now - stamp, 1) if stamp else 0.0,
                }
            )
        return rows

    # -- reloads ------------------------------------------------------------------------------
    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.tenants.reload_seconds)
            try:
                await self.reload()
            except Exception:  # a reload must never stop the member
                log.exception("tenants_reload_crashed")

    async def reload(self) -> None:
        """Read the tenants again if a file changed, and apply what changed (module docstring)."""
        assert self._directory is not None
        before = self._directory.last_error
        change = self._directory.refresh()
        if self._directory.last_error and self._directory.last_error != before:
            log.error(
                "tenants_reload_failed",
                error=self._directory.last_error,
                action="the tenants stay as they were until the file loads",
            )
        if not change:
            return
        tenants = self._directory.tenants
        for name in sorted(change.removed):
            self._routable.discard(name)
            log.warning("tenant_removed", tenant=name, action="its events are dead-lettered (stage route)")
        for name in sorted(change.added):
            await self._add(name, tenants[name])
        for name in sorted(change.changed):
            self._change(name, tenants[name])

    async def _add(self, name: str, tenant: Tenant) -> None:
        try:
            settings = tenant.sink_settings(self._settings.sink)
        except ConfigError as exc:
            log.error("tenant_invalid", tenant=name, error=str(exc))
            return
        if name in self._served:  # removed, then added again
            self._change(name, tenant)
            self._routable.add(name)
        else:
            await self._start(name, settings)
        log.info("tenant_added", tenant=name, kind=settings.kind, rate=settings.rate_limit_per_second)

    def _change(self, name: str, tenant: Tenant) -> None:
        served = self._served[name]
        try:
            fresh = tenant.sink_settings(self._settings.sink)
        except ConfigError as exc:
            log.error("tenant_invalid", tenant=name, error=str(exc))
            return
        old, new = served.settings.model_dump(), fresh.model_dump()
        differ = {k for k in new if new[k] != old[k]} - {"max_in_flight"}
        if served.settings.api_key.get_secret_value() != fresh.api_key.get_secret_value():
            differ.add("api_key")
        if differ - _IN_PLACE:
            log.error(
                "tenant_change_needs_restart",
                tenant=name,
                fields=sorted(differ - _IN_PLACE),
                action="kept as it was: restart the members to apply",
            )
            return
        if "api_key" in differ:
            served.sink.set_api_key(fresh.api_key)
        if "rate_limit_per_second" in differ:
            served.pacer.set_budget(fresh.rate_limit_per_second)
        served.settings = served.settings.model_copy(
            update={"api_key": fresh.api_key, "rate_limit_per_second": fresh.rate_limit_per_second}
        )
        log.info("tenant_changed", tenant=name, fields=sorted(differ))


__all__ = ["Served", "SinkFactory", "Tenancy"]
