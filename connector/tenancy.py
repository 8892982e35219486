"""Tenancy: one deliverer per tenant, so that one shop's trouble stops only that shop's calls.

Each tenant (``connector/tenants.py``) gets its own vendor client (:class:`~connector.sinks.Sink`),
budget (:class:`~connector.pacing.Pacer`), outage circuit, retry policy, 429 adaptation and pool of
workers: a 401 for one shop opens that shop's circuit only, and one shop's 429s slow that shop only.
Every tenant's pacer shares the member's :class:`~connector.fence.Fence`, so each tenant's budget is
dealt out over the fleet by partition exactly as a single budget is, and never exceeded in any second.
Each tenant's parts live in a stack of their own (``_served.py``): one can be closed while the others
go on.

Without ``tenants.path`` there is one tenant, named ``""``, made of the ``sink`` section: the
single-shop deployment, unchanged. With it, :meth:`Tenancy.locate` names each record's tenant from
``tenants.route``, by its name or one of its ``aliases`` (a RouteError for a tenant not served: the
event is dead-lettered with stage ``route``); a tenant's own mapping is the object compiled when its
definition loaded (:meth:`Tenancy.mapping_of`); and the tenants file or directory is read again every
``tenants.reload_seconds`` by the tenancy's :class:`~connector._reloads.Reloader` (``_reloads.py``),
which opens and closes shops through the tenancy's :class:`~connector._reloads.Host` surface:

- an added tenant starts (its deliverer, sink and pacer) before its first event is routed;
- a removed tenant is routed no more (its later events are dead-lettered, stage ``route``); what it
  already has in hand is still delivered, for ``shutdown_grace_seconds`` at most (then refused:
  dead-lettered); once it holds nothing, its workers stop, its client closes, its series go;
- a renamed tenant (its old name in ``aliases``) is served on as it was: nothing in hand or parked is
  lost or dead-lettered;
- a new key, budget, aliases or mapping takes effect at once, whatever else changed (which fields of
  the vendor account do is declared on :class:`~connector.config.VendorAccount`); a change of vendor,
  address, API version or mode is logged and needs a restart (the orders already synced were synced
  with the old ones);
- a tenant that does not load is logged with its file and field and kept as it was; a change that does
  not load at all, or that would remove more than ``tenants.max_removed_share`` of the tenants (or
  every one), is refused, logged and counted, and the tenants stay as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from random import Random
from types import TracebackType
from typing import Any, Self

from connector._lastseen import LastSeen, is_delete
from connector._reloads import Reloader
from connector._served import Retirable, Served
from connector.circuit import Circuit, State
from connector.clock import Clock
from connector.config import Settings, SinkSettings
from connector.deliver import Deliverer, Linger, Outcome, OutcomeKind, WorkSource
from connector.errors import RouteError
from connector.fence import Fence
from connector.logs import get_logger
from connector.mapping import FileMapping, FunctionMapping
from connector.metrics import Metrics
from connector.pacing import Pacer, phase_of
from connector.park import ShopHealth
from connector.retry import RetryPolicy
from connector.route import Route
from connector.sinks import Sink
from connector.structs import Record, TopicPartition
from connector.tenants import Tenant
from connector.vendors import Target, target

log = get_logger("connector.tenancy")

SinkFactory = Callable[[SinkSettings, Pacer], AbstractAsyncContextManager[Sink]]
"""Makes a tenant's vendor client, whose every request waits on the tenant's pacer."""


def budget_name(name: str, tenant: Tenant | None) -> str:
    """The name a shop's budget goes by on every member: its first alias once renamed, else its name."""
    return tenant.aliases[0] if tenant is not None and tenant.aliases else name


