"""Avro in the Confluent wire format, with the writer's schema from a Confluent-compatible registry.

A value (or key) in the wire format is the magic byte ``0``, the schema id (4 bytes, big-endian) and
the Avro binary encoding of the datum. The schema is fetched once per id from
``GET {registry}/schemas/ids/{id}`` (Confluent Schema Registry, and registries serving its API:
Apicurio Registry under ``/apis/ccompat/v7``, Karapace, Redpanda) and kept: a schema id never changes
meaning. The datum becomes JSON-like values (decimals as exact text, Debezium's variable-scale decimals too;
bytes as text; timestamps as RFC 3339),
so the rest of the pipeline reads it exactly as it reads JSON.

The read path is synchronous, so the pipeline fetches the schemas a batch needs before handling it
(:meth:`Registry.prefetch`); while the registry is unreachable, reading waits (an outage is not a
poison event). An id the registry does not know is a DecodeError (stage ``decode``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import fastavro
import httpx
from fastavro.read import LOGICAL_READERS

from connector.errors import DecodeError
from connector.logs import get_logger

log = get_logger("connector.mapping.avro")
MAGIC = b"\0"
_HEADER = 5


def schema_id(raw: bytes | None) -> int | None:
    """The schema id of a value in the Confluent wire format, else None."""
    if raw is None or len(raw) < _HEADER or raw[:1] != MAGIC:
        return None
    return int(struct.unpack(">I", raw[1:_HEADER])[0])


_VARIABLE_SCALE = "debezium-variable-scale-decimal"
"""The logical type given to Debezium's ``io.debezium.data.VariableScaleDecimal`` records (a struct of
``scale`` and ``value`` bytes, ``decimal.handling.mode=precise`` for a NUMERIC without a scale), so
that fastavro reads them as one decimal."""


def _variable_scale(datum: Any, _writer: Any, _reader: Any) -> Any:
    value, scale = (datum.get("value"), datum.get("scale")) if isinstance(datum, dict) else (None, None)
    if isinstance(value, bytes) and isinstance(scale, int):
        return Decimal(f"{int.from_bytes(value, 'big', signed=True)}E{-scale}")
    return datum


LOGICAL_READERS[f"record-{_VARIABLE_SCALE}"] = _variable_scale


def _tagged(schema: Any) -> Any:
    """The writer's schema with Debezium's variable-scale decimal records given their logical type."""
    if isinstance(schema, list):
        return [_tagged(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("type") == "record":
        full = out.get("connect.name") or ".".join(p for p in (out.get("namespace"), out.get("name")) if p)
        if full == "io.debezium.data.VariableScaleDecimal":
            out["logicalType"] = _VARIABLE_SCALE
        out["fields"] = [{**f, "type": _tagged(f.get("type"))} for f in out.get("fields") or ()]
    for part in ("items", "values"):
        if part in out:
            out[part] = _tagged(out[part])
    if isinstance(out.get("type"), dict | list):
        out["type"] = _tagged(out["type"])
    return out


def jsonable(value: Any) -> Any:
    """An Avro datum as JSON would carry it: decimals and UUIDs as text, bytes as text (or base64
    when not UTF-8), dates and times as ISO 8601."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date | time):
        return value.isoformat()
    return value


class Registry:
    """Schemas by id from a Confluent-compatible registry, fetched once each."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._schemas: dict[int, Any] = {}
        self._unknown: dict[int, str] = {}

    def _parse(self, ident: int, reply: httpx.Response) -> None:
        if reply.status_code == 404:
            self._unknown[ident] = f"schema id {ident} is not in the registry at {self.url}"
            return
        reply.raise_for_status()
        body = reply.json()
        kind = body.get("schemaType", "AVRO")
        if kind != "AVRO":
            self._unknown[ident] = f"schema id {ident} is {kind}, not Avro"
            return
        self._schemas[ident] = fastavro.parse_schema(_tagged(json.loads(body["schema"])))

    def known(self, ident: int) -> bool:
        """Whether ``ident`` was fetched (found or not)."""
        return ident in self._schemas or ident in self._unknown

    async def prefetch(self, raws: list[bytes | None]) -> None:
        """Fetch the schemas of every wire-format value in ``raws`` not fetched yet; while the
        registry cannot be reached, retry every second (reading waits)."""
        missing = {i for raw in raws if (i := schema_id(raw)) is not None and not self.known(i)}
        if not missing:
            return
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for ident in sorted(missing):
                while not self.known(ident):
                    try:
                        self._parse(ident, await client.get(f"{self.url}/schemas/ids/{ident}"))
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        log.warning(
                            "schema_registry_unavailable", url=self.url, schema_id=ident, error=str(exc)
                        )
                        await asyncio.sleep(1.0)

    def fetch(self, ident: int) -> None:
        """Fetch one schema, blocking (the offline commands); DecodeError when it cannot be had."""
        try:
            self._parse(ident, httpx.get(f"{self.url}/schemas/ids/{ident}", timeout=self.timeout))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise DecodeError(f"schema id {ident}: registry {self.url} unavailable: {exc}") from None

    def decode(self, raw: bytes, what: str, blocking: bool = False) -> Any:
        """The datum in ``raw`` (the wire format), as JSON-like values."""
        ident = schema_id(raw)
        assert ident is not None
        if not self.known(ident):
            if not blocking:
                raise DecodeError(f"{what}: schema id {ident} was not fetched from the registry")
            self.fetch(ident)
        if ident in self._unknown:
            raise DecodeError(f"{what}: {self._unknown[ident]}")
        try:
            datum = fastavro.schemaless_reader(io.BytesIO(raw[_HEADER:]), self._schemas[ident], None)
        except Exception as exc:  # fastavro raises whatever the bytes lead it to
            raise DecodeError(f"{what}: not Avro of schema id {ident}: {type(exc).__name__}: {exc}") from None
        return jsonable(datum)
