"""Which shop served each record goes to (many shops): the route, the names it answers to, deletes.

:class:`Router` is the routing index of :class:`~connector.tenancy.Tenancy`, kept apart from the
shops' lifecycle because it is a job of its own with its own state: the names an event may give (a
routed shop's name in the tenants file and its ``aliases``) and the tenant each is, every name a shop
was ever known by while served (:meth:`Router.canonical`: parked records and commit metadata written
under an old name), and the shop last seen per record key (``_lastseen.py``), which routes a delete
that names none. The tenancy opens and closes the shops and calls :meth:`Router.reindex` with the
shops served whenever they (or their names) change; the router holds what it was last given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector._lastseen import LastSeen, is_delete
from connector._served import Served
from connector.config import Settings
from connector.errors import RouteError
from connector.logs import get_logger
from connector.mapping import FileMapping, FunctionMapping
from connector.route import Route
from connector.structs import Record
from connector.vendors import Target, target

log = get_logger("connector.tenancy")


class Router:
    """The served shop each record is for, by ``tenants.route`` (None: one shop, nothing routed),
    its name or an alias, or for a delete naming none, the shop its key was last routed to."""

    def __init__(self, route: Route | None, remember_keys: int) -> None:
        self.route = route
        self._served: dict[str, Served] = {}  # the shops served, by who they are (as last reindexed)
        self._routes: dict[str, str] = {}  # a name events may give -> the routed tenant it is
        self._canonical: dict[str, str] = {}  # any name of a served tenant -> the tenant
        self._last_seen = LastSeen(remember_keys)

    def reindex(self, served: Mapping[str, Served]) -> None:
        """Which names route to which tenant: a routed tenant's name and aliases; for parked records
        and commit metadata (:meth:`canonical`), a removed one's too, and every tenant's own name."""
        self._served = dict(served)
        self._routes, self._canonical = {}, {}
        for shop in sorted(served.values(), key=lambda s: not s.retiring):  # routed ones last
            for name in shop.names:
                self._canonical[name] = shop.name
            if not shop.retiring:
                for name in (shop.shown, *shop.aliases):
                    self._routes[name] = shop.name
        for shop in served.values():
            self._canonical[shop.name] = shop.name

    def locate(self, record: Record, data: Any) -> tuple[str, Target]:
        """The tenant ``record`` belongs to (the one its name, or an alias, is of), and its vendor
        and API version; a RouteError when the record names none, or one this deployment does not
        serve."""
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

    def mapping_of(self, tenant: str) -> FileMapping | FunctionMapping | None:
        """The tenant's own mapping, as compiled when its definition loaded; None: the deployment's
        applies."""
        served = self._served.get(tenant)
        return served.mapping if served is not None else None

    def canonical(self, name: str) -> str:
        """The tenant a name written earlier (a parked record's tenant, a commit's parked shops) is
        now: itself, or the tenant that has it as an alias (renamed since). Unknown names as given."""
        return self._canonical.get(name, name)

    def warn_unroutable_deletes(self, settings: Settings) -> None:
        """Say at start when deletes naming no shop cannot be routed by their key's last shop
        (``connector/_lastseen.py``): with ``field:`` or ``header:`` routing, tombstones and Debezium
        deletes at the default replica identity name none."""
        assert self.route is not None
        if self.route.source == "topic" or settings.delivery.on_delete == "ignore":
            return
        kafka = settings.kafka
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


__all__ = ["Router"]
