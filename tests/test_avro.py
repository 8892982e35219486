"""Avro in the Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian), the Avro
binary datum; decoded with the schema fetched (once) from a Confluent-compatible registry."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from aiohttp import web

from connector import logs
from connector.cli import main
from connector.config import MappingSettings
from connector.errors import DecodeError
from connector.health import Health
from connector.localkafka import free_port
from connector.mapping import Mapper, Registry, schema_id
from connector.metrics import Metrics
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
    m = Mapper(MappingSettings(registry_url=url, registry_not_found_seconds=0))
    record = Record("t", 0, 0, None, wire(8, ORDER_SCHEMA, DATUM))
    await m.prefetch([record])
    with pytest.raises(DecodeError, match="schema id 8 is not in the registry"):
        m.read(record)


async def test_bytes_that_are_not_the_datum_are_a_decode_error(registry_stub: tuple[str, list[int]]) -> None:
    url, _ = registry_stub
    registry = Registry(url)
    await registry.prefetch([wire(7, ORDER_SCHEMA, DATUM)])
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


# -- the registry as it really behaves: late schemas, credentials, outages (issue 21) ---------------
class Stub:
    """A registry stand-in: ``schemas`` by id, each served only after ``late[id]`` 404s; requires
    ``auth`` (an Authorization header) when set; ``down`` answers 503. Counts calls per id."""

    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {7: ORDER_SCHEMA}
        self.late: dict[int, int] = {}
        self.auth: str | None = None
        self.down = False
        self.calls: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        ident = int(request.match_info["id"])
        self.calls.append(ident)
        if self.down:
            return web.json_response({"message": "unavailable"}, status=503)
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        if ident not in self.schemas or self.late.get(ident, 0) > 0:
            self.late[ident] = self.late.get(ident, 0) - 1
            return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)
        return web.json_response({"schema": json.dumps(self.schemas[ident])})


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    s = Stub()
    app = web.Application()
    app.router.add_get("/schemas/ids/{id}", s.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    s.url = f"http://127.0.0.1:{port}"
    try:
        yield s
    finally:
        await runner.cleanup()


async def test_a_schema_the_registry_does_not_know_yet_is_asked_again_before_dead_lettering(
    stub: Stub,
) -> None:
    """A follower that has not caught up answers 404 for a schema registered a moment ago: the id is
    asked again (bounded), and the record decodes once the registry knows it."""
    stub.late[7] = 2
    m = Mapper(MappingSettings(registry_url=stub.url, registry_not_found_seconds=10))
    record = Record("t", 0, 0, None, wire(7, ORDER_SCHEMA, DATUM))
    await asyncio.wait_for(m.prefetch([record]), 10)
    assert m.unwrap(record) is not None
    assert stub.calls == [7, 7, 7]


async def test_a_404_is_dead_lettered_after_the_bound_and_not_remembered_for_ever(stub: Stub) -> None:
    """After ``registry_not_found_seconds`` of 404s the record is a decode error; records of that id
    in the same window are too, without asking; after it, the registry is asked again."""
    stub.schemas[9] = ORDER_SCHEMA
    stub.late[9] = 1_000
    m = Mapper(MappingSettings(registry_url=stub.url, registry_not_found_seconds=0.6))
    record = Record("t", 0, 0, None, wire(9, ORDER_SCHEMA, DATUM))
    started = time.monotonic()
    await m.prefetch([record])
    assert 0.5 < time.monotonic() - started < 5
    with pytest.raises(DecodeError, match="schema id 9 is not in the registry"):
        m.read(record)
    asked = len(stub.calls)
    assert asked >= 2
    await m.prefetch([record])
    assert len(stub.calls) == asked, "within the window: not asked again"
    await asyncio.sleep(0.7)
    stub.late[9] = 0
    await m.prefetch([record])
    assert len(stub.calls) == asked + 1, "past it: asked again"
    assert m.unwrap(record) is not None


@pytest.mark.parametrize("where", ["setting", "url"])
async def test_basic_auth_credentials_are_sent_and_never_printed(
    stub: Stub, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Credentials as ``registry_basic_auth_user_info`` (Confluent's basic.auth.user.info) or in the
    URL's userinfo are sent as HTTP basic auth; the URL is printed without them."""
    stub.auth = "Basic " + base64.b64encode(b"reader:s3cret-pw").decode()
    if where == "setting":
        settings = MappingSettings(registry_url=stub.url, registry_basic_auth_user_info="reader:s3cret-pw")
    else:
        settings = MappingSettings(registry_url=stub.url.replace("://", "://reader:s3cret-pw@"))
    m = Mapper(settings)
    record = Record("t", 0, 0, None, wire(7, ORDER_SCHEMA, DATUM))
    await asyncio.wait_for(m.prefetch([record]), 10)  # refused credentials: it would wait
    assert m.unwrap(record) is not None
    assert m.registry is not None
    assert "s3cret" not in m.registry.shown
    offline = Mapper(settings, blocking=True)  # the offline commands: fetched blocking, in a thread here
    with pytest.raises(DecodeError) as caught:
        await asyncio.to_thread(offline.read, Record("t", 0, 0, None, wire(8, ORDER_SCHEMA, DATUM)))
    assert "schema id 8 is not in the registry at http://" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_while_the_registry_is_down_the_process_is_alive_but_not_ready(stub: Stub) -> None:
    """Reading waits for the registry (an outage is not a poison event); meanwhile the loop beats
    (/healthz), /readyz is not ready, the gauge says so, and the outage is one log line (and one
    when it ends), its URL without credentials."""
    written = io.StringIO()
    logs.configure("INFO", stream=written)
    try:
        await _registry_down(stub)
    finally:
        logs.configure("INFO", stream=sys.__stdout__)
    out = written.getvalue()
    assert out.count('"schema_registry_unavailable"') == 1
    assert out.count('"schema_registry_available"') == 1
    assert "s3cret" not in out
    assert "://***@127.0.0.1" in out