class Tenancy:
    """The tenants this member delivers for, each with its own deliverer."""

    def __init__(
        self,
        settings: Settings,
        make_sink: SinkFactory,
        metrics: Metrics,
        *,
        clock: Clock,
        rng: Random,
        fence: Fence,
    ) -> None:
        self._settings = settings
        self._make_sink = make_sink
        self._work: WorkSource | None = None
        self._linger: Linger | None = None
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self._fence = fence
        self._served: dict[str, Served] = {}
        self._open: set[str] = set()
        self._labels: dict[str, str] = {}
        self._series: set[str] = set()  # labels of the per-tenant series written
        self._oldest: dict[str, float] = {}
        self._parked: set[str] = set()
        self._routes: dict[str, str] = {}  # a name events may give -> the routed tenant it is
        self._canonical: dict[str, str] = {}  # any name of a served tenant -> the tenant
        self._layout: dict[str, int] = {}
        self._draining: set[TopicPartition] = set()
        self._reloader: Reloader | None = None
        self.route: Route | None = None
        self._last_seen = LastSeen(settings.kafka.remember_keys)
        if settings.tenants.path:
            self.route = Route.parse(settings.tenants.route)

    def connect(self, work: WorkSource, linger: Linger) -> None:
        """Where every tenant's deliverer takes its work and learns whether to linger (the ledger and
        the membership, built after this; connected before this is entered)."""
        self._work, self._linger = work, linger

    @property
    def many(self) -> bool:
        """Whether tenants come from ``tenants.path`` (else the ``sink`` section is the only one)."""
        return self.route is not None

    async def __aenter__(self) -> Self:
        try:
            if self.route is None:
                await self.open_tenant("", self._settings.sink)
            else:
                self._reloader = Reloader(self, self._settings, self._metrics, self._clock)
                await self._reloader.open()
                log.info("tenants_loaded", tenants=len(self._served), route=str(self.route))
                self._warn_unroutable_deletes()
        except BaseException:
            if self._reloader is not None:
                await self._reloader.close()
            await self._close_all()
            raise
        return self

    async def reload(self) -> None:
        """Read the tenants again now, and apply what changed (many tenants; the reloader does it
        every ``tenants.reload_seconds``)."""
        assert self._reloader is not None, "one tenant: nothing to reload"
        await self._reloader.reload()

    def _warn_unroutable_deletes(self) -> None:
        """Say at start when deletes naming no shop cannot be routed by their key's last shop
        (``connector/_lastseen.py``): with ``field:`` or ``header:`` routing, tombstones and Debezium
        deletes at the default replica identity name none."""
        assert self.route is not None
        if self.route.source == "topic" or self._settings.delivery.on_delete == "ignore":
            return
        kafka = self._settings.kafka
        if kafka.remember_keys == 0:
            log.warning(
                "route_deletes_unroutable",
                route=str(self.route),
                reason="kafka.remember_keys = 0: no key's shop is remembered",
                action="every tombstone, and every delete naming no shop, is dead-lettered (stage "
                "route): raise kafka.remember_keys, route by topic, or have deletes name their shop "
                "(REPLICA IDENTITY FULL)",
            )
        elif kafka.warmup_records == 0:
            log.warning(
                "route_deletes_unroutable",
                route=str(self.route),
                reason="kafka.warmup_records = 0: what was read before a restart or rebalance is not re-read",
                action="after a restart, a delete naming no shop whose order's last event lies before "
                "the committed offset is dead-lettered (stage route): raise kafka.warmup_records",
            )

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reloader is not None:
            await self._reloader.close()
        await self._close_all()

    async def _close_all(self) -> None:
        for served in reversed(list(self._served.values())):
            try:
                await served.close()
            except Exception:  # the others are closed all the same
                log.exception("tenant_close_failed", tenant=served.shown)

    # -- the shops served (the reloader's Host surface) -------------------------------------------
    async def open_tenant(
        self,
        name: str,
        settings: SinkSettings,
        tenant: Tenant | None = None,
        mapping: FileMapping | FunctionMapping | None = None,
    ) -> Served:
        """Start serving ``name``: its pacer, vendor client (``settings``: its account, called as the
        ``sink`` section says) and deliverer (by the ``delivery`` policy), in a stack of its own. The
        budget is named by the shop's first name (its first alias once renamed): every member paces
        the account on one grid of ticks, and shares its 429 cuts under one name, whichever name of
        the shop it knows (a member started before a rename knows the old one)."""
        policy = self._settings.delivery
        stack = AsyncExitStack()
        account = budget_name(name, tenant)
        try:
            pacer = Pacer(
                settings.rate_limit_per_second,
                self._clock,
                self._fence,
                on_wait=self._metrics.limiter_wait.inc,
                phase=phase_of(account) if account else 0.0,
                name=account,
            )
            if self._layout:
                pacer.set_layout(self._layout)
            sink = Retirable(await stack.enter_async_context(self._make_sink(settings, pacer)))
            assert self._work is not None, "Tenancy.connect() before it is entered"
            deliverer = Deliverer(
                sink,
                self._work,
                self._metrics,
                clock=self._clock,
                rng=self._rng,
                pacer=pacer,
                circuit=Circuit(
                    policy.circuit_window,
                    policy.circuit_min_calls,
                    policy.circuit_failure_ratio,
                    policy.probe_interval_seconds,
                ),
                policy=RetryPolicy(
                    policy.backoff_base_seconds,
                    policy.backoff_cap_seconds,
                    policy.max_attempts,
                    policy.max_elapsed_seconds,
                    self._rng,
                ),
                max_in_flight=settings.max_in_flight,
                max_retry_after=policy.max_retry_after_seconds,
                linger=self._linger,
                linger_seconds=policy.linger_seconds,
                tenant=name,
                on_circuit=self._circuit_changed,
            )
            await stack.enter_async_context(deliverer)
            if self._draining:
                await deliverer.drain(set(self._draining), timeout=0.0)
        except BaseException:
            await stack.aclose()
            raise
        aliases = frozenset(tenant.aliases) if tenant is not None else frozenset()
        served = Served(name, settings, pacer, sink, deliverer, stack, name, aliases, mapping)
        self._served[name] = served
        self.reindex()
        return served

    async def close_tenant(self, served: Served) -> None:
        """Stop serving ``served``: forget it, stop its workers, close its vendor client and remove
        its metric series."""
        if self._served.get(served.name) is served:
            del self._served[served.name]
        self._open.discard(served.name)
        self._metrics.circuit_open.set(len(self._open))
        self.reindex()
        try:
            await served.close()
        except Exception:  # it is forgotten all the same
            log.exception("tenant_close_failed", tenant=served.shown)
        self._prune_series(self._label_set())

    def reindex(self) -> None:
        """Which names route to which tenant: a routed tenant's name and aliases; for parked records
        and commit metadata (:meth:`canonical`), a removed one's too, and every tenant's own name."""
        self._routes, self._canonical = {}, {}
        for served in sorted(self._served.values(), key=lambda s: not s.retiring):  # routed ones last
            for name in served.names:
                self._canonical[name] = served.name
            if not served.retiring:
                for name in (served.shown, *served.aliases):
                    self._routes[name] = served.name
        for served in self._served.values():
            self._canonical[served.name] = served.name
        self._labels = {}

    def _circuit_changed(self, tenant: str, state: State) -> None:
        """``connector_circuit_open`` counts the tenants whose circuit is open; the member is in an
        outage (``/readyz`` 503) only when every tenant it serves is."""
        if state is State.OPEN:
            self._open.add(tenant)
        else:
            self._open.discard(tenant)
        self._metrics.circuit_open.set(len(self._open))

    @property
    def all_down(self) -> bool:
        """Every shop served has its outage circuit open: the member is in an outage (``/readyz``
        503)."""
        return bool(self._open) and self._open.issuperset(self._served)

    # -- routing ------------------------------------------------------------------------------
    def locate(self, record: Record, data: Any) -> tuple[str, Target]:
        """The tenant ``record`` belongs to (the one its name, or an alias, is of), and its vendor
        and API version (many tenants); a RouteError when the record names none, or one this
        deployment does not serve."""
        assert self.route is not None
        try:
            name = self.route.tenant_of(record, data)
        except RouteError as exc:
            # A delete naming no shop (a tombstone; at the default replica identity a Debezium
            # delete's before holds the key only): its order's last routed event says whose it is.
            seen = self._last_seen.shop_of(record) if is_delete(record, data) else None
            if seen is None or seen not in self._served:
                if is_delete(record, data):
                    raise RouteError(
                        f"{exc}; and no event of its key was routed within the last "
                        "kafka.remember_keys keys read (and the warm-up's kafka.warmup_records) "
                        "to route this delete by"
                    ) from None
                raise
            name = seen
        tenant = self._routes.get(name)
        if tenant is None:
            raise RouteError(
                f"tenant {name!r} is not served by this deployment (tenants.path); replay with "
                f"`connector dlq redrive --tenant {name}` once it is",
                tenant=name,
            )
        self._last_seen.note(record, tenant)
        settings = self._served[tenant].settings
        return tenant, target(settings.kind, settings.api_version)

    def canonical(self, name: str) -> str:
        """The tenant a name written earlier (a parked record's tenant, a commit's parked shops) is
        now: itself, or the tenant that has it as an alias (renamed since). Unknown names as given."""
        return self._canonical.get(name, name)

    def mapping_of(self, tenant: str) -> FileMapping | FunctionMapping | None:
        """The tenant's own mapping, as compiled when its definition loaded; None: the deployment's
        applies."""
        served = self._served.get(tenant)
        return served.mapping if served is not None else None

    def vendor_of(self, tenant: str) -> Target:
        """The vendor and API version changes of ``tenant`` are checked against."""
        served = self._served.get(tenant)
        settings = served.settings if served is not None else self._settings.sink
        return target(settings.kind, settings.api_version)

    def served(self) -> Mapping[str, Served]:
        """Every tenant being served (removed ones until they are closed), by name."""
        return self._served

    # -- delivery, for every tenant -----------------------------------------------------------
    def submit(self, key: str, tp: TopicPartition, tenant: str, hold: float = 0.0) -> None:
        """Start delivering ``key`` of ``tenant`` (not before ``hold`` seconds from now). A tenant
        closed meanwhile (removed, its deliverer idle, while a change of it was on its way back from
        a revoke) has its changes refused: they are dead-lettered."""
        served = self._served.get(tenant)
        if served is not None:
            served.deliverer.submit(key, tp, hold)
            return
        error = RouteError(
            f"tenant {tenant!r} is no longer served by this deployment (tenants.path); replay with "
            f"`connector dlq redrive --tenant {tenant}` once it is",
            tenant=tenant,
        )
        now = self._clock.wall()
        assert self._work is not None
        while (change := self._work.claim(key)) is not None:
            if not self._work.report(Outcome(OutcomeKind.FAILED, key, change, error, 0, now, now)):
                return

    # -- one shop's health and quiescence (what parking asks) ----------------------------------
    def names(self) -> list[str]:
        """Every shop served, by the name its events route to."""
        return list(self._served)

    def health(self, tenant: str) -> ShopHealth | None:
        """``tenant``'s circuit and pace now; None when it is not served."""
        served = self._served.get(tenant)
        if served is None:
            return None
        circuit, pacer = served.deliverer.circuit, served.pacer
        return ShopHealth(
            open_since=circuit.opened_at,
            closed=circuit.state is State.CLOSED,
            full_rate=pacer.full_rate,
            pace_factor=pacer.adaptation.factor(self._clock.wall()),
        )

    async def quiesce(self, tenant: str, partitions: set[TopicPartition], timeout: float) -> bool:
        """``tenant`` takes no job of ``partitions`` until :meth:`resume`; its calls in flight for
        them finish (bounded by ``timeout``). False when it is not served."""
        served = self._served.get(tenant)
        if served is None:
            return False
        await served.deliverer.drain(partitions, timeout)
        return True

    def resume(self, tenant: str, partitions: set[TopicPartition]) -> None:
        """``tenant`` takes jobs of ``partitions`` again (those every tenant is draining, being
        revoked, stay drained)."""
        served = self._served.get(tenant)
        if served is not None:
            served.deliverer.undrain(partitions - self._draining)

    async def drain(self, partitions: set[TopicPartition], timeout: float) -> None:
        """Every tenant's deliverer stops delivering ``partitions`` (see :meth:`Deliverer.drain`)."""
        self._draining |= partitions
        await asyncio.gather(*(s.deliverer.drain(partitions, timeout) for s in list(self._served.values())))

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

    def _sending(self) -> list[Served]:
        """The tenants whose requests reach a vendor (not those refusing what a removal left)."""
        return [s for s in self._served.values() if not s.sink.refusal]

    @property
    def rate(self) -> float:
        """Requests a second this member may send now, over every tenant."""
        return sum(s.pacer.rate for s in self._sending())

    @property
    def full_rate(self) -> float:
        """Requests a second this member's ticks allow, over every tenant."""
        return sum(s.pacer.full_rate for s in self._sending())

    def available_estimate(self) -> float:
        """Requests a second the vendors are estimated to leave this member, over every tenant."""
        now = self._clock.wall()
        return sum(s.pacer.full_rate * s.pacer.adaptation.estimate(now) for s in self._sending())

    # -- observability ------------------------------------------------------------------------
    def _label(self, tenant: str) -> str:
        """A tenant's metrics label: its name for the first ``tenants.metrics_limit`` tenants in name
        order (the same on every member), ``_other`` for the rest, so that series stay bounded."""
        if tenant not in self._labels:
            ranked = sorted(self._served.values(), key=lambda s: (s.shown, s.name))
            limit = self._settings.tenants.metrics_limit
            self._labels = {s.name: (s.shown if i < limit else "_other") for i, s in enumerate(ranked)}
        return self._labels[tenant]

    def _label_set(self) -> set[str]:
        return {self._label(name) for name in self._served}

    def _prune_series(self, used: set[str]) -> None:
        """Remove the per-tenant series of labels no tenant has any more (removed, or now summed
        under ``_other``, or ``_other`` itself), so that series do not grow with churn."""
        m = self._metrics
        metrics = (m.tenant_pace, m.tenant_circuit_open, m.tenant_parked, m.tenant_oldest_unsynced)
        for label in sorted(self._series - used):
            for metric in (*metrics, m.tenant_rate_limited):
                with contextlib.suppress(KeyError):
                    metric.remove(label)
        self._series = set(used) if self.many else set()

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
            pace[label] = pace.get(label, 0.0) + (0.0 if served.sink.refusal else served.pacer.rate)
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
        self._prune_series(set(pace))
        self._oldest = dict(oldest)

    def state(self) -> list[dict[str, object]]:
        """Every tenant's state, for ``/tenants`` and ``connector tenants``: its vendor, address and
        budget, its aliases, whether it is routed (a removed one is not, until it is closed), its
        circuit, pace, 429s and oldest event not yet delivered (none with one shop: ``tenants.path``
        unset)."""
        if not self.many:
            return []
        now = self._clock.wall()
        rows: list[dict[str, object]] = []
        for served in sorted(self._served.values(), key=lambda s: (s.shown, s.name)):
            stamp = self._oldest.get(served.name)
            rows.append(
                {
                    "tenant": served.shown,
                    "kind": served.settings.kind,
                    "base_url": served.settings.base_url,
                    "budget_per_second": served.settings.rate_limit_per_second,
                    "aliases": sorted(served.aliases),
                    "routed": not served.retiring,
                    "circuit": served.deliverer.circuit.state.value,
                    "parked": served.name in self._parked,
                    "pace_per_second": round(served.pacer.rate, 3),
                    "rate_limited": served.deliverer.rate_limited_count,
                    "jobs": served.deliverer.pending,
                    "oldest_unsynced_s": round(now - stamp, 1) if stamp else 0.0,
                }
            )
        return rows


__all__ = ["Served", "SinkFactory", "Tenancy"]
