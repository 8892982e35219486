"""Tenants: the shops one deployment serves, each with its own vendor, address, secret and budget.

A *tenant* is a vendor account (:class:`~connector.config.VendorAccount`): a vendor kind, a base URL
(or, for Shoplazza, a shop domain), an API key and a budget, plus an optional API version, mode and
``max_in_flight``. How its client calls (``sink.timeout_seconds``, ``sink.cache_size``) and how its
changes are delivered (the ``delivery`` section: retries, circuit, linger) are the deployment's.

Where tenants come from (``tenants.path``):

- a file (TOML, or JSON when it starts with ``{``) holding one table per tenant, named by the table::

      [acme]
      kind = "shoplazza"
      shop = "acme"                 # https://acme.myshoplaza.com
      api_key = "..."
      rate_limit_per_second = 2

- or a directory with one file per tenant, the file name being the tenant's name (extension
  ``.toml`` / ``.json`` dropped; names starting with ``.`` skipped): the layout of a Kubernetes Secret
  mounted as a volume, one key per tenant.

A tenant may list ``aliases``, the names it was known by before (``aliases = ["old-name"]``): events
naming one, and what was parked or dead-lettered under one, belong to it. Names and aliases follow one
rule and are unique across the tenants.

:class:`TenantDirectory` reads them, and reads them again when a file changes (``refresh``), a tenant's
mapping file included. Each tenant loads on its own: one that does not (a field, its API version, its
mapping) is reported with its file and field and kept as it was, or not added, while the others load;
a file that does not parse, or a name given twice, keeps every tenant as it was. A reload that would
remove more than ``tenants.max_removed_share`` of the tenants, or all of them, is refused: an empty
directory or a half-written file is not an intent. A tenant's mapping is compiled when it loads, and
that object is used until the mapping (or its file) changes. Keys are :class:`~pydantic.SecretStr`:
never logged, masked when shown. Without ``tenants.path`` the deployment has one tenant,
:data:`DEFAULT_TENANT`, the ``sink`` section's account: single-shop settings work as before.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from connector.config import MappingSettings, Settings, VendorAccount
from connector.errors import ConfigError
from connector.vendors import VENDORS, Mode, shop_kinds, vendor

if TYPE_CHECKING:
    from connector.mapping import FileMapping, FunctionMapping

DEFAULT_TENANT = "default"
"""The one tenant of a deployment without ``tenants.path``: the ``sink`` section itself."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TenantMapping(BaseModel):
    """A tenant's own mapping (``[acme.mapping]``), instead of the deployment's ``mapping`` section:
    a file of JMESPath expressions or a Python function; the envelope stays the deployment's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = ""
    function: str = ""

    @model_validator(mode="after")
    def _one(self) -> TenantMapping:
        if bool(self.file) == bool(self.function):
            raise ValueError("mapping: give file or function (one of them)")
        if self.function:
            MappingSettings(function=self.function)  # the same import-path rule
        return self


class Tenant(BaseModel):
    """One shop (or merchant account) the deployment syncs orders into."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str = "loop"
    base_url: str = ""
    shop: str = ""
    api_key: SecretStr
    rate_limit_per_second: float = Field(0.0, ge=0)
    max_in_flight: int = Field(0, ge=0)
    api_version: str = ""
    mode: Mode = "upsert"
    mapping: TenantMapping | None = None
    aliases: tuple[str, ...] = ()
    """Names this tenant was known by: events, parked records and dead letters naming one are its."""

    @model_validator(mode="after")
    def _consistent(self) -> Tenant:
        rule = "1 to 64 of letters, digits, '.', '_' and '-', starting with a letter or digit"
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: {rule}")
        for alias in self.aliases:
            if not _NAME.fullmatch(alias):
                raise ValueError(f"aliases: {alias!r}: {rule}")
        if self.name in self.aliases or len(set(self.aliases)) != len(self.aliases):
            raise ValueError("aliases: each once, and not the tenant's own name")
        if self.kind not in VENDORS:
            raise ValueError(f"kind: must be one of {', '.join(sorted(VENDORS))}")
        if not self.api_key.get_secret_value():
            raise ValueError("api_key: must not be empty")
        by_shop = " or ".join(shop_kinds())
        if self.shop:
            shop_rule = vendor(self.kind).shop
            if shop_rule is None:
                only = f"only for kind {by_shop}" if by_shop else "no vendor has stores named so"
                raise ValueError(f"shop: {only} (give base_url for other vendors)")
            if self.base_url:
                raise ValueError("give shop or base_url, not both")
            shop_rule.check(self.shop)
        elif not self.base_url:
            raise ValueError("base_url: required" + (f" (or shop, for kind {by_shop})" if by_shop else ""))
        return self

    @property
    def url(self) -> str:
        """The API root this tenant's requests go to."""
        rule = vendor(self.kind).shop if self.shop else None
        return rule.url(self.shop) if rule is not None else self.base_url

    def account(self) -> VendorAccount:
        """This tenant's vendor account: its vendor, address, key, budget, version and mode, with the
        vendor's defaults for what it leaves out. Raises ConfigError naming the tenant when the
        combination is invalid (an API version the vendor does not have, say)."""
        try:
            return VendorAccount(
                kind=self.kind,
                base_url=self.url,
                api_key=self.api_key,
                rate_limit_per_second=self.rate_limit_per_second,
                max_in_flight=self.max_in_flight,
                api_version=self.api_version,
                mode=self.mode,
            )
        except ValidationError as exc:
            raise ConfigError(f"tenant {self.name}: {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    text = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {text}" if where else text


def _parse(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not TOML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings")
    return data


Stamp = tuple[int, int] | None
"""A mapping file's modification time and size (None: it cannot be read)."""


def _stamp(file: str) -> Stamp:
    try:
        stat = Path(file).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _tenant(name: str, fields: Any, where: str, check: bool) -> Tenant:
    """One tenant's definition checked (with ``check``: as the vendor account it makes, too)."""
    if not isinstance(fields, dict):
        raise ConfigError(f"{where}: tenant {name}: expected a table of settings")
    if "name" in fields and fields["name"] != name:
        raise ConfigError(f"{where}: tenant {name}: name {fields['name']!r} differs from {name!r}")
    try:
        tenant = Tenant.model_validate({**fields, "name": name})
    except ValidationError as exc:
        raise ConfigError(f"{where}: tenant {name}: {_first_problem(exc)}") from None
    if check:
        try:
            tenant.account()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tenant


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


def _definitions(root: Path) -> dict[str, tuple[Any, str]]:
    """Every tenant's fields under ``root``, with the file they are in. Raises ConfigError when a
    file does not parse or a tenant is defined twice: nothing of such a change can be trusted."""
    if not root.exists():
        raise ConfigError(f"tenants.path {root}: no such file or directory")
    found: dict[str, tuple[Any, str]] = {}
    for file in _files(root):
        data = _parse(file)
        if root.is_dir():
            entries: Mapping[str, Any] = {file.name.removesuffix(".toml").removesuffix(".json"): data}
        else:
            entries = data
        for name, fields in entries.items():
            if name in found:
                raise ConfigError(f"{file}: tenant {name} is defined twice")
            found[name] = (fields, str(file))
    return found


def _unique(tenants: Mapping[str, Tenant], where: Mapping[str, str]) -> None:
    """Raises ConfigError when an alias is another tenant's name, or two tenants' alias: which
    tenant an event naming it is for would be a guess."""
    owner: dict[str, str] = {}
    for name in sorted(tenants):
        for alias in tenants[name].aliases:
            if alias in tenants:
                what = f"the name of tenant {alias}"
            elif alias in owner:
                what = f"an alias of tenant {owner[alias]}"
            else:
                owner[alias] = name
                continue
            raise ConfigError(f"{where.get(name, '?')}: tenant {name}: aliases: {alias!r} is already {what}")


class _Mappings:
    """Tenants' mappings, each compiled once: again only when its file, or which it is, changed."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str], tuple[Stamp, FileMapping | FunctionMapping]] = {}

    def load(self, spec: TenantMapping) -> FileMapping | FunctionMapping:
        """The compiled mapping ``spec`` names; ConfigError naming the file or function and field."""
        from connector.mapping import FileMapping, FunctionMapping

        key, stamp = (spec.file, spec.function), _stamp(spec.file) if spec.file else None
        known = self._compiled.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            mapping = FileMapping(spec.file) if spec.file else FunctionMapping(spec.function)
        except ConfigError:
            raise
        except Exception as exc:  # a mapping module that fails to import, say: this tenant's fault
            raise ConfigError(f"mapping {spec.file or spec.function}: {type(exc).__name__}: {exc}") from None
        self._compiled[key] = (stamp, mapping)
        return mapping

    def keep(self, specs: Iterable[TenantMapping]) -> None:
        """Forget the mappings no tenant names any more."""
        wanted = {(m.file, m.function) for m in specs}
        self._compiled = {k: v for k, v in self._compiled.items() if k in wanted}


@dataclass(slots=True)
class _Load:
    """One reading of ``tenants.path``: the tenants that loaded, with their mappings and files, and
    the error of each one that did not."""

    tenants: dict[str, Tenant]
    mappings: dict[str, FileMapping | FunctionMapping]
    where: dict[str, str]
    invalid: dict[str, str]
    watched: tuple[str, ...]  # mapping files named, whether their tenant loaded or not


def _load(root: Path, check: bool, mappings: _Mappings | None) -> _Load:
    """Every tenant under ``root`` that loads, each on its own (``check``: its vendor account too;
    ``mappings``: compile theirs)."""
    loaded = _Load({}, {}, {}, {}, ())
    watched: set[str] = set()
    for name, (fields, where) in _definitions(root).items():
        loaded.where[name] = where
        try:
            tenant = _tenant(name, fields, where, check)
            if tenant.mapping is not None and tenant.mapping.file:
                watched.add(tenant.mapping.file)
            if tenant.mapping is not None and mappings is not None:
                try:
                    loaded.mappings[name] = mappings.load(tenant.mapping)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: tenant {name}: {exc}") from None
        except ConfigError as exc:
            loaded.invalid[name] = str(exc)
            continue
        loaded.tenants[name] = tenant
    loaded.watched = tuple(sorted(watched))
    return loaded


def load_tenants(path: str | Path) -> dict[str, Tenant]:
    """Every tenant under ``path`` (a file of tables, or a directory of one file per tenant), by
    name, vendor accounts and mappings checked. Raises ConfigError naming the file, the tenant and
    the field that is wrong, for the first tenant (by name) that does not load."""
    loaded = _load(Path(path), True, _Mappings())
    if loaded.invalid:
        raise ConfigError(loaded.invalid[min(loaded.invalid)])
    _unique(loaded.tenants, loaded.where)
    return loaded.tenants


def with_aliases(path: str | Path, names: Iterable[str]) -> set[str]:
    """``names`` and every name the tenants they name go by (its name and aliases): what a dead
    letter of one of them may carry in ``__connector.tenant``. Names of no tenant stay as given."""
    tenants = _load(Path(path), False, None).tenants
    owner = {n: t for t in tenants.values() for n in (t.name, *t.aliases)}
    out: set[str] = set()
    for name in names:
        tenant = owner.get(name)
        out |= {tenant.name, *tenant.aliases} if tenant is not None else {name}
    return out


@dataclass(frozen=True, slots=True)
class TenantChange:
    """What a reload changed: tenant names added, removed, and changed (any field, the key too, or
    its mapping file); the tenants whose definition did not load (each kept as it was, or not
    added); and, when nothing was applied, why (``refused``, ``refused_for``: load or removal)."""

    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    invalid: Mapping[str, str] = field(default_factory=dict)
    refused: str = ""
    refused_for: Literal["", "load", "removal"] = ""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class TenantDirectory:
    """The tenants of ``path``, read again by :meth:`refresh` when any file under it, or a mapping
    file one names, changed; each tenant's vendor account checked. ``max_removed_share``:
    ``tenants.max_removed_share``."""

    def __init__(self, path: str | Path, max_removed_share: float = 0.5) -> None:
        self.path = Path(path)
        self._share = max_removed_share
        self._mappings = _Mappings()
        loaded = _load(self.path, True, self._mappings)
        _unique(loaded.tenants, loaded.where)
        self.tenants: dict[str, Tenant] = loaded.tenants
        self.mappings: dict[str, FileMapping | FunctionMapping] = loaded.mappings
        """Each tenant's own mapping, compiled when it loaded (tenants without one: absent)."""
        self.invalid: dict[str, str] = loaded.invalid
        """The tenants whose definition on disk does not load, with the reason."""
        self._stamps = self._mapping_stamps()
        self._watched = loaded.watched
        self._seen = self._signature(self._watched)
        self.last_error: str | None = "; ".join(self.invalid.values()) or None
        self.refused_for: Literal["", "load", "removal"] = ""
        """Why the tenants on disk are not applied ("": they are)."""

    def _signature(self, watched: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
        try:
            files = [*_files(self.path), *(Path(f) for f in watched)]
            stats = [(str(f), f.stat()) for f in files if f.exists()]
            return tuple((name, st.st_mtime_ns, st.st_size) for name, st in stats)
        except OSError:
            return ()

    def _mapping_stamps(self) -> dict[str, Stamp]:
        return {n: _stamp(t.mapping.file) for n, t in self.tenants.items() if t.mapping and t.mapping.file}

    def _refuse(self, why: Literal["load", "removal"], error: str) -> TenantChange:
        self.last_error, self.refused_for = error, why
        return TenantChange(refused=error, refused_for=why)

    def refresh(self) -> TenantChange:
        """Read the tenants again if a file changed; what changed (see the module docstring). A
        change that is refused keeps every tenant as it was and sets :attr:`last_error` (cleared by
        the next reload that applies); a tenant that does not load is kept as it was."""
        seen = self._signature(self._watched)
        if seen == self._seen:
            return TenantChange()
        self._seen = seen  # reported once per change, not on every poll
        try:
            loaded = _load(self.path, True, self._mappings)
        except (ConfigError, OSError) as exc:
            return self._refuse("load", str(exc))
        fresh, mappings = loaded.tenants, loaded.mappings
        for name in loaded.invalid.keys() & self.tenants.keys():  # kept as it was
            fresh[name] = self.tenants[name]
            if name in self.mappings:
                mappings[name] = self.mappings[name]
        try:
            _unique(fresh, loaded.where)
        except ConfigError as exc:
            return self._refuse("load", str(exc))
        old = self.tenants
        aliases = {a for t in fresh.values() for a in t.aliases}
        gone = sorted(n for n in old.keys() - fresh.keys() if n not in aliases)
        if old and (not fresh or len(gone) > self._share * len(old)):
            shown = ", ".join(gone[:10]) + (", ..." if len(gone) > 10 else "")
            why = "would leave no shop" if not fresh else (
                f"would remove {len(gone)} of the {len(old)} shops ({shown}), more than "
                f"tenants.max_removed_share={self._share:g}"
            )  # fmt: skip
            return self._refuse(
                "removal",
                f"{self.path}: {why}: refused, the shops stay as they were. If it is meant, remove "
                "fewer at a time, or raise tenants.max_removed_share and restart",
            )
        stamps_before = self._stamps
        self.tenants, self.mappings, self.invalid = fresh, mappings, loaded.invalid
        self._stamps = self._mapping_stamps()
        self._mappings.keep(t.mapping for t in fresh.values() if t.mapping is not None)
        if loaded.watched != self._watched:
            self._watched = loaded.watched
            self._seen = self._signature(self._watched)
        self.last_error, self.refused_for = "; ".join(self.invalid.values()) or None, ""
        return TenantChange(
            added=frozenset(fresh.keys() - old.keys()),
            removed=frozenset(old.keys() - fresh.keys()),
            changed=frozenset(
                n
                for n in fresh.keys() & old.keys()
                if n not in loaded.invalid
                and (
                    _comparable(fresh[n]) != _comparable(old[n])
                    or self._stamps.get(n) != stamps_before.get(n)
                )
            ),
            invalid=dict(loaded.invalid),
        )


COLUMNS = ("tenant", "kind", "base_url", "budget_per_second", "circuit", "parked", "pace_per_second",
           "rate_limited", "jobs", "oldest_unsynced_s")  # fmt: skip


def listing(settings: Settings, url: str, timeout: float = 3.0) -> tuple[list[dict[str, object]], str]:
    """``connector tenants``: every configured tenant (keys never shown), with the live state a
    running member at ``url`` reports on ``/tenants`` (circuit, parked, pace, 429s, jobs, oldest event
    not yet delivered); and a note saying where the state came from."""
    configured: dict[str, VendorAccount] = {DEFAULT_TENANT: settings.sink}
    if settings.tenants.path:
        configured = {n: t.account() for n, t in load_tenants(settings.tenants.path).items()}
    try:
        reply = httpx.get(f"{url.rstrip('/')}/tenants", timeout=timeout)
        reply.raise_for_status()
        live = {str(row["tenant"]): row for row in reply.json()["tenants"]}
        note = f"state from the member at {url}"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        live, note = {}, f"no member answered at {url} ({type(exc).__name__}): configuration only"
    rows: list[dict[str, object]] = []
    for name, account in sorted(configured.items()):
        row: dict[str, object] = {
            "tenant": name,
            "kind": account.kind,
            "base_url": account.base_url,
            "budget_per_second": account.rate_limit_per_second,
        }
        state = live.get(name, {})
        for column in COLUMNS[4:]:
            row[column] = state.get(column, "-")
        rows.append(row)
    return rows, note


def _comparable(tenant: Tenant) -> tuple[Any, ...]:
    return (*tenant.model_dump(exclude={"api_key"}).values(), tenant.api_key.get_secret_value())


__all__ = [
    "DEFAULT_TENANT",
    "Tenant",
    "TenantChange",
    "TenantDirectory",
    "TenantMapping",
    "listing",
    "load_tenants",
    "with_aliases",
]
