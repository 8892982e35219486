"""The routing index of a tenancy (``connector/_router.py``): which served shop a record is for, by
its name or an alias, a renamed or removed shop's old names, and deletes that name no shop routed by
their key's last shop. Driven through ``Router``'s methods with shops built by ``tests/shops.py``."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from connector import logs
from connector._router import Router
from connector.config import KafkaSettings, Settings, TenantsSettings
from connector.errors import RouteError
from connector.route import Route
from connector.structs import Record
from connector.vendors import target
from tests.shops import TOPIC, by_name, shop


def event(shop_name: str | None, order: str, offset: int = 0) -> tuple[Record, Any]:
    """An event of ``order`` naming ``shop_name`` in its ``shop`` field (None: a tombstone), and its
    value as routing reads it."""
    if shop_name is None:
        return Record(TOPIC, 0, offset, order.encode(), None), None
    data = {"shop": shop_name, "external_id": order}
    return Record(TOPIC, 0, offset, order.encode(), json.dumps(data).encode()), data


def router(remember_keys: int = 100) -> Router:
    return Router(Route.parse("field:shop"), remember_keys)


def test_a_record_goes_to_the_shop_it_names_by_name_or_alias_with_that_shops_vendor() -> None:
    r = router()
    r.reindex(by_name(shop("a", aliases=("a-old",)), shop("b", api_version="2026-10")))
    assert r.locate(*event("a", "o1")) == ("a", target("loop", "v1"))
    assert r.locate(*event("a-old", "o2")) == ("a", target("loop", "v1"))
    assert r.locate(*event("b", "o3")) == ("b", target("loop", "2026-10"))
    with pytest.raises(RouteError, match="'c' is not served") as raised:
        r.locate(*event("c", "o4"))
    assert raised.value.tenant == "c"


def test_a_renamed_shop_is_routed_by_its_new_name_and_keeps_its_own() -> None:
    r = router()
    r.reindex(by_name(shop("old", shown="new", aliases=("old",))))
    assert r.locate(*event("new", "o1"))[0] == "old"
    assert r.canonical("new") == "old"
    assert r.canonical("old") == "old"
    assert r.canonical("unknown") == "unknown"


def test_a_removed_shop_is_routed_no_more_but_its_names_still_resolve_a_routed_one_first() -> None:
    r = router()
    gone = shop("gone", aliases=("legacy",), retiring=True)
    r.reindex(by_name(gone, shop("fresh", aliases=("legacy",))))
    with pytest.raises(RouteError, match="'gone' is not served"):
        r.locate(*event("gone", "o1"))
    assert r.locate(*event("legacy", "o2"))[0] == "fresh"
    assert r.canonical("gone") == "gone"
    assert r.canonical("legacy") == "fresh"  # the routed shop has the shared alias
    r.reindex(by_name(shop("fresh", aliases=("legacy",))))
    assert r.canonical("gone") == "gone"  # unknown now: as given


def test_a_delete_naming_no_shop_goes_to_the_shop_its_key_was_last_routed_to() -> None:
    r = router()
    r.reindex(by_name(shop("a"), shop("b")))
    r.locate(*event("a", "o1", 1))
    r.locate(*event("b", "o1", 2))  # the order moved to b: its last event is b's
    assert r.locate(*event(None, "o1", 3))[0] == "b"
    with pytest.raises(RouteError, match="no event of its key was routed"):
        r.locate(*event(None, "never-seen", 4))
    r.reindex(by_name(shop("a")))  # b is served no more: its keys route nowhere
    with pytest.raises(RouteError, match="no event of its key was routed"):
        r.locate(*event(None, "o1", 5))


def test_no_key_is_remembered_with_remember_keys_zero() -> None:
    r = router(remember_keys=0)
    r.reindex(by_name(shop("a")))
    r.locate(*event("a", "o1"))
    with pytest.raises(RouteError, match="no event of its key was routed"):
        r.locate(*event(None, "o1"))


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """The JSON log lines written meanwhile (logging configured as `connector run` does)."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    logs.configure("INFO")
    return lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("route", "remember_keys", "warmup_records", "warned"),
    [
        ("field:shop", 0, 100, "kafka.remember_keys = 0"),
        ("field:shop", 100, 0, "kafka.warmup_records = 0"),
        ("field:shop", 100, 100, None),
        ("topic", 0, 0, None),
    ],
)
def test_it_warns_at_start_when_deletes_naming_no_shop_cannot_be_routed(
    log_lines: Callable[[], list[dict[str, Any]]],
    route: str,
    remember_keys: int,
    warmup_records: int,
    warned: str | None,
) -> None:
    settings = Settings(
        tenants=TenantsSettings(path="tenants", route=route),
        kafka=KafkaSettings(remember_keys=remember_keys, warmup_records=warmup_records),
    )
    Router(Route.parse(route), remember_keys).warn_unroutable_deletes(settings)
    warnings = [line for line in log_lines() if line.get("event") == "route_deletes_unroutable"]
    assert [str(w["reason"]).startswith(warned) for w in warnings] == ([True] if warned else [])