async def _registry_down(stub: Stub) -> None:
    stub.down = True
    metrics = Metrics()
    health = Health(metrics)
    health.join()
    url = stub.url.replace("://", "://reader:s3cret-pw@")
    m = Mapper(MappingSettings(registry_url=url), health=health)
    record = Record("t", 0, 0, None, wire(7, ORDER_SCHEMA, DATUM))
    waiting = asyncio.create_task(m.prefetch([record]))
    await asyncio.sleep(2.5)
    assert not waiting.done()
    assert not health.ready
    assert metrics.registry.get_sample_value("connector_schema_registry_unavailable") == 1
    assert health.age() < 1.5, "the read loop is alive while it waits"
    stub.down = False
    await asyncio.wait_for(waiting, 5)
    assert health.ready
    assert metrics.registry.get_sample_value("connector_schema_registry_unavailable") == 0
    assert metrics.registry.get_sample_value("connector_schema_registry_outages_total") == 1


def test_config_show_prints_the_registry_url_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONNECTOR_MAPPING__REGISTRY_URL", "https://reader:s3cret-pw@registry:8081")
    monkeypatch.setenv("CONNECTOR_MAPPING__REGISTRY_BASIC_AUTH_USER_INFO", "other:also-s3cret")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert "https://***@registry:8081" in out


VARIABLE_SCALE = {
    "type": "record",
    "name": "VariableScaleDecimal",
    "namespace": "io.debezium.data",
    "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
    "connect.name": "io.debezium.data.VariableScaleDecimal",
}
DEBEZIUM_ROW = {
    "type": "record",
    "name": "Value",
    "namespace": "pg.public.orders",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "total", "type": ["null", {"type": "bytes", "scale": 2, "precision": 12, "connect.version": 1,
          "connect.parameters": {"scale": "2", "connect.decimal.precision": "12"},
          "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"}], "default": None},
        {"name": "discount", "type": ["null", VARIABLE_SCALE], "default": None},
        {"name": "refund", "type": ["null", "io.debezium.data.VariableScaleDecimal"], "default": None},
    ],
}  # fmt: skip


async def test_debezium_avro_decimals_are_read_exactly(stub: Stub) -> None:
    """Debezium's Avro at decimal.handling.mode=precise: the decimal logical type and the
    VariableScaleDecimal record (also where the schema names it again) both read as decimal text."""
    stub.schemas[11] = DEBEZIUM_ROW
    m = Mapper(MappingSettings(registry_url=stub.url))
    datum = {
        "id": 1,
        "total": Decimal("411.17"),
        "discount": {"scale": 3, "value": (125).to_bytes(1, "big")},
        "refund": {"scale": 2, "value": (-1234).to_bytes(2, "big", signed=True)},
    }
    record = Record("t", 0, 0, None, wire(11, DEBEZIUM_ROW, datum))
    await m.prefetch([record])
    event = m.unwrap(record)
    assert event is not None
    assert event.value == {"id": 1, "total": "411.17", "discount": "0.125", "refund": "-12.34"}
