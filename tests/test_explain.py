"""`connector validate --mapping ...` and `connector map [--explain]` on the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHOPIFY = [
    "--records",
    "--mapping",
    str(ROOT / "examples/shopify/mapping.toml"),
    str(ROOT / "examples/shopify/events.jsonl"),
]
DEBEZIUM = ["--records", "--envelope", "debezium", "--mapping", str(ROOT / "examples/debezium/mapping.toml"),
            str(ROOT / "examples/debezium/events.jsonl")]  # fmt: skip


def test_validate_with_a_mapping_shows_each_mapped_body_or_the_failing_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", *SHOPIFY]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "7 valid, 1 invalid"
    first = lines[0]
    assert first.startswith("line 1: ok: upsert 820982911946154508: ")
    assert json.loads(first.split(": ", 3)[3])["total_price"] == {"amount": 19900, "currency_code": "USD"}
    assert lines[5] == 'line 6: ok: delete 820982911946154700: {"external_id": "820982911946154700"}'
    assert lines[7].startswith("line 8: map: mapping ")
    assert "order = " in lines[7]
    assert "'twelve' is not a decimal amount" in lines[7]


def test_validate_takes_the_mapping_section_of_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    config = ROOT / "examples/debezium/connector.toml"
    assert (
        main(["validate", "--records", "--config", str(config), str(ROOT / "examples/debezium/events.jsonl")])
        == 1
    )
    out = capsys.readouterr().out
    assert "9 valid, 1 invalid" in out
    assert "line 10: map: mapping examples/debezium/mapping.toml: external_id = " in out


def test_validate_without_mapping_options_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"external_id": "A", "status": "active"}\n')
    assert main(["validate", str(events)]) == 0
    assert capsys.readouterr().out == "1 valid, 0 invalid\n"


def test_map_prints_each_event_as_the_connectors_own_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", *DEBEZIUM]) == 1  # the last row cannot be mapped
    captured = capsys.readouterr()
    native = [json.loads(line) for line in captured.out.splitlines()]
    assert [n["event_type"] for n in native] == [
        "order.updated", "order.updated", "order.created", "order.updated", "order.cancelled",
        "order.deleted", "order.deleted", "order.created", "order.updated",
    ]  # fmt: skip
    assert native[5] == {
        "event_type": "order.deleted",
        "order": {"external_id": "pg-1002"},
        "occurred_at": "2026-11-01T12:04:00.250000Z",
    }
    assert "line 10: map: " in captured.err


def test_map_explain_prints_every_step_for_one_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", "--explain", "--line", "7", *DEBEZIUM]) == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line[:1].isdigit()]
    assert steps == [
        "1. record",
        "2. envelope debezium",
        f"3. mapping file {ROOT / 'examples/debezium/mapping.toml'}",
        "4. as the connector's own envelope",
        "5. read path (what coalescing keys and orders by)",
        "6. vendor validation (loop)",
    ]
    assert '"__deleted": true' in out
    assert "ok: a delete of this order" in out


def test_map_explain_shows_where_an_event_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", "--explain", "--line", "8", *SHOPIFY]) == 1
    out = capsys.readouterr().out
    assert "dead-lettered, stage map" in out
    assert "minor_units: 'twelve' is not a decimal amount" in out


def test_map_explain_shows_headers_and_the_key_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21: headers reach the mapping as text (header('x-count') is "007", not 7), and the record's
    key as its text; --explain shows them so, not parsed as JSON."""
    mapping = tmp_path / "m.toml"
    mapping.write_text('external_id = "str(id)"\norder = "{name: name, note: header(\'x-count\')}"\n')
    events = tmp_path / "e.jsonl"
    events.write_text(
        json.dumps({"key": "00042", "headers": {"x-count": "007"}, "value": {"id": 1, "name": "#1"}})
    )
    assert main(["map", "--explain", "--line", "1", "--records", "--mapping", str(mapping), str(events)]) == 0
    out = capsys.readouterr().out
    record_step = out.split("2. envelope")[0]
    assert '"x-count": "007"' in record_step
    assert '"key": "00042"' in record_step
    assert '"note": "007"' in out
