"""The vendor registry is the one place a vendor is described: config, decode and sinks read it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connector.config import SinkSettings
from connector.sinks import make_sink
from connector.vendors import VENDORS, vendor


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_every_entry_is_whole(kind: str) -> None:
    """Each entry defaults config (first API version, budget), builds its sink with its own header
    and path, and has a model for every API version it lists."""
    entry = vendor(kind)
    settings = SinkSettings(kind=kind, api_key="k")
    assert settings.api_version == entry.api_versions[0]
    assert settings.rate_limit_per_second == entry.default_rate_per_second
    sink = make_sink(settings)
    assert isinstance(sink, entry.sink_class())
    assert all(entry.model(v) is not None for v in entry.api_versions)
    assert entry.base_path(settings.api_version).endswith(settings.api_version)


def test_an_unknown_kind_names_the_known_ones() -> None:
    """A typo in sink.kind fails at start-up, listing every vendor the registry has."""
    with pytest.raises(ValidationError, match="must be one of loop, shoplazza"):
        SinkSettings(kind="shopify")
    with pytest.raises(KeyError, match="loop, shoplazza"):
        vendor("shopify")


def test_a_mode_the_vendor_lacks_is_refused() -> None:
    """create_update exists for Loop only: the entry's modes say so."""
    with pytest.raises(ValidationError, match="mode create_update does not exist for kind shoplazza"):
        SinkSettings(kind="shoplazza", mode="create_update")


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
