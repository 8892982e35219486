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
import time
from datetime import date, datetime
from datetime import time as daytime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

import fastavro
import httpx
from fastavro.read import LOGICAL_READERS

from connector.errors import DecodeError
from connector.logs import get_logger, redact_url

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
    if isinstance(value, date | daytime):
        return value.isoformat()
    return value


class RegistryWatch(Protocol):
    """Told when reading waits for the registry, and beaten meanwhile (``connector.health.Health``)."""

    def registry_waiting(self, waiting: bool) -> None: ...

    def beat(self) -> None: ...


class Registry:
    """Schemas by id from a Confluent-compatible registry, fetched once each.

    An id the registry answers 404 for is asked again for ``not_found_seconds`` (a registry follower
    that has not caught up with a schema registered a moment ago, a base path being fixed) before its
    records are dead-lettered; that answer is kept as long, then the id is asked again: never for the
    life of the process. Credentials go in ``user_info`` (``user:password``, Confluent's
    ``basic.auth.user.info``) or the URL's userinfo; neither is ever printed (:attr:`shown`). While the
    registry cannot be reached (or refuses the credentials) reading waits, saying so once per outage
    and telling its ``watch`` (``registry_waiting(True)``, then ``False``; a ``beat`` every second
    meanwhile): the process is alive, only not ready."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        user_info: str = "",
        not_found_seconds: float = 30.0,
        watch: RegistryWatch | None = None,
    ) -> None:
        parts = httpx.URL(url.rstrip("/"))
        user, password = parts.username, parts.password
        if user_info:
            user, _, password = user_info.partition(":")
        self.url = str(parts.copy_with(username=None, password=None))
        self.shown = redact_url(url.rstrip("/"))
        self.timeout = timeout
        self._auth = httpx.BasicAuth(user, password) if user or password else None
        self._not_found_s = not_found_seconds
        self._watch = watch
        self._schemas: dict[int, Any] = {}
        self._unknown: dict[int, tuple[str, float]] = {}  # id -> (why, when it was given up)

    def _parse(self, ident: int, reply: httpx.Response) -> bool:
        """Take ``reply``; False for a 404 (the caller decides when to give up)."""
        if reply.status_code == 404:
            return False
        reply.raise_for_status()
        body = reply.json()
        kind = body.get("schemaType", "AVRO")
        if kind != "AVRO":
            self._unknown[ident] = (f"schema id {ident} is {kind}, not Avro", float("inf"))
            return True
        self._schemas[ident] = fastavro.parse_schema(_tagged(json.loads(body["schema"])))
        return True

    def _not_found(self, ident: int) -> None:
        self._unknown[ident] = (
            f"schema id {ident} is not in the registry at {self.shown} (asked for "
            f"{self._not_found_s:g}s: mapping.registry_not_found_seconds)",
            time.monotonic(),
        )

    def known(self, ident: int) -> bool:
        """Whether ``ident`` was fetched, or found missing less than ``not_found_seconds`` ago."""
        if ident in self._schemas:
            return True
        unknown = self._unknown.get(ident)
        return unknown is not None and time.monotonic() - unknown[1] < self._not_found_s

    async def _pause(self, seconds: float) -> None:
        """Wait, beating every second (the read loop is alive while it waits)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._watch is not None:
                self._watch.beat()
            await asyncio.sleep(min(1.0, left))

    async def prefetch(self, raws: list[bytes | None]) -> None:
        """Fetch the schemas of every wire-format value in ``raws`` not fetched yet. A 404 is asked
        again with backoff for ``not_found_seconds``; while the registry cannot be reached, every
        second (reading waits)."""
        missing = {i for raw in raws if (i := schema_id(raw)) is not None and not self.known(i)}
        if not missing:
            return
        async with httpx.AsyncClient(timeout=self.timeout, auth=self._auth) as client:
            for ident in sorted(missing):
                await self._fetch_one(client, ident)

    async def _fetch_one(self, client: httpx.AsyncClient, ident: int) -> None:
        down_since: float | None = None
        first_404: float | None = None
        wait_404 = 0.25
        try:
            while True:
                try:
                    found = self._parse(ident, await client.get(f"{self.url}/schemas/ids/{ident}"))
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    if down_since is None:
                        down_since = time.monotonic()
                        if self._watch is not None:
                            self._watch.registry_waiting(True)
                        log.error(
                            "schema_registry_unavailable",
                            url=self.shown,
                            schema_id=ident,
                            error=redact_url(f"{type(exc).__name__}: {exc}"),
                            action="reading waits (not ready, still alive) until the registry answers",
                        )
                    await self._pause(1.0)
                    continue
                if down_since is not None:
                    log.info(
                        "schema_registry_available",
                        url=self.shown,
                        waited_s=round(time.monotonic() - down_since, 1),
                    )
                    down_since = None
                    if self._watch is not None:
                        self._watch.registry_waiting(False)
                if found:
                    return
                now = time.monotonic()
                first_404 = now if first_404 is None else first_404
                if now - first_404 >= self._not_found_s:
                    self._not_found(ident)
                    log.warning(
                        "schema_id_not_found",
                        url=self.shown,
                        schema_id=ident,
                        asked_s=round(now - first_404, 1),
                    )
                    return
                await self._pause(min(wait_404, self._not_found_s - (now - first_404)))
                wait_404 = min(wait_404 * 2, 5.0)
        finally:
            if down_since is not None and self._watch is not None:
                self._watch.registry_waiting(False)  # cancelled while waiting (a stop): no longer waiting

    def fetch(self, ident: int) -> None:
        """Fetch one schema, blocking (the offline commands); DecodeError when it cannot be had."""
        try:
            reply = httpx.get(f"{self.url}/schemas/ids/{ident}", timeout=self.timeout, auth=self._auth)
            if not self._parse(ident, reply):
                self._unknown[ident] = (
                    f"schema id {ident} is not in the registry at {self.shown}",
                    time.monotonic(),
                )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            error = redact_url(str(exc))
            raise DecodeError(f"schema id {ident}: registry {self.shown} unavailable: {error}") from None

    def decode(self, raw: bytes, what: str, blocking: bool = False) -> Any:
        """The datum in ``raw`` (the wire format), as JSON-like values."""
        ident = schema_id(raw)
        assert ident is not None
        if blocking and not self.known(ident):
            self.fetch(ident)
        if ident not in self._schemas:
            if ident in self._unknown:  # given up on by the last prefetch (its window may be over)
                raise DecodeError(f"{what}: {self._unknown[ident][0]}")
            raise DecodeError(f"{what}: schema id {ident} was not fetched from the registry")
        try:
            datum = fastavro.schemaless_reader(io.BytesIO(raw[_HEADER:]), self._schemas[ident], None)
        except Exception as exc:  # fastavro raises whatever the bytes lead it to
            raise DecodeError(f"{what}: not Avro of schema id {ident}: {type(exc).__name__}: {exc}") from None
        return jsonable(datum)
