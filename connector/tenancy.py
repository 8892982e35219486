"""Tenancy: one deliverer per tenant, so that one shop's trouble stops only that shop's calls.

Each tenant (``connector/tenants.py``) gets its own vendor client (:class:`~connector.sinks.Sink`),
budget (:class:`~connector.pacing.Pacer`), outage circuit, retry policy, 429 adaptation, pool of
workers and read-back audits (:class:`~connector.audit.Auditor`): a 401 for one shop opens that
shop's circuit only, and one shop's 429s slow that shop only.
Every tenant's pacer shares the member's :class:`~connector.fence.Fence`, so each tenant's budget is
dealt out over the fleet by partition exactly as a single budget is, and never exceeded in any second.
Each tenant's parts live in a stack of their own (``_served.py``): one can be closed while the others
go on. Which shop a record is for is the tenancy's :class:`~connector._router.Router` (``_router.py``);
how each shop looks from outside (its series, its ``/tenants`` row, its circuit, its health) is its
:class:`~connector._tenantview.TenantView` (``_tenantview.py``).

Without ``tenants.path`` there is one tenant, named ``""``, made of the ``sink`` section: the
single-shop deployment, unchanged. With it, the :attr:`Tenancy.router` names each record's tenant
from ``tenants.route``, by its name or one of its ``aliases`` (a RouteError for a tenant not served:
the event is dead-lettered with stage ``route``), and gives a tenant's own mapping, the object compiled
when its definition loaded (the read path asks the router, never the tenancy); and the tenants file
or directory is read again every ``tenants.reload_seconds`` by the tenancy's
:class:`~connector._reloads.Reloader` (``_reloads.py``), which opens and closes shops through the
tenancy's :class:`~connector._reloads.Host` surface:

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
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from random import Random
from types import TracebackType
from typing import Self

from connector._reloads import Reloader
from connector._router import Router
from connector._served import Retirable, Served
from connector._tenantview import TenantView
from connector.audit import Auditor
from connector.circuit import Circuit
from connector.clock import Clock
from connector.config import Settings, SinkSettings
from connector.deliver import Deliverer, Linger, Outcome, OutcomeKind, WorkSource
from connector.errors import RouteError
from connector.fence import Fence
from connector.instruments import BudgetWaited, Hooks
from connector.logs import get_logger
from connector.mapping import FileMapping, FunctionMapping
from connector.pacing import Pacer, phase_of
from connector.park import ShopHealth
from connector.retry import RetryPolicy
from connector.route import Route
from connector.sinks import Sink
from connector.structs import OrderChange, TopicPartition
from connector.tenants import Tenant
from connector.vendors import target

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
        hooks: Hooks,
        *,
        clock: Clock,
        rng: Random,
        fence: Fence,
    ) -> None:
        self._settings = settings
        self._make_sink = make_sink
        self._work: WorkSource | None = None
        self._linger: Linger | None = None
        self._hooks = hooks
        self._clock = clock
        self._rng = rng
        self._fence = fence
        self._served: dict[str, Served] = {}
        self._layout: dict[str, int] = {}
        self._draining: set[TopicPartition] = set()
        self._reloader: Reloader | None = None
        route = Route.parse(settings.tenants.route) if settings.tenants.path else None
        self._router = Router(route, settings.kafka.remember_keys)
        self._view = TenantView(
            hooks, clock, many=route is not None, metrics_limit=settings.tenants.metrics_limit
        )

    def connect(self, work: WorkSource, linger: Linger) -> None:
        """Where every tenant's deliverer takes its work and learns whether to linger (the ledger and
        the membership, built after this; connected before this is entered)."""
        self._work, self._linger = work, linger

    @property
    def many(self) -> bool:
        """Whether tenants come from ``tenants.path`` (else the ``sink`` section is the only one)."""
        return self._router.route is not None

    async def __aenter__(self) -> Self:
        try:
            if self._router.route is None:
                await self.open_tenant("", self._settings.sink)
            else:
                self._reloader = Reloader(self, self._settings, self._hooks, self._clock)
                await self._reloader.open()
                log.info("tenants_loaded", tenants=len(self._served), route=str(self._router.route))
                self._router.warn_unroutable_deletes(self._settings)
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
        *,
        index: bool = True,
    ) -> Served:
        """Start serving ``name``: its pacer, vendor client (``settings``: its account, called as the
        ``sink`` section says) and deliverer (by the ``delivery`` policy), in a stack of its own. The
        budget is named by the shop's first name (its first alias once renamed): every member paces
        the account on one grid of ticks, and shares its 429 cuts under one name, whichever name of
        the shop it knows (a member started before a rename knows the old one). ``index``: False when
        many are opened before any event is routed (the first load), and :meth:`reindex` is called
        once after them; reindexing after each made starting N shops cost N² (2,000: 3.4 s)."""
        policy = self._settings.delivery
        stack = AsyncExitStack()
        account = budget_name(name, tenant)
        try:
            pacer = Pacer(
                settings.rate_limit_per_second,
                self._clock,
                self._fence,
                on_wait=self._waited,
                phase=phase_of(account) if account else 0.0,
                name=account,
            )
            if self._layout:
                pacer.set_layout(self._layout)
            sink = Retirable(await stack.enter_async_context(self._make_sink(settings, pacer)))
            assert self._work is not None, "Tenancy.connect() before it is entered"
            audits = self._settings.audit
            auditor = Auditor(pacer, self._hooks, audits, clock=self._clock, tenant=name)
            deliverer = Deliverer(
                sink,
                self._work,
                self._hooks,
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
                target=target(settings.kind, settings.api_version),
                max_in_flight=settings.max_in_flight,
                max_retry_after=policy.max_retry_after_seconds,
                linger=self._linger,
                linger_seconds=policy.linger_seconds,
                tenant=name,
                on_circuit=self._view.circuit_changed,
                audit=auditor,  # audits on or off: it also sends what a resync hands it
            )
            auditor.connect(deliverer)
            await stack.enter_async_context(deliverer)
            await stack.enter_async_context(auditor)  # closed before its deliverer
            if self._draining:
                await deliverer.drain(set(self._draining), timeout=0.0)
        except BaseException:
            await stack.aclose()
            raise
        aliases = frozenset(tenant.aliases) if tenant is not None else frozenset()
        served = Served(name, settings, pacer, sink, deliverer, stack, name, aliases, mapping, auditor)
        self._served[name] = served
        if index:
            self.reindex()
        return served

    async def close_tenant(self, served: Served) -> None:
        """Stop serving ``served``: forget it, stop its workers, close its vendor client and remove
        its metric series."""
        if self._served.get(served.name) is served:
            del self._served[served.name]
        self._view.forget_circuit(served.name)
        self.reindex()
        try:
            await served.close()
        except Exception:  # it is forgotten all the same
            log.exception("tenant_close_failed", tenant=served.shown)
        self._view.prune(self._served)

    def _share_audit_memory(self) -> None:
        """Each shop's audits keep at most ``audit.remember_orders`` delivered orders, and all of
        them together ``audit.remember_orders_per_member``, shared out evenly: a thousand shops keep a
        hundred each at the defaults (about 110 MB in all), not ten thousand (11 GB)."""
        audits = self._settings.audit
        each = min(audits.remember_orders, audits.remember_orders_per_member // max(1, len(self._served)))
        for served in self._served.values():
            if served.auditor is not None:
                served.auditor.set_limit(each)

    def reindex(self) -> None:
        """Route events by the served shops' names and aliases as they now are (:class:`Router`), rank
        their metrics labels again, and share the audits' memory out among them."""
        self._router.reindex(self._served)
        self._view.forget_labels()
        self._share_audit_memory()

    @property
    def all_down(self) -> bool:
        """Every shop served has its outage circuit open: the member is in an outage (``/readyz``
        503)."""
        return self._view.all_down(self._served)

    # -- routing ------------------------------------------------------------------------------
    @property
    def router(self) -> Router:
        """Which shop each record is for, and its mapping (many tenants): what the read path asks,
        kept current by this tenancy as shops open, close and are renamed."""
        return self._router

    def canonical(self, name: str) -> str:
        """The tenant a name written earlier is now (see :meth:`Router.canonical`)."""
        return self._router.canonical(name)

    def served(self) -> Mapping[str, Served]:
        """Every tenant being served (removed ones until they are closed), by name."""
        return self._served

    def resending(self, tenant: str) -> Auditor | None:
        """Where a resync sends ``tenant``'s changes again: its auditor (None: not served here)."""
        served = self._served.get(tenant)
        return served.auditor if served is not None and not served.retiring else None

    # -- delivery, for every tenant -----------------------------------------------------------
    def submit(self, change: OrderChange, hold: float = 0.0) -> None:
        """Start delivering ``change``'s order with its tenant's deliverer (not before ``hold`` seconds
        from now). A tenant closed meanwhile (removed, its deliverer idle, while a change of it was on
        its way back from a revoke) has its changes refused: they are dead-lettered."""
        served = self._served.get(change.tenant)
        if served is not None:
            served.deliverer.submit(change, hold)
        else:
            asyncio.get_running_loop().call_soon(self._refuse, change)

    def replace(self, change: OrderChange) -> bool:
        """Hand a newer change to its order's job (see :meth:`Deliverer.replace`)."""
        served = self._served.get(change.tenant)
        return served is not None and served.deliverer.replace(change)

    def _refuse(self, change: OrderChange | None) -> None:
        """Fail ``change`` and every later change of its order for a tenant no longer served: told
        as any delivery's end, a loop turn after it was submitted."""
        assert self._work is not None
        now = self._clock.wall()
        while change is not None:
            tenant = change.tenant
            error = RouteError(
                f"tenant {tenant!r} is no longer served by this deployment (tenants.path); replay "
                f"with `connector dlq redrive --tenant {tenant}` once it is",
                tenant=tenant,
            )
            change = self._work.report(Outcome(OutcomeKind.FAILED, change.key, change, error, 0, now, now))

    # -- one shop's health and quiescence (what parking asks) ----------------------------------
    def names(self) -> list[str]:
        """Every shop served, by the name its events route to."""
        return list(self._served)

    def health(self, tenant: str) -> ShopHealth | None:
        """``tenant``'s circuit and pace now; None when it is not served."""
        served = self._served.get(tenant)
        return self._view.health(served) if served is not None else None

    def open_circuits(self) -> set[str]:
        """The shops whose outage circuit is open now (probing included: ``open_since`` of their
        :meth:`health` is set), by the name they are served under."""
        served = self._served.items()
        return {name for name, shop in served if shop.deliverer.circuit.opened_at is not None}

    async def quiesce(self, tenant: str, partitions: set[TopicPartition], timeout: float) -> bool:
        """``tenant`` takes no job of ``partitions`` until :meth:`resume`; its calls in flight for
        them finish (bounded by ``timeout``). False when it is not served."""
        served = self._served.get(tenant)
        if served is None:
            return False
        await served.deliverer.drain(partitions, timeout, revoked=False)  # still owned: audits go on
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
    def _waited(self, seconds: float) -> None:
        self._hooks.budget_waited(BudgetWaited(seconds))

    def refresh_metrics(self, oldest: Mapping[str, float], parked: set[str] | None = None) -> None:
        """Per-tenant gauges and counters (many tenants only; see :meth:`TenantView.refresh`):
        ``oldest``: the record time of each tenant's oldest event not yet delivered; ``parked``: the
        tenants parked."""
        self._view.refresh(self._served, oldest, parked)

    def state(self) -> list[dict[str, object]]:
        """Every tenant's state, for ``/tenants`` and ``connector tenants`` (none with one shop; see
        :meth:`TenantView.rows`)."""
        return self._view.rows(self._served)


__all__ = ["Served", "SinkFactory", "Tenancy"]
