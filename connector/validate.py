"""`connector validate FILE|-`: check events offline, one per line, with the pipeline's rules; and the
sample-event files the mapping tools and the examples share.

A line is a Kafka value (JSON), or with ``--records`` a whole record: ``{"key": ..., "headers":
{"name": "text"}, "value": ...}``, where a key or value that is a JSON string is taken as that text,
any other JSON as its compact serialisation, and null as absent (a null value: a tombstone). With a
mapping (``--mapping``, ``--function``, ``--envelope``, or ``--config`` naming a ``[mapping]``
section) every event goes through the mapping stage first, and each valid one's mapped body is shown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from connector.config import MappingSettings
from connector.decode import decode
from connector.errors import DecodeError, InputError
from connector.mapping import Mapper
from connector.structs import OrderChange, Record
from connector.vendors import Target


def _raw(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def record_of(line: bytes, number: int, records: bool, topic: str = "validate") -> Record:
    """Line ``number`` as a record: the value itself, or (``records``) a ``{key, headers, value}``
    object. DecodeError when a record line is not such an object."""
    if not records:
        return Record(topic, 0, number, None, line)
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise DecodeError(f"record line is not JSON: {exc}") from None
    if not isinstance(data, dict) or not set(data) <= {"key", "headers", "value"}:
        raise DecodeError('record line must be an object {"key", "headers", "value"}')
    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise DecodeError("record headers must be an object of texts")
    pairs = tuple((str(k), str(v).encode()) for k, v in headers.items())
    return Record(topic, 0, number, _raw(data.get("key")), _raw(data.get("value")), pairs)


def read_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a file, numbered from 1."""
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def read_with(mapper: Mapper | None, record: Record, target: Target, max_bytes: int) -> OrderChange:
    """``record`` decoded, mapped when ``mapper`` is given, and checked against the vendor model."""
    if mapper is None:
        return decode(record, max_bytes, target)
    return mapper.read(record, target, validate=True)


def validate_lines(
    lines: Iterable[bytes],
    target: Target,
    max_bytes: int,
    out: TextIO,
    *,
    mapping: MappingSettings | None = None,
    records: bool = False,
) -> tuple[int, int]:
    """Decode (and map) every non-blank line; print each failure, and with a mapping each mapped
    body; return (valid, invalid)."""
    mapper = Mapper(mapping, max_bytes, blocking=True) if mapping is not None else None
    valid = invalid = 0
    for number, line in read_lines(lines):
        try:
            change = read_with(mapper, record_of(line, number, records), target, max_bytes)
        except InputError as exc:
            invalid += 1
            print(f"line {number}: {exc.stage}: {exc}", file=out)
            continue
        valid += 1
        if mapper is not None:
            body = json.dumps(change.body, ensure_ascii=False)
            print(f"line {number}: ok: {change.op} {change.external_id}: {body}", file=out)
        for field in change.unknown:
            print(f"line {number}: note: unknown field {field} (forwarded as sent)", file=out)
    return valid, invalid


def run(
    path: str,
    target: Target,
    max_bytes: int,
    *,
    mapping: MappingSettings | None = None,
    records: bool = False,
) -> int:
    """Validate ``path`` (``-``: standard input); exit code 1 when any event is invalid."""
    if path == "-":
        valid, invalid = validate_lines(
            sys.stdin.buffer, target, max_bytes, sys.stdout, mapping=mapping, records=records
        )
    else:
        with open(path, "rb") as handle:
            valid, invalid = validate_lines(
                handle, target, max_bytes, sys.stdout, mapping=mapping, records=records
            )
    print(f"{valid} valid, {invalid} invalid", file=sys.stdout)
    return 1 if invalid else 0
