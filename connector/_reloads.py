"""Reloads of the tenants: what a change of ``tenants.path`` does to the tenants being served.

A :class:`Reloader` owns the tenants as read from ``tenants.path`` (a
:class:`~connector.tenants.TenantDirectory`) and the loop that reads them again; it changes the shops a
member serves through a small :class:`Host` protocol (open a shop, close one, route anew), which
:class:`~connector.tenancy.Tenancy`, its owner, implements. Every ``tenants.reload_seconds``:

- **removed tenants are closed**: a removed tenant is *retiring* (routed no more; its later events are
  dead-lettered, stage ``route``). What it has in hand is still delivered for
  ``shutdown_grace_seconds``; past that, its vendor client refuses every event without sending it
  (dead-lettered as a RouteError), so a removed shop whose API is down or whose key is revoked cannot
  retry forever. Once its deliverer holds no job its workers stop, its HTTP pool closes and its metric
  series are removed. Added again later, it starts afresh (or, not yet closed, carries on);
- **then the files are read again** (:meth:`TenantDirectory.refresh`, when one changed). A reload that
  does not load, or that would remove more than ``tenants.max_removed_share`` of the tenants (or all),
  is refused: logged with the setting to change, counted in ``connector_tenants_reloads_refused_total``,
  flagged by ``connector_tenants_reload_refused``, and the tenants stay as they were. Otherwise:
- **a renamed tenant** (removed, while an added one lists its name in ``aliases``) goes on being served
  by the same deliverer, budget and circuit, under the name it had (``Served``); what it had in hand
  or parked is delivered, never dead-lettered;
- **an added tenant** starts (deliverer, client, pacer) before its first event is routed;
- **a changed tenant** gets at once, whatever else changed, its new aliases and mapping, and each field
  of its vendor account declared :attr:`Reload.IN_PLACE <connector.config.Reload.IN_PLACE>` on
  :class:`~connector.config.VendorAccount` (its key and budget), each the way :data:`APPLY` says; a
  change of the others (vendor, address, API version, mode) is logged and needs a restart (the orders
  already synced were synced with the old ones).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Protocol

from connector._served import RETIRED_BUDGET, Served
from connector.clock import Clock
from connector.config import Reload, Settings, SinkSettings, VendorAccount, reload_of
from connector.errors import ConfigError
from connector.instruments import InvalidTenants, TenantHooks, TenantsReloaded
from connector.logs import get_logger
from connector.mapping import FileMapping, FunctionMapping
from connector.tenants import Tenant, TenantChange, TenantDirectory

log = get_logger("connector.tenancy")

_AnyMapping = FileMapping | FunctionMapping


def _set_key(served: Served, account: VendorAccount) -> None:
    served.sink.set_api_key(account.api_key)


def _set_budget(served: Served, account: VendorAccount) -> None:
    if not served.sink.refusal:  # a client refusing what a removal left keeps its own pace
        served.pacer.set_budget(account.rate_limit_per_second)


APPLY: Mapping[str, Callable[[Served, VendorAccount], None]] = {
    "api_key": _set_key,
    "rate_limit_per_second": _set_budget,
}
"""How a change of each vendor-account field declared :attr:`Reload.IN_PLACE` reaches a shop being
served (``tests/test_tenancy.py`` checks that each such field has its way here)."""

_POLICY = reload_of(VendorAccount)


class Host(Protocol):
    """What a reload changes: the shops a member serves (:class:`~connector.tenancy.Tenancy`)."""

    def served(self) -> Mapping[str, Served]:
        """Every shop being served (removed ones until they are closed), by the name it is known by."""
        ...

    async def open_tenant(
        self,
        name: str,
        settings: SinkSettings,
        tenant: Tenant | None = None,
        mapping: _AnyMapping | None = None,
        *,
        index: bool = True,
    ) -> Served:
        """Start serving ``name`` with its own vendor client, pacer and deliverer (``index``: False
        when :meth:`reindex` is called once after opening many)."""
        ...

    async def close_tenant(self, served: Served) -> None:
        """Stop serving ``served``: forget it, stop its workers, close its client."""
        ...

    def reindex(self) -> None:
        """Route events by the served shops' names and aliases as they now are (and share out
        what is shared among them)."""
        ...


class Reloader:
    """The tenants of ``tenants.path``, read again every ``tenants.reload_seconds``, and what each
    change does to the shops ``host`` serves (module docstring)."""

    def __init__(self, host: Host, settings: Settings, hooks: TenantHooks, clock: Clock) -> None:
        self._host = host
        self._settings = settings
        self._hooks = hooks
        self._clock = clock
        self._directory: TenantDirectory | None = None
        self._loop: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Serve the tenants as this member starts with them (waiting for the first, see
        :meth:`_first_load`), then read them again every ``tenants.reload_seconds``."""
        self._directory = await self._first_load()
        self._report_invalid(self._directory.invalid)
        mappings = self._directory.mappings
        for name, tenant in sorted(self._directory.tenants.items()):
            await self._host.open_tenant(name, self._client(tenant), tenant, mappings.get(name), index=False)
        self._host.reindex()  # once: nothing is routed before the first load is served
        self._loop = asyncio.create_task(self._reload_loop(), name="tenants-reload")

    async def close(self) -> None:
        """Stop reading the tenants again."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def _client(self, tenant: Tenant) -> SinkSettings:
        """What ``tenant``'s vendor client runs with: its account, called as the ``sink`` section
        says. Raises ConfigError naming the tenant when its account is invalid."""
        return self._settings.sink.calling(tenant.account())

    async def _first_load(self) -> TenantDirectory:
        """The tenants as this member starts with them. A file or directory that names no shop (one
        being written, a Secret not mounted yet) is waited for, read again every
        ``tenants.reload_seconds``: starting without a shop would dead-letter every event (stage
        ``route``), and the member joins the group only once it serves some."""
        t = self._settings.tenants
        waited = False
        while True:
            directory = TenantDirectory(t.path, t.max_removed_share)
            if directory.tenants or directory.invalid:
                if waited:
                    log.info("tenants_found", tenants=len(directory.tenants), path=t.path)
                return directory
            if not waited:
                log.error(
                    "tenants_empty_at_start",
                    path=t.path,
                    action="not joining the group until tenants.path names a shop; read again every "
                    "tenants.reload_seconds",
                )
                waited = True
            await asyncio.sleep(t.reload_seconds)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.tenants.reload_seconds)
            try:
                await self.reload()
            except Exception:  # a reload must never stop the member
                log.exception("tenants_reload_crashed")

    async def reload(self) -> None:
        """Close the removed tenants that are done, then read the tenants again if a file changed
        and apply what changed (module docstring)."""
        assert self._directory is not None
        await self._sweep()
        change = self._directory.refresh()
        self._refused(change)
        standing = bool(self._directory.refused_for)
        self._hooks.tenants_reloaded(TenantsReloaded(change.refused_for if change.refused else "", standing))
        self._report_invalid(change.invalid)
        if not change:
            return
        tenants, mappings = self._directory.tenants, self._directory.mappings
        renamed = self._renames(change, tenants)
        was = {s.shown for s in renamed.values()}
        for name, served in sorted(renamed.items()):
            self._rename(served, tenants[name], mappings.get(name))
        for name in sorted(change.removed - was):
            self._retire(name)
        self._host.reindex()  # routed as it now is before anything below waits
        for name in sorted(change.added - renamed.keys()):
            await self._add(name, tenants[name], mappings.get(name))
        for name in sorted(change.changed):
            current = self._by_name(name)
            if current is None:  # its start failed: tried again
                await self._add(name, tenants[name], mappings.get(name))
            else:
                self._change(current, tenants[name], mappings.get(name))
        self._host.reindex()

    def _refused(self, change: TenantChange) -> None:
        if not change.refused:
            return
        if change.refused_for == "removal":
            log.error(
                "tenants_reload_refused",
                error=change.refused,
                setting="tenants.max_removed_share",
                action="the shops stay as they were until a reload removes fewer; if it is meant, "
                "raise tenants.max_removed_share and restart",
            )
        else:
            log.error(
                "tenants_reload_failed",
                error=change.refused,
                action="the tenants stay as they were until the files load",
            )

    def _report_invalid(self, invalid: Mapping[str, str]) -> None:
        assert self._directory is not None
        for name, error in sorted(invalid.items()):
            served = name in self._directory.tenants
            log.error(
                "tenant_invalid",
                tenant=name,
                error=error,
                action=(
                    "kept as it was until it loads"
                    if served
                    else "not served until it loads: its events are dead-lettered (stage route)"
                ),
            )
        self._hooks.invalid_tenants_counted(InvalidTenants(len(self._directory.invalid)))

    def _by_name(self, name: str) -> Served | None:
        """The tenant served as ``name`` in the tenants file (a routed one rather than a removed one)."""
        found = [s for s in self._host.served().values() if s.shown == name]
        return min(found, key=lambda s: s.retiring) if found else None

    def _renames(self, change: TenantChange, tenants: Mapping[str, Tenant]) -> dict[str, Served]:
        """Added tenants that are served ones renamed: an alias of theirs is the name of a tenant
        removed now, or removed earlier and not closed yet."""
        renamed: dict[str, Served] = {}
        for name in sorted(change.added):
            for alias in tenants[name].aliases:
                served = self._by_name(alias)
                if served is None or served in renamed.values():
                    continue
                if alias in change.removed or served.retiring:
                    renamed[name] = served
                    break
        return renamed

    def _revive(self, served: Served) -> None:
        """A removed tenant is back before it was closed: routed, and sending, again."""
        if served.sink.refusal:
            served.sink.resume()
            served.pacer.set_budget(served.settings.rate_limit_per_second)
        served.removed_at = None

    def _rename(self, served: Served, tenant: Tenant, mapping: _AnyMapping | None) -> None:
        was = served.shown
        self._revive(served)
        served.shown = tenant.name
        log.warning(
            "tenant_renamed",
            tenant=tenant.name,
            was=was,
            known_here_as=served.name,
            action="served on by the same deliverer, budget and circuit; events, parked records and "
            "dead letters naming an alias are its",
        )
        self._change(served, tenant, mapping)

    def _retire(self, name: str) -> None:
        served = self._by_name(name)
        if served is None or served.retiring:
            return
        served.removed_at = self._clock.monotonic()
        log.warning(
            "tenant_removed",
            tenant=name,
            jobs=served.deliverer.pending,
            action="routed no more (its later events are dead-lettered, stage route); what it has in "
            f"hand is delivered within shutdown_grace_seconds={self._settings.shutdown_grace_seconds:g}, "
            "else dead-lettered; then it is closed",
        )

    async def _add(self, name: str, tenant: Tenant, mapping: _AnyMapping | None) -> None:
        try:
            settings = self._client(tenant)
        except ConfigError as exc:
            log.error("tenant_invalid", tenant=name, error=str(exc))
            return
        existing = self._host.served().get(name)
        if existing is not None and existing.shown != name:
            log.error(
                "tenant_name_in_use",
                tenant=name,
                by=existing.shown,
                action=f"not served: this member still knows tenant {existing.shown} (renamed) as "
                f"{name}; restart the members to serve both",
            )
            return
        if existing is not None:  # removed, then added again before it was closed
            self._revive(existing)
            self._change(existing, tenant, mapping)
        else:
            try:
                await self._host.open_tenant(name, settings, tenant, mapping)
            except Exception:
                log.exception(
                    "tenant_start_failed", tenant=name, action="not served; retried at its next change"
                )
                return
        log.info("tenant_added", tenant=name, kind=settings.kind, rate=settings.rate_limit_per_second)

    def _change(self, served: Served, tenant: Tenant, mapping: _AnyMapping | None) -> None:
        """Apply what can change in place at once (the account's fields declared
        :attr:`Reload.IN_PLACE`, aliases, mapping); log the fields that need a restart."""
        try:
            fresh = tenant.account()
        except ConfigError as exc:
            log.error("tenant_invalid", tenant=tenant.name, error=str(exc))
            return
        differ = {
            name
            for name, how in _POLICY.items()
            if how is not Reload.DERIVED and getattr(fresh, name) != getattr(served.settings, name)
        }
        applied = {name for name in differ if _POLICY[name] is Reload.IN_PLACE}
        for name in sorted(applied):
            APPLY[name](served, fresh)
        in_place = [name for name, how in _POLICY.items() if how is Reload.IN_PLACE]
        served.settings = served.settings.model_copy(update={name: getattr(fresh, name) for name in in_place})
        if frozenset(tenant.aliases) != served.aliases:
            served.aliases = frozenset(tenant.aliases)
            applied.add("aliases")
        if mapping is not served.mapping:
            served.mapping = mapping
            applied.add("mapping")
        if differ - applied:
            log.error(
                "tenant_change_needs_restart",
                tenant=tenant.name,
                fields=sorted(differ - applied),
                applied=sorted(applied),
                action="those fields are kept as they were: restart the members to apply them",
            )
        if applied:
            log.info("tenant_changed", tenant=tenant.name, fields=sorted(applied))

    async def _sweep(self) -> None:
        """Removed tenants: close those with nothing in hand; refuse what those past their grace
        still hold (module docstring)."""
        grace = self._settings.shutdown_grace_seconds
        now = self._clock.monotonic()
        for served in list(self._host.served().values()):
            if served.removed_at is None:
                continue
            if served.deliverer.pending == 0:
                await self._host.close_tenant(served)
                log.info("tenant_closed", tenant=served.shown, action="workers stopped, client closed")
            elif not served.sink.refusal and now - served.removed_at >= grace:
                served.sink.refuse(
                    f"tenant {served.shown} was removed from tenants.path and this event was not "
                    f"delivered within shutdown_grace_seconds={grace:g}; replay with `connector dlq "
                    f"redrive --tenant {served.shown}` once it is served again"
                )
                served.pacer.set_budget(RETIRED_BUDGET)
                log.warning(
                    "tenant_retired",
                    tenant=served.shown,
                    jobs=served.deliverer.pending,
                    action="what it still has in hand is dead-lettered without calling its API",
                )


__all__ = ["APPLY", "Host", "Reloader"]
