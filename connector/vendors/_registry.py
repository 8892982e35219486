"""The registry: what the rest of the code knows of a vendor (:class:`Vendor`), and the vendor plus API
version an order is checked against and sent to (:class:`Target`).

Each vendor's module (``connector/vendors/loop.py``, ``shoplazza.py``) defines its client class and
its entry, and :func:`register`\\ s the entry when imported. ``config``, ``tenants``, ``decode``, the
mapping stage and the sandbox read entries instead of comparing ``kind`` strings. This module imports
no vendor, and nothing above the vendors' shared HTTP plumbing (``connector/sinks/``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import httpx
from pydantic import BaseModel, PlainValidator
from pydantic_core import PydanticCustomError

from connector.pacing import Pacer
from connector.sinks import Sink, SinkOptions


class SinkClass(Protocol):
    """A vendor's client class: made from the settings, an HTTP transport and the pacer every request
    waits on."""

    def __call__(
        self,
        settings: SinkOptions,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: Pacer | None = None,
    ) -> Sink: ...


@dataclass(frozen=True, slots=True)
class ShopRule:
    """A vendor whose tenants may name their store (``shop``) instead of giving a base URL: the store
    ``acme`` (or ``acme.{domain}``) is served at ``https://acme.{domain}``."""

    domain: str
    pattern: re.Pattern[str]
    """What a store name must match (without the domain)."""
    hint: str
    """What a store name is, for the error naming a bad one, e.g. ``a Shoplazza store name such as
    'acme'``."""

    def store(self, shop: str) -> str:
        """The store name of ``shop`` (given with or without the domain)."""
        return shop.removesuffix(f".{self.domain}")

    def check(self, shop: str) -> None:
        """ValueError naming ``shop`` when it is no store name."""
        if not self.pattern.fullmatch(self.store(shop)):
            raise ValueError(f"shop {shop!r}: {self.hint}")

    def url(self, shop: str) -> str:
        """The API root of the store ``shop``."""
        return f"https://{self.store(shop)}.{self.domain}"


@dataclass(frozen=True, slots=True)
class Vendor:
    """One vendor's Orders API, as the connector uses it."""

    kind: str
    """Its name in settings (``sink.kind``, a tenant's ``kind``)."""
    api_versions: tuple[str, ...]
    """The API versions the connector sends to; the first is the default."""
    default_rate_per_second: float
    auth_header: str
    path: str
    """The API's path prefix; ``{version}`` is replaced by the API version."""
    models: Mapping[str, type[BaseModel]]
    """The order model per API version; ``""`` is the model of every version not listed."""
    order_key: Callable[[Mapping[str, Any]], str | None]
    """The key an event's order is coalesced by, or None when the order names none."""
    key_field: str
    key_rule: str
    keyed_by_record: bool
    """Whether the Kafka record key, when set, names the order (an order may be named by ``id`` in
    one event and by ``number`` in another: only the producer's key says they are one order)."""
    sink: SinkClass
    """The vendor's client class."""
    modes: tuple[str, ...] = ("upsert",)
    shop: ShopRule | None = None
    """How a tenant names its store instead of a base URL; None: it gives ``base_url``."""
    other_versions: tuple[str, ...] = ()
    """API versions the vendor serves that the connector does not send to (its sandbox serves them)."""

    def model(self, api_version: str = "") -> type[BaseModel]:
        """The model an event's order must satisfy for ``api_version``."""
        return self.models.get(api_version) or self.models[""]

    def base_path(self, api_version: str) -> str:
        """The API's path prefix for ``api_version``, e.g. ``/api/v1``."""
        return self.path.format(version=api_version)

    @property
    def prefix(self) -> str:
        """The first segment of the API's paths (``api`` for ``/api/{version}``)."""
        return self.path.split("/")[1]


@dataclass(frozen=True, slots=True)
class Target:
    """What an order is checked against and sent to: a vendor and its API version (``""``, or a
    version the vendor's models do not list: the model of every other version)."""

    vendor: Vendor
    api_version: str = ""

    @property
    def kind(self) -> str:
        """The vendor's name in settings."""
        return self.vendor.kind

    def model(self) -> type[BaseModel]:
        """The model an order must satisfy."""
        return self.vendor.model(self.api_version)


VENDORS: dict[str, Vendor] = {}
"""Every registered vendor by kind, in the order registered."""
_TARGETS: dict[tuple[str, str], Target] = {}


def register(entry: Vendor) -> Vendor:
    """Add ``entry`` to the registry (a vendor's module does, when imported); returns it."""
    if entry.kind in VENDORS:
        raise ValueError(f"vendor {entry.kind!r} is registered already")
    if not entry.api_versions or "" not in entry.models:
        raise ValueError(f'vendor {entry.kind!r}: give an API version and a model for "" (every version)')
    VENDORS[entry.kind] = entry
    _TARGETS.clear()
    return entry


def unregister(kind: str) -> None:
    """Remove the vendor ``kind`` from the registry (tests registering one of their own)."""
    del VENDORS[kind]
    _TARGETS.clear()


def vendor(kind: str) -> Vendor:
    """The registry entry of ``kind``; KeyError naming the known ones otherwise."""
    try:
        return VENDORS[kind]
    except KeyError:
        raise KeyError(f"unknown sink kind {kind!r}: one of {', '.join(sorted(VENDORS))}") from None


def target(kind: str, api_version: str = "") -> Target:
    """The :class:`Target` settings name by ``kind`` and ``api_version`` (one value per pair: the read
    path asks per record); KeyError naming the known kinds otherwise."""
    found = _TARGETS.get((kind, api_version))
    if found is None:
        found = _TARGETS[(kind, api_version)] = Target(vendor(kind), api_version)
    return found


def make_sink(
    settings: SinkOptions, transport: httpx.AsyncBaseTransport | None = None, pacer: Pacer | None = None
) -> Sink:
    """The client of the vendor ``settings.kind`` names; every request it sends waits on ``pacer``."""
    return vendor(settings.kind).sink(settings, transport, pacer)


def modes() -> tuple[str, ...]:
    """Every mode some registered vendor has, each once, in the order registered."""
    return tuple(dict.fromkeys(mode for entry in VENDORS.values() for mode in entry.modes))


def shop_kinds() -> tuple[str, ...]:
    """The kinds whose tenants may give ``shop`` instead of ``base_url``."""
    return tuple(kind for kind, entry in VENDORS.items() if entry.shop is not None)


def _one_of(values: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``, as pydantic words a Literal's choices."""
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _registered_mode(value: object) -> str:
    known = modes()
    if isinstance(value, str) and value in known:
        return value
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": _one_of(known)})


Mode = Annotated[str, PlainValidator(_registered_mode, json_schema_input_type=str)]
"""A settings field naming a mode some registered vendor has (whether the tenant's vendor has it is
the settings' own check), refused in the words a ``Literal`` of the modes would use."""
