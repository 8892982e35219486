"""Avro in the Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian), the Avro
binary datum; decoded with the schema fetched (once) from a Confluent-compatible registry."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from aiohttp import web

from connector.config import MappingSettings
from connector.errors import DecodeError
from connector.localkafka import free_port
from connector.mapping import Mapper, Registry, schema_id
from connector.structs import Record

ORDER_SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def wire(ident: int, schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """``datum`` in the Confluent wire format under schema id ``ident``."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return b"\0" + struct.pack(">I", ident) + out.getvalue()


def test_the_schema_id_is_read_from_the_header() -> None:
    assert schema_id(b"\0\0\0\1\x02abc") == 258
    assert schema_id(b'{"id": 1}') is None
    assert schema_id(b"\0\0\1") is None
    assert schema_id(None) is None


@pytest.fixture
async def registry_stub() -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTP stand-in answering the Confluent API's GET /schemas/ids/{id} for id 7 only; counts
    the calls. (The real registry is tests/integration/test_registry.py.)"""
    calls: list[int] = []

    async def schema(request: web.Request) -> web.Response:
        ident = int(request.match_info["id"])
        calls.append(ident)
        if ident != 7:
            return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)
        return web.json_response({"schema": json.dumps(ORDER_SCHEMA)})

    app = web.Application()
    app.router.add_get("/schemas/ids/{id}", schema)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        await runner.cleanup()


DATUM = {"id": 1001, "name": "#1001", "total": Decimal("199.99"), "updated_at": 1793534400000, "note": None}


async def test_an_avro_value_is_decoded_with_the_schema_fetched_once(
    registry_stub: tuple[str, list[int]],
) -> None:
    url, calls = registry_stub
    mapping_settings = MappingSettings(registry_url=url, function="tests.test_avro:to_loop")
    m = Mapper(mapping_settings)
    records = [Record("t", 0, i, None, wire(7, ORDER_SCHEMA, DATUM)) for i in range(3)]
    await m.prefetch(records)
    changes = [m.read(r, validate=True) for r in records]
    assert calls == [7]
    assert changes[0].external_id == "1001"
    assert changes[0].body == {
        "name": "#1001",
        "total_price": {"amount": 19999, "currency_code": "USD"},
        "external_id": "1001",
        "updated_at": "2026-11-01T12:00:00Z",
    }


async def test_an_unknown_schema_id_is_a_decode_error(registry_stub: tuple[str, list[int]]) -> None:
    url, _ = registry_stub
    m = Mapper(MappingSettings(registry_url=url))
    record = Record("t", 0, 0, None, wire(8, ORDER_SCHEMA, DATUM))
    await m.prefetch([record])
    with pytest.raises(DecodeError, match="schema id 8 is not in the registry"):
        m.read(record)


def test_bytes_that_are_not_the_datum_are_a_decode_error() -> None:
    registry = Registry("http://127.0.0.1:1")
    registry._schemas[7] = fastavro.parse_schema(ORDER_SCHEMA)
    with pytest.raises(DecodeError, match="not Avro of schema id 7"):
        registry.decode(b"\0\0\0\0\7\xff", "value")


def test_a_registry_that_cannot_be_reached_is_a_decode_error_offline() -> None:
    """The offline commands fetch blocking and say so; the pipeline waits instead (prefetch)."""
    with pytest.raises(DecodeError, match="unavailable"):
        Registry(f"http://127.0.0.1:{free_port()}", timeout=1).decode(
            wire(7, ORDER_SCHEMA, DATUM), "value", True
        )


def to_loop(event: Any) -> Any:
    """A mapping for the Avro tests: the decimal arrives as text, the timestamp as RFC 3339."""
    value = event.value
    amount = int(Decimal(value["total"]).scaleb(2))
    return {
        "external_id": str(value["id"]),
        "updated_at": value["updated_at"],
        "order": {"name": value["name"], "total_price": {"amount": amount, "currency_code": "USD"}},
    }
