"""Routing: where an event names its tenant, and what decoding does with it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.decode import decode
from connector.errors import RouteError
from connector.route import Route
from connector.samples import envelope, order_body
from connector.structs import Record
from connector.vendors import Target, target


def _record(
    value: bytes | None, headers: tuple[tuple[str, bytes], ...] = (), topic: str = "orders"
) -> Record:
    return Record(topic, 0, 7, b"k", value, headers)


def _event(**extra: Any) -> bytes:
    return json.dumps({**json.loads(envelope(order_body("O-1", 1), 1)), **extra}).encode()


def test_a_field_header_or_topic_names_the_tenant() -> None:
    assert Route.parse("field:shop").tenant_of(_record(b""), {"shop": "acme"}) == "acme"
    assert Route.parse("header:x-shop").tenant_of(_record(b"", (("x-shop", b"bolt"),)), {}) == "bolt"
    assert Route.parse("topic").tenant_of(_record(b"", topic="orders-cask"), {}) == "orders-cask"


@pytest.mark.parametrize(
    ("route", "record", "data", "message"),
    [
        ("field:shop", _record(b"{}"), {}, "field shop is missing or not a non-empty string"),
        ("field:shop", _record(b"{}"), {"shop": 3}, "field shop is missing or not a non-empty string"),
        ("field:shop", _record(None), None, "a tombstone has no field shop"),
        ("header:x-shop", _record(b"{}"), {}, "header x-shop is missing or empty"),
        ("header:x-shop", _record(b"{}", (("x-shop", b"\xff"),)), {}, "header x-shop: not UTF-8"),
    ],
)
def test_an_event_naming_no_tenant_says_what_is_missing_where(
    route: str, record: Record, data: Any, message: str
) -> None:
    with pytest.raises(RouteError) as caught:
        Route.parse(route).tenant_of(record, data)
    assert message in str(caught.value)
    assert caught.value.stage == "route"


def test_two_tenants_with_the_same_order_id_are_two_keys() -> None:
    """Decoding with a locator: the change carries its tenant, is checked with that tenant's vendor,
    and is coalesced by (tenant, external_id)."""
    route = Route.parse("field:shop")

    def locate(record: Record, data: Any) -> tuple[str, Target]:
        return route.tenant_of(record, data), target("loop", "v1")

    a = decode(_record(_event(shop="acme")), locate=locate)
    b = decode(_record(_event(shop="bolt")), locate=locate)
    assert (a.tenant, b.tenant) == ("acme", "bolt")
    assert a.external_id == b.external_id == "O-1"
    assert a.key != b.key
    plain = decode(_record(_event(shop="acme")))
    assert plain.tenant == ""
    assert plain.key == "O-1", "one tenant: the key is the external_id, as before"
    with pytest.raises(RouteError):
        decode(_record(_event()), locate=locate)
