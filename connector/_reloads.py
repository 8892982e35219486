"""Reloads of the tenants: what a change of ``tenants.path`` does to the tenants being served.

Kept apart from routing and delivery (``tenancy.py``) so that each reads on its own;
:class:`~connector.tenancy.Tenancy` is the one class built from both, and these methods use its state
(declared below). Every ``tenants.reload_seconds``:

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
- **a changed tenant** gets its new key, budget, aliases and mapping at once, whatever else changed;
  a change of vendor, address, API version or mode is logged and needs a restart (the orders already
  synced were synced with the old ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from connector._served import RETIRED_BUDGET, Served
from connector.clock import Clock
from connector.config import Settings, SinkSettings
from connector.errors import ConfigError
from connector.logs import get_logger
from connector.mapping import FileMapping, FunctionMapping
from connector.metrics import Metrics
from connector.tenants import Tenant, TenantChange, TenantDirectory

log = get_logger("connector.tenancy")

_IN_PLACE = frozenset({"api_key", "rate_limit_per_second"})
_AnyMapping = FileMapping | FunctionMapping


class Reloads:
    """What a reload of the tenants does (see the module docstring)."""

    _settings: Settings
    _metrics: Metrics
    _clock: Clock
    _served: dict[str, Served]
    _directory: TenantDirectory | None

    async def _start(
        self,
        name: str,
        settings: SinkSettings,
        tenant: Tenant | None = None,
        mapping: _AnyMapping | None = None,
    ) -> Served:
        raise NotImplementedError

    async def _close(self, served: Served) -> None:
        raise NotImplementedError

    def _reindex(self) -> None:
        raise NotImplementedError

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
        self._metrics.tenants_reload_refused.set(1 if self._directory.refused_for else 0)
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
        self._reindex()  # routed as it now is before anything below waits
        for name in sorted(change.added - renamed.keys()):
            await self._add(name, tenants[name], mappings.get(name))
        for name in sorted(change.changed):
            current = self._by_name(name)
            if current is None:  # its start failed: tried again
                await self._add(name, tenants[name], mappings.get(name))
            else:
                self._change(current, tenants[name], mappings.get(name))
        self._reindex()

    def _refused(self, change: TenantChange) -> None:
        if not change.refused:
            return
        self._metrics.tenants_reloads_refused.labels(change.refused_for).inc()
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
        self._metrics.tenants_invalid.set(len(self._directory.invalid))

    def _by_name(self, name: str) -> Served | None:
        """The tenant served as ``name`` in the tenants file (a routed one rather than a removed one)."""
        found = [s for s in self._served.values() if s.shown == name]
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
            settings = tenant.sink_settings(self._settings.sink)
        except ConfigError as exc:
            log.error("tenant_invalid", tenant=name, error=str(exc))
            return
        existing = self._served.get(name)
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
                await self._start(name, settings, tenant, mapping)
            except Exception:
                log.exception(
                    "tenant_start_failed", tenant=name, action="not served; retried at its next change"
                )
                return
        log.info("tenant_added", tenant=name, kind=settings.kind, rate=settings.rate_limit_per_second)

    def _change(self, served: Served, tenant: Tenant, mapping: _AnyMapping | None) -> None:
        """Apply what can change in place (key, budget, aliases, mapping) at once; log the rest."""
        try:
            fresh = tenant.sink_settings(self._settings.sink)
        except ConfigError as exc:
            log.error("tenant_invalid", tenant=tenant.name, error=str(exc))
            return
        old, new = served.settings.model_dump(), fresh.model_dump()
        differ = {k for k in new if new[k] != old[k]} - {"max_in_flight"}
        if served.settings.api_key.get_secret_value() != fresh.api_key.get_secret_value():
            differ.add("api_key")
        applied = differ & _IN_PLACE
        if "api_key" in differ:
            served.sink.set_api_key(fresh.api_key)
        if "rate_limit_per_second" in differ and not served.sink.refusal:
            served.pacer.set_budget(fresh.rate_limit_per_second)
        served.settings = served.settings.model_copy(
            update={"api_key": fresh.api_key, "rate_limit_per_second": fresh.rate_limit_per_second}
        )
        if frozenset(tenant.aliases) != served.aliases:
            served.aliases = frozenset(tenant.aliases)
            applied.add("aliases")
        if mapping is not served.mapping:
            served.mapping = mapping
            applied.add("mapping")
        if differ - _IN_PLACE:
            log.error(
                "tenant_change_needs_restart",
                tenant=tenant.name,
                fields=sorted(differ - _IN_PLACE),
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
        for served in list(self._served.values()):
            if served.removed_at is None:
                continue
            if served.deliverer.pending == 0:
                await self._close(served)
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


__all__ = ["Reloads"]
