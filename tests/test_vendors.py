"""The vendor registry is the one place a vendor is described: config, tenants, decode, the mapping
stage, the sandbox and the clients read it; a new vendor is one module of its own."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from connector.cli import build_parser
from connector.config import MappingSettings, SinkSettings, load_settings
from connector.conform import check
from connector.decode import decode
from connector.errors import ConfigError, OrderValidationError
from connector.mapping import Mapper
from connector.pacing import Pacer
from connector.sandbox.guard import AUTH_HEADERS, VENDOR_PREFIXES, VERSIONS
from connector.sinks import HttpClient, Prepaid, SinkOptions
from connector.structs import OrderChange, Record
from connector.tenants import Tenant, load_tenants
from connector.vendors import (
    DEFAULT_TARGET,
    VENDORS,
    ShopRule,
    Target,
    Vendor,
    make_sink,
    register,
    target,
    unregister,
    vendor,
)


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_every_entry_is_whole(kind: str) -> None:
    """Each entry defaults config (first API version, budget), builds its sink with its own header
    and path, and has a model for every API version it lists."""
    entry = vendor(kind)
    settings = SinkSettings(kind=kind, api_key="k")
    assert settings.api_version == entry.api_versions[0]
    assert settings.rate_limit_per_second == entry.default_rate_per_second
    sink = make_sink(settings)
    assert type(sink) is entry.sink
    assert all(entry.model(v) is not None for v in entry.api_versions)
    assert entry.base_path(settings.api_version).endswith(settings.api_version)


def test_an_unknown_kind_names_the_known_ones() -> None:
    """A typo in sink.kind fails at start-up, listing every vendor the registry has."""
    with pytest.raises(ValidationError, match="must be one of loop, shoplazza"):
        SinkSettings(kind="shopify")
    with pytest.raises(KeyError, match="loop, shoplazza"):
        vendor("shopify")
    with pytest.raises(KeyError, match="loop, shoplazza"):
        target("shopify")


def test_a_mode_the_vendor_lacks_is_refused() -> None:
    """create_update exists for Loop only: the entry's modes say so."""
    with pytest.raises(ValidationError, match="mode create_update does not exist for kind shoplazza"):
        SinkSettings(kind="shoplazza", mode="create_update")


def test_a_mode_no_vendor_has_is_refused_in_the_words_of_before() -> None:
    """The modes are the registry's (one type for sink settings and tenants); a mode no vendor has is
    refused as the Literal of both modes refused it."""
    for make in (
        lambda: SinkSettings(mode="replace"),
        lambda: Tenant(name="a", base_url="x", api_key="k", mode=3),
    ):
        with pytest.raises(ValidationError) as caught:
            make()
        [error] = caught.value.errors()
        assert (error["type"], error["msg"]) == (
            "literal_error",
            "Input should be 'upsert' or 'create_update'",
        )


@pytest.mark.parametrize(
    ("kind", "order", "key"),
    [
        ("loop", {"external_id": "E-1"}, "E-1"),
        ("loop", {"external_id": "x" * 65}, None),
        ("loop", {}, None),
        ("shoplazza", {"id": "o-1"}, "o-1"),
        ("shoplazza", {"number": "1001"}, "number:1001"),
        ("shoplazza", {}, None),
    ],
)
def test_order_keys_follow_each_vendor_rule(kind: str, order: dict[str, str], key: str | None) -> None:
    """Loop names an order by external_id (1 to 64 characters), Shoplazza by id or number."""
    assert vendor(kind).order_key(order) == key


def test_a_target_is_one_frozen_value_per_vendor_and_version() -> None:
    """What a change is checked against and sent to: settings' names give the same value each time
    (the read path asks per record), which cannot be changed."""
    assert target("loop", "2026-10") is target("loop", "2026-10")
    assert target("loop", "2026-10") == Target(vendor("loop"), "2026-10")
    assert target("loop", "2026-10").model() is vendor("loop").model("2026-10")
    assert Target(vendor("loop")) == DEFAULT_TARGET
    with pytest.raises(dataclasses.FrozenInstanceError):
        target("loop").api_version = "v1"  # type: ignore[misc]


def test_the_sandbox_serves_what_the_entries_say() -> None:
    """The sandbox's routing reads the entries: a vendor's path prefix, key header and versions."""
    for kind, entry in VENDORS.items():
        assert VENDOR_PREFIXES[entry.path.split("/")[1]] == kind
        assert AUTH_HEADERS[kind] == entry.auth_header
        assert set(entry.api_versions) <= VERSIONS[kind]


