"""Tenants: the shops one deployment serves, each with its own vendor, address, secret and budget.

A *tenant* is a vendor kind, a base URL (or, for Shoplazza, a shop domain), an API key and a budget,
plus an optional API version and mode: everything of ``sink`` that differs per shop. Every other sink
setting (timeouts, retries, circuit, linger) is the deployment's, from the ``sink`` section.

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

:class:`TenantDirectory` reads them, and reads them again when a file changes (``refresh``); a change
that does not parse keeps the tenants as they were and says which file and field is wrong. Keys are
:class:`~pydantic.SecretStr`: never logged, masked when shown. Without ``tenants.path`` the deployment
has one tenant, :data:`DEFAULT_TENANT`, made of the ``sink`` section: single-shop settings work as
before.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from connector.config import MappingSettings, Settings, SinkSettings
from connector.errors import ConfigError
from connector.vendors import VENDORS

DEFAULT_TENANT = "default"
"""The one tenant of a deployment without ``tenants.path``: the ``sink`` section itself."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHOP = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


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
    mode: Literal["upsert", "create_update"] = "upsert"
    mapping: TenantMapping | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Tenant:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r}: 1 to 64 of letters, digits, '.', '_' and '-', starting with a "
                "letter or digit"
            )
        if self.kind not in VENDORS:
            raise ValueError(f"kind: must be one of {', '.join(sorted(VENDORS))}")
        if not self.api_key.get_secret_value():
            raise ValueError("api_key: must not be empty")
        if self.shop:
            if self.kind != "shoplazza":
                raise ValueError("shop: only for kind shoplazza (give base_url for other vendors)")
            if self.base_url:
                raise ValueError("give shop or base_url, not both")
            if not _SHOP.fullmatch(self.shop.removesuffix(".myshoplaza.com")):
                raise ValueError(f"shop {self.shop!r}: a Shoplazza store name such as 'acme'")
        elif not self.base_url:
            raise ValueError("base_url: required (or shop, for kind shoplazza)")
        return self

    @property
    def url(self) -> str:
        """The API root this tenant's requests go to."""
        if self.shop:
            return f"https://{self.shop.removesuffix('.myshoplaza.com')}.myshoplaza.com"
        return self.base_url

    def sink_settings(self, base: SinkSettings) -> SinkSettings:
        """The deployment's ``sink`` section with this tenant's vendor, address, key, budget, version
        and mode: what this tenant's sink, pacer and circuit run with. Raises ConfigError naming the
        tenant when the combination is invalid (an API version the vendor does not have, say)."""
        data = base.model_dump()
        data.update(
            kind=self.kind,
            base_url=self.url,
            api_key=self.api_key,
            rate_limit_per_second=self.rate_limit_per_second,
            max_in_flight=self.max_in_flight,
            api_version=self.api_version,
            mode=self.mode,
        )
        try:
            return SinkSettings.model_validate(data)
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


def _tenant(name: str, fields: Any, where: str) -> Tenant:
    if not isinstance(fields, dict):
        raise ConfigError(f"{where}: tenant {name}: expected a table of settings")
    if "name" in fields and fields["name"] != name:
        raise ConfigError(f"{where}: tenant {name}: name {fields['name']!r} differs from {name!r}")
    try:
        tenant = Tenant.model_validate({**fields, "name": name})
    except ValidationError as exc:
        raise ConfigError(f"{where}: tenant {name}: {_first_problem(exc)}") from None
    if tenant.mapping is not None:
        from connector.mapping import compile_mapping

        try:
            compile_mapping(tenant.mapping.file, tenant.mapping.function)
        except ConfigError as exc:
            raise ConfigError(f"{where}: tenant {name}: {exc}") from None
    return tenant


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


def load_tenants(path: str | Path) -> dict[str, Tenant]:
    """Every tenant under ``path`` (a file of tables, or a directory of one file per tenant), by
    name. Raises ConfigError naming the file, the tenant and the field that is wrong."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"tenants.path {root}: no such file or directory")
    tenants: dict[str, Tenant] = {}
    for file in _files(root):
        data = _parse(file)
        if root.is_dir():
            entries: Mapping[str, Any] = {file.name.removesuffix(".toml").removesuffix(".json"): data}
        else:
            entries = data
        for name, fields in entries.items():
            if name in tenants:
                raise ConfigError(f"{file}: tenant {name} is defined twice")
            tenants[name] = _tenant(name, fields, str(file))
    return tenants


@dataclass(frozen=True, slots=True)
class TenantChange:
    """What a reload changed: tenant names added, removed, and changed (any field, the key too)."""

    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class TenantDirectory:
    """The tenants of ``path``, read again by :meth:`refresh` when any file under it changed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tenants: dict[str, Tenant] = load_tenants(self.path)
        self._seen = self._signature()
        self.last_error: str | None = None

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = _files(self.path)
            return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        except OSError:
            return ()

    def refresh(self) -> TenantChange:
        """Read the tenants again if a file changed; what changed. A change that does not load keeps
        the tenants as they were and sets :attr:`last_error` (cleared by the next good load)."""
        seen = self._signature()
        if seen == self._seen:
            return TenantChange()
        try:
            fresh = load_tenants(self.path)
        except (ConfigError, OSError) as exc:
            self.last_error = str(exc)
            self._seen = seen  # reported once per change, not on every poll
            return TenantChange()
        self._seen, self.last_error = seen, None
        old, self.tenants = self.tenants, fresh
        return TenantChange(
            added=frozenset(fresh.keys() - old.keys()),
            removed=frozenset(old.keys() - fresh.keys()),
            changed=frozenset(
                n for n in fresh.keys() & old.keys() if _comparable(fresh[n]) != _comparable(old[n])
            ),
        )


COLUMNS = ("tenant", "kind", "base_url", "budget_per_second", "circuit", "parked", "pace_per_second",
           "rate_limited", "jobs", "oldest_unsynced_s")  # fmt: skip


def listing(settings: Settings, url: str, timeout: float = 3.0) -> tuple[list[dict[str, object]], str]:
    """``connector tenants``: every configured tenant (keys never shown), with the live state a
    running member at ``url`` reports on ``/tenants`` (circuit, parked, pace, 429s, jobs, oldest event
    not yet delivered); and a note saying where the state came from."""
    if settings.tenants.path:
        configured = {
            n: t.sink_settings(settings.sink) for n, t in load_tenants(settings.tenants.path).items()
        }
    else:
        configured = {DEFAULT_TENANT: settings.sink}
    try:
        reply = httpx.get(f"{url.rstrip('/')}/tenants", timeout=timeout)
        reply.raise_for_status()
        live = {str(row["tenant"]): row for row in reply.json()["tenants"]}
        note = f"state from the member at {url}"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        live, note = {}, f"no member answered at {url} ({type(exc).__name__}): configuration only"
    rows: list[dict[str, object]] = []
    for name, sink in sorted(configured.items()):
        row: dict[str, object] = {
            "tenant": name,
            "kind": sink.kind,
            "base_url": sink.base_url,
            "budget_per_second": sink.rate_limit_per_second,
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
]
