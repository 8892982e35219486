"""Avro values in the Confluent wire format, end to end, against a real Confluent-compatible schema
registry: the schema registered through the registry's own API, Debezium-shaped Avro changes produced
to the broker, the connector decoding them with the schema fetched from the registry.

The registry is Apicurio Registry, built from Maven Central and started by ``scripts/registry`` (the
``schema_registry`` fixture), or any other at ``TEST_SCHEMA_REGISTRY_URL``."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import fastavro
import httpx
import pytest

from connector.config import MappingSettings
from connector.sandbox import Sandbox
from tests.helpers import create_topics, produce, running, settings_for, wait_until

pytestmark = pytest.mark.integration

ROW = {
    "type": "record",
    "name": "Value",
    "namespace": "shop.public.orders",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "number", "type": "string"},
        {"name": "total_cents", "type": "long"},
        {"name": "currency", "type": "string"},
        {"name": "updated_at", "type": ["null", "long"], "default": None},
    ],
}
ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "shop.public.orders",
    "fields": [
        {"name": "before", "type": ["null", ROW], "default": None},
        {"name": "after", "type": ["null", "shop.public.orders.Value"], "default": None},
        {"name": "source", "type": {"type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
                                    "fields": [{"name": "ts_ms", "type": "long"}, {"name": "table", "type": "string"}]}},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
    ],
}  # fmt: skip
KEY = {
    "type": "record",
    "name": "Key",
    "namespace": "shop.public.orders",
    "fields": [{"name": "id", "type": "long"}],
}


def _register(url: str, subject: str, schema: dict[str, object]) -> int:
    reply = httpx.post(
        f"{url}/subjects/{subject}/versions",
        json={"schema": json.dumps(schema)},
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    reply.raise_for_status()
    return int(reply.json()["id"])


def _wire(ident: int, schema: dict[str, object], datum: dict[str, object]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return b"\0" + struct.pack(">I", ident) + out.getvalue()


async def test_debezium_avro_changes_decoded_with_the_registry(
    kafka_bootstrap: str, topic_name: str, sandbox: Sandbox, tmp_path: Path, schema_registry: str
) -> None:
    """Key and value schemas registered through the registry's Confluent API; a create and an update
    of one row, Avro in the wire format: the sandbox ends with the update, decoded with the fetched
    schemas, and the decimal-free row mapped by a JMESPath file."""
    url = schema_registry
    value_id = _register(url, f"{topic_name}-value", ENVELOPE)
    key_id = _register(url, f"{topic_name}-key", KEY)
    row = {"id": 1, "number": "#1", "total_cents": 1999, "currency": "EUR", "updated_at": 1793534400000000}
    events = [
        (_wire(key_id, KEY, {"id": 1}), _wire(value_id, ENVELOPE, {
            "before": None, "after": row, "source": {"ts_ms": 1793534400100, "table": "orders"}, "op": "c", "ts_ms": None})),
        (_wire(key_id, KEY, {"id": 1}), _wire(value_id, ENVELOPE, {
            "before": row, "after": {**row, "total_cents": 2999, "updated_at": 1793534460000000},
            "source": {"ts_ms": 1793534460100, "table": "orders"}, "op": "u", "ts_ms": None})),
    ]  # fmt: skip
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        "external_id = \"join('', ['pg-', str(id)])\"\nupdated_at = \"from_epoch(updated_at, 'us')\"\n"
        'order = "{name: number, total_price: {amount: total_cents, currency_code: currency}}"\n'
    )
    settings = settings_for(kafka_bootstrap, topic_name, sandbox.url).model_copy(
        update={"mapping": MappingSettings(envelope="debezium", file=str(mapping), registry_url=url)}
    )
    async with running(settings):
        await wait_until(
            lambda: (sandbox.store.get_external("pg-1") or {}).get("total_price", {}).get("amount") == 2999,
            60,
        )
    held = sandbox.store.get_external("pg-1")
    assert held is not None
    assert held["updated_at"] == "2026-11-01T12:01:00.000000Z"
