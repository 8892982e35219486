"""How each shop served looks from outside: its metric series, its ``/tenants`` row, its circuit, its health.

:class:`TenantView` is the per-shop observability of :class:`~connector.tenancy.Tenancy`, kept apart
from the shops' lifecycle because it has state of its own that only it needs: each shop's metrics
label (its name for the first ``tenants.metrics_limit`` shops in name order, ``_other`` for the rest,
so that series stay bounded), the labels it has reported figures for (dropped when no shop has them
any more, so that series do not grow with churn), and the oldest-unsynced times and parked shops it was
last told of (for the rows of ``/tenants`` and ``connector tenants``). The tenancy hands it the shops
served on every call; it reads them (and notes on each the 429s it has counted), and reports the
figures to the hooks (:mod:`connector.instruments`). It also counts the shops whose outage circuit
is open (``connector_circuit_open``; every one open: ``/readyz`` 503) and tells a shop's health as
parking asks it. With one shop (``tenants.path`` unset) it reports no per-shop figures and has no
rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector._served import Served
from connector.circuit import State
from connector.clock import Clock
from connector.instruments import Hooks, OpenCircuits, TenantFigures, TenantsState
from connector.park import ShopHealth


class TenantView:
    """Per-shop series (pace, circuit, parked, 429s, oldest unsynced), ``/tenants`` rows, the shops
    whose circuit is open and a shop's health."""

    def __init__(self, hooks: Hooks, clock: Clock, *, many: bool, metrics_limit: int) -> None:
        self._hooks = hooks
        self._clock = clock
        self._many = many
        self._limit = metrics_limit
        self._labels: dict[str, str] = {}
        self._series: set[str] = set()  # labels of the per-tenant series written
        self._oldest: dict[str, float] = {}
        self._parked: set[str] = set()
        self._open: set[str] = set()  # the shops whose outage circuit is open

    def circuit_changed(self, tenant: str, state: State) -> None:
        """``connector_circuit_open`` counts the tenants whose circuit is open; the member is in an
        outage (``/readyz`` 503) only when every tenant it serves is."""
        if state is State.OPEN:
            self._open.add(tenant)
        else:
            self._open.discard(tenant)
        self._hooks.circuits_counted(OpenCircuits(len(self._open)))

    def forget_circuit(self, tenant: str) -> None:
        """``tenant`` is served no more: its circuit counts no more."""
        self._open.discard(tenant)
        self._hooks.circuits_counted(OpenCircuits(len(self._open)))

    def all_down(self, served: Mapping[str, Served]) -> bool:
        """Every shop of ``served`` has its outage circuit open: the member is in an outage."""
        return bool(self._open) and self._open.issuperset(served)

    def health(self, shop: Served) -> ShopHealth:
        """``shop``'s circuit and pace now, as parking judges it."""
        circuit, pacer = shop.deliverer.circuit, shop.pacer
        return ShopHealth(
            open_since=circuit.opened_at,
            closed=circuit.state is State.CLOSED,
            full_rate=pacer.full_rate,
            pace_factor=pacer.adaptation.factor(self._clock.wall()),
        )

    def forget_labels(self) -> None:
        """The shops served or their names changed: labels are ranked again when next asked for."""
        self._labels = {}

    def _label(self, served: Mapping[str, Served], tenant: str) -> str:
        """A tenant's metrics label: its name for the first ``tenants.metrics_limit`` tenants in name
        order (the same on every member), ``_other`` for the rest, so that series stay bounded."""
        if tenant not in self._labels:
            ranked = sorted(served.values(), key=lambda s: (s.shown, s.name))
            self._labels = {s.name: (s.shown if i < self._limit else "_other") for i, s in enumerate(ranked)}
        return self._labels[tenant]

    def prune(self, served: Mapping[str, Served]) -> None:
        """Remove the series of labels none of ``served`` has any more (a shop closed)."""
        dropped = self._drop({self._label(served, name) for name in served})
        if dropped:
            self._hooks.tenants_sampled(TenantsState(dropped=dropped))

    def _drop(self, used: set[str]) -> tuple[str, ...]:
        """The labels series were reported for that no tenant has any more (removed, or now summed
        under ``_other``, or ``_other`` itself): dropped, so that series do not grow with churn."""
        dropped = tuple(sorted(self._series - used))
        self._series = set(used) if self._many else set()
        return dropped

    def refresh(
        self,
        served: Mapping[str, Served],
        oldest: Mapping[str, float],
        parked: set[str] | None = None,
    ) -> None:
        """Per-tenant gauges and counters (many tenants only): pace, circuit, parked, 429s and the
        age of the oldest event not yet delivered (``oldest``: its record time per tenant); tenants
        past the label limit are summed (ages: the oldest) under ``_other``."""
        if not self._many:
            return
        now = self._clock.wall()
        self._parked = set(parked or ())
        pace: dict[str, float] = {}
        down: dict[str, int] = {}
        held: dict[str, int] = {}
        age: dict[str, float] = {}
        throttled: dict[str, int] = {}
        for name, shop in served.items():
            label = self._label(served, name)
            pace[label] = pace.get(label, 0.0) + (0.0 if shop.sink.refusal else shop.pacer.rate)
            down[label] = down.get(label, 0) + (name in self._open)
            held[label] = held.get(label, 0) + (name in self._parked)
            stamp = oldest.get(name)
            age[label] = max(age.get(label, 0.0), now - stamp if stamp else 0.0)
            seen = shop.deliverer.rate_limited_count
            throttled[label] = throttled.get(label, 0) + max(0, seen - shop.reported_429_before)
            shop.reported_429_before = seen
        figures = tuple(
            TenantFigures(label, value, down[label], held[label], max(0.0, age[label]), throttled[label])
            for label, value in pace.items()
        )
        self._hooks.tenants_sampled(TenantsState(figures, self._drop(set(pace))))
        self._oldest = dict(oldest)

    def rows(self, served: Mapping[str, Served]) -> list[dict[str, object]]:
        """Every tenant's state, for ``/tenants`` and ``connector tenants``: its vendor, address and
        budget, its aliases, whether it is routed (a removed one is not, until it is closed), its
        circuit, pace, 429s and oldest event not yet delivered (none with one shop)."""
        if not self._many:
            return []
        now = self._clock.wall()
        rows: list[dict[str, object]] = []
        for shop in sorted(served.values(), key=lambda s: (s.shown, s.name)):
            stamp = self._oldest.get(shop.name)
            rows.append(
                {
                    "tenant": shop.shown,
                    "kind": shop.settings.kind,
                    "base_url": shop.settings.base_url,
                    "budget_per_second": shop.settings.rate_limit_per_second,
                    "aliases": sorted(shop.aliases),
                    "routed": not shop.retiring,
                    "circuit": shop.deliverer.circuit.state.value,
                    "parked": shop.name in self._parked,
                    "pace_per_second": round(shop.pacer.rate, 3),
                    "rate_limited": shop.deliverer.rate_limited_count,
                    "jobs": shop.deliverer.pending,
                    "oldest_unsynced_s": round(now - stamp, 1) if stamp else 0.0,
                }
            )
        return rows


__all__ = ["TenantView"]