# -- a third vendor, in this test only ---------------------------------------------------------------
class AcmeOrder(BaseModel):
    """The fake vendor's order: a ``ref`` of 1 to 8 characters."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    ref: str
    updated_at: str | None = None
    total: int = 0


class AcmeSink:
    """The fake vendor's client: ``PUT /acme/{version}/orders/{ref}``, ``DELETE`` the same."""

    name = "acme"

    def __init__(
        self,
        settings: SinkOptions,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        path, header = ACME.base_path(settings.api_version), ACME.auth_header
        self._http = HttpClient(settings, path, header, transport, pacer)
        self.mode = settings.mode

    async def __aenter__(self) -> AcmeSink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def set_api_key(self, api_key: SecretStr) -> None:
        self._http.set_api_key(api_key)

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        method = "DELETE" if change.op == "delete" else "PUT"
        await self._http.request(
            method, f"/orders/{change.external_id}", json=change.body if method == "PUT" else None
        )

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        await self._http.request("GET", "/orders")

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        raise NotImplementedError("acme keeps no timestamp of ours")


def _acme_key(order: Mapping[str, Any]) -> str | None:
    ref = order.get("ref")
    return ref if isinstance(ref, str) and 1 <= len(ref) <= 8 else None


ACME = Vendor(
    kind="acme",
    api_versions=("v3", "v2"),
    default_rate_per_second=7.0,
    auth_header="X-Acme-Key",
    path="/acme/{version}",
    models={"": AcmeOrder},
    order_key=_acme_key,
    key_field="order.ref",
    key_rule="required, 1 to 8 characters",
    keyed_by_record=False,
    sink=AcmeSink,
    modes=("upsert", "replace"),
    shop=ShopRule("acme.test", re.compile(r"[a-z]+"), "an Acme store name such as 'corner'"),
)


@pytest.fixture
def acme() -> Iterator[Vendor]:
    """The fake vendor registered for one test, as its module would register it when imported."""
    register(ACME)
    try:
        yield ACME
    finally:
        unregister(ACME.kind)


def test_a_third_vendor_is_one_registration_for_settings_and_tenants(
    acme: Vendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering an entry (what a new vendor's module does when imported) is all it takes: settings
    from the environment and tenant files accept its kind, versions, modes and store names, with its
    defaults, and ``connector validate --kind`` offers it."""
    for name in [n for n in os.environ if n.upper().startswith("CONNECTOR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CONNECTOR_SINK__KIND", "acme")
    monkeypatch.setenv("CONNECTOR_SINK__MODE", "replace")
    monkeypatch.setenv("CONNECTOR_SINK__API_KEY", "acme-secret")
    settings = load_settings().sink
    assert (settings.kind, settings.mode, settings.api_version, settings.rate_limit_per_second) == (
        "acme",
        "replace",
        "v3",
        7.0,
    )
    with pytest.raises(ValidationError, match="mode replace does not exist for kind loop"):
        SinkSettings(kind="loop", mode="replace")
    monkeypatch.setenv("CONNECTOR_SINK__API_VERSION", "v9")
    with pytest.raises(ConfigError, match="api_version for acme must be one of v3, v2"):
        load_settings()

    (tmp_path / "corner.toml").write_text(
        'kind = "acme"\nshop = "corner"\napi_key = "c"\napi_version = "v2"\n'
    )
    (tmp_path / "bolt.toml").write_text('kind = "shoplazza"\nshop = "bolt"\napi_key = "b"\n')
    tenants = load_tenants(tmp_path)
    corner = SinkSettings().calling(tenants["corner"].account())
    assert (corner.kind, corner.base_url, corner.api_version) == ("acme", "https://corner.acme.test", "v2")
    assert tenants["bolt"].url == "https://bolt.myshoplaza.com"
    with pytest.raises(ValidationError, match="an Acme store name such as 'corner'"):
        Tenant(name="c", kind="acme", shop="Corner Shop", api_key="k")
    with pytest.raises(ValidationError, match="shop: only for kind shoplazza or acme"):
        Tenant(name="c", kind="loop", shop="corner", api_key="k")
    assert build_parser().parse_args(["validate", "--kind", "acme", "-"]).kind == "acme"


def test_a_third_vendor_is_one_registration_for_the_read_path(acme: Vendor) -> None:
    """Its orders are keyed by its rule and checked against its model, natively and through the
    mapping stage (a Debezium row named by its key field)."""
    to = target("acme", "v2")
    change = decode(Record("orders", 0, 1, None, b'{"ref": "R-1", "total": 12}'), target=to)
    assert (change.external_id, change.validated) == ("R-1", True)
    with pytest.raises(OrderValidationError, match=r"order\.ref: required, 1 to 8 characters"):
        decode(Record("orders", 0, 2, None, b'{"ref": "R-123456789"}'), target=to)
    unchecked = decode(
        Record("orders", 0, 3, None, b'{"ref": "R-2", "total": "12"}'), target=to, validate=False
    )
    with pytest.raises(OrderValidationError, match=r"order\.total"):
        check(unchecked, to)
    row = {"op": "u", "before": None, "after": {"ref": "R-3", "total": 3}, "source": {"ts_ms": 1}}
    mapped = Mapper(MappingSettings(envelope="debezium")).read(
        Record("orders", 0, 4, None, json.dumps(row).encode()), to, validate=True
    )
    assert (mapped.external_id, mapped.body["total"]) == ("R-3", 3)


async def test_a_third_vendor_is_one_registration_for_its_client(acme: Vendor) -> None:
    """``make_sink`` makes its client, which sends to its path with its key header."""
    sent: list[httpx.Request] = []

    def acme_api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    tenant = Tenant(name="corner", kind="acme", shop="corner", api_key="c", api_version="v2")
    change = decode(Record("orders", 0, 1, None, b'{"ref": "R-1", "total": 12}'), target=target("acme"))
    async with make_sink(SinkSettings().calling(tenant.account()), httpx.MockTransport(acme_api)) as sink:
        assert isinstance(sink, AcmeSink)
        await sink.apply(change)
    [request] = sent
    assert (request.method, str(request.url)) == ("PUT", "https://corner.acme.test/acme/v2/orders/R-1")
    assert request.headers["X-Acme-Key"] == "c"
    assert json.loads(request.content) == {"ref": "R-1", "total": 12}


def test_a_vendor_is_known_while_registered_only() -> None:
    """Registered, its kind is accepted; a second registration of the kind is refused; unregistered,
    its kind is unknown again."""
    register(ACME)
    try:
        assert SinkSettings(kind="acme").api_version == "v3"
        with pytest.raises(ValueError, match="'acme' is registered already"):
            register(ACME)
    finally:
        unregister("acme")
    with pytest.raises(ValidationError, match="must be one of loop, shoplazza"):
        SinkSettings(kind="acme")
