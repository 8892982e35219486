"""`connector demo --example`: a shipped example, loaded offline, says what the API must end with (the
newest valid state of each order, or its absence after a delete) and which events are dead-lettered;
the demo then checks the sandbox against exactly that."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.demo_example import find_example, load_example
from connector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_debezium_example_ends_with_each_rows_newest_state_and_its_deleted_row_absent() -> None:
    example = load_example("debezium")
    assert (example.topic, len(example.records)) == ("shop.public.orders", 10)
    assert sorted(example.upserts) == ["pg-1001", "pg-1003", "pg-1004"]
    assert example.deleted == ["pg-1002"], "its delete, then its tombstone"
    assert example.upserts["pg-1003"]["status"] == "cancelled", "its update, not its insert"
    assert example.final["pg-1004"].record.offset == 9, "line 9: the newer of its two events (lines 8, 9)"
    assert [(line, reason.split(":")[0]) for line, reason in example.invalid] == [(10, "map")]


def test_the_shopify_example_read_from_a_folder_by_its_path() -> None:
    example = load_example(str(ROOT / "examples" / "shopify"))
    assert example.folder == ROOT / "examples" / "shopify"
    assert example.topic == "shopify.orders"
    assert example.deleted == ["820982911946154700"]
    assert {k: b["status"] for k, b in example.upserts.items()} == {
        "820982911946154508": "active",
        "820982911946154600": "cancelled",
    }
    assert all(body["external_id"] == key for key, body in example.upserts.items())
    assert [(line, reason.split(":")[0]) for line, reason in example.invalid] == [(8, "map")]


def test_an_unknown_example_is_a_config_error_naming_where_it_looked() -> None:
    with pytest.raises(ConfigError, match=r"no folder with connector\.toml and events\.jsonl"):
        find_example("no-such-example")
