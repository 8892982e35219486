"""CloudEvents over Kafka (the CloudEvents Kafka protocol binding, spec version 1.0).

A record is read in the mode the binding's receiver rules give:

- **structured mode**: the ``content-type`` header starts with ``application/cloudevents`` (for
  example ``application/cloudevents+json; charset=UTF-8``); the value is the event in the JSON event
  format: its attributes, and ``data`` (a JSON value) or ``data_base64`` (bytes). A value that is a
  JSON object with ``specversion`` but no such header is read the same way;
- **binary mode**: otherwise, when the ``ce_specversion`` header is there; each attribute is a
  ``ce_<name>`` header (UTF-8), the ``content-type`` header is ``datacontenttype`` and the value is
  ``data`` (JSON, or Avro in the Confluent wire format with a schema registry).

Either way the event the mapping reads is one JSON object: the attributes (extensions too) and
``data``, as the JSON event format writes it, so one mapping reads both modes. ``id``, ``source``,
``specversion`` and ``type`` are required (a record without them is dead-lettered, stage ``decode``);
``time``, when present, is the event's default ordering time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from connector.errors import DecodeError
from connector.mapping._types import Event, record_key, text_headers
from connector.structs import Record

REQUIRED = ("id", "source", "specversion", "type")
STRUCTURED = "application/cloudevents"
HEADER_PREFIX = "ce_"

ReadBytes = Callable[[bytes, str], Any]
"""Parses a value's bytes (JSON, or Avro in the Confluent wire format); the second argument names the
part being read, for error messages."""


def _json_content(content_type: str | None) -> bool:
    """Whether ``datacontenttype`` says JSON (absent: JSON, as the JSON event format assumes)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _checked(attributes: dict[str, Any], mode: str) -> dict[str, Any]:
    for name in REQUIRED:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            raise DecodeError(
                f"not a CloudEvent ({mode} mode): required attribute {name} is missing or empty"
            )
    if not attributes["specversion"].startswith("1."):
        raise DecodeError(f"CloudEvent specversion {attributes['specversion']!r} not supported (1.0)")
    return attributes


def _structured(document: Any, read: ReadBytes) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise DecodeError(
            f"CloudEvent (structured mode) is JSON {type(document).__name__}, expected an object"
        )
    event = _checked(dict(document), "structured")
    if "data_base64" in event:
        encoded = event.pop("data_base64")
        try:
            raw = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            raw = None
        if raw is None:
            raise DecodeError("CloudEvent data_base64 is not base64")
        if not _json_content(event.get("datacontenttype")) and raw[:1] != b"\0":
            raise DecodeError(f"CloudEvent data of content type {event['datacontenttype']!r} cannot be read")
        event["data"] = read(raw, "CloudEvent data_base64")
    return event


def _binary(record: Record, headers: dict[str, str], read: ReadBytes) -> dict[str, Any]:
    event: dict[str, Any] = {
        name.removeprefix(HEADER_PREFIX): value
        for name, value in headers.items()
        if name.startswith(HEADER_PREFIX)
    }
    if "content-type" in headers:
        event["datacontenttype"] = headers["content-type"]
    _checked(event, "binary")
    if record.value is not None:
        content_type = event.get("datacontenttype")
        if not _json_content(content_type) and record.value[:1] != b"\0":
            raise DecodeError(f"CloudEvent data of content type {content_type!r} cannot be read")
        event["data"] = read(record.value, "CloudEvent data")
    return event


def unwrap(record: Record, read: ReadBytes) -> Event | None:
    """The CloudEvent in ``record`` (either mode), as the :class:`Event` a mapping reads (without a
    mapping, the stage reads its ``data`` as the connector's own envelope or a bare order). None for
    a null value without ``ce_`` headers: a tombstone keyed by the order's external_id, as always. Any
    other record that is not a CloudEvent is a DecodeError."""
    headers = text_headers(record)
    if headers.get("content-type", "").lower().startswith(STRUCTURED):
        if record.value is None:
            raise DecodeError("CloudEvent (structured mode) with a null value")
        event = _structured(read(record.value, "value"), read)
    elif f"{HEADER_PREFIX}specversion" in headers:
        event = _binary(record, headers, read)
    elif record.value is None:
        return None
    else:
        document = read(record.value, "value")
        if not (isinstance(document, dict) and "specversion" in document):
            raise DecodeError(
                "not a CloudEvent: no content-type application/cloudevents+json, no ce_specversion "
                "header, no specversion in the value (mapping.envelope = cloudevents)"
            )
        event = _structured(document, read)
    time = event.get("time")
    return Event(
        event, record_key(record), headers, record.topic, time=time if isinstance(time, str) else None
    )


def data_of(event: Event) -> Any:
    """The CloudEvent's ``data``, read as the connector's own envelope when no mapping is set."""
    if "data" not in event.value:
        raise DecodeError(f"CloudEvent {event.value['id']} has no data (and no mapping reads its attributes)")
    return event.value["data"]
