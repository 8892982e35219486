"""`connector map`: run the mapping stage offline. Each event as the connector's own envelope (JSON
lines), or with ``--explain`` one event step by step: the record, the envelope taken off, the
mapping's output, the connector's own envelope, what the read path takes from it, and the vendor
model's verdict."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from connector.config import MappingSettings
from connector.conform import check
from connector.errors import InputError
from connector.mapping import NATIVE_STEP, Mapper, Trace
from connector.mapping._types import text_headers
from connector.structs import Record
from connector.validate import read_lines, record_of
from connector.vendors import Target


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _record(record: Record) -> dict[str, Any]:
    """The record as read: the key and headers as text (as ``key`` and ``header()`` hand them to
    the mapping: a header ``007`` stays ``"007"``), the value as JSON where it is."""

    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw.decode("utf-8", "replace")

    value: Any = text(record.value)
    if record.value is not None:
        with contextlib.suppress(ValueError):
            value = json.loads(record.value)
    return {"key": text(record.key), "headers": text_headers(record), "value": value}


def explain(mapper: Mapper, record: Record, target: Target, out: TextIO) -> bool:
    """Print each step of reading ``record``; True when it ends valid."""
    trace: Trace = [("record", _record(record))]
    ok = False
    try:
        change = mapper.read(record, target, validate=False, trace=trace)
        trace.append(
            (
                "read path (what coalescing keys and orders by)",
                {
                    "external_id": change.external_id,
                    "op": change.op,
                    "updated_at": change.updated_at.isoformat() if change.updated_at else None,
                    "digest": change.digest.hex(),
                },
            )
        )
        check(change, target)
        trace.append(
            (
                f"vendor validation ({target.kind})",
                "ok: this body would be sent" if change.op == "upsert" else "ok: a delete of this order",
            )
        )
        ok = True
    except InputError as exc:
        trace.append((f"dead-lettered, stage {exc.stage}", str(exc)))
    for number, (step, output) in enumerate(trace, start=1):
        print(f"{number}. {step}", file=out)
        for line in _show(output).splitlines():
            print(f"   {line}", file=out)
    return ok


def run(
    lines: Iterable[bytes],
    mapping: MappingSettings,
    target: Target,
    max_bytes: int,
    out: TextIO,
    *,
    records: bool = False,
    explain_line: int | None = None,
) -> int:
    """``connector map``; exit code 1 when an event (the explained one) cannot be read."""
    mapper = Mapper(mapping, max_bytes, blocking=True)
    failed = 0
    for number, line in read_lines(lines):
        if explain_line is not None and number != explain_line:
            continue
        try:
            record = record_of(line, number, records)
        except InputError as exc:
            print(f"line {number}: {exc.stage}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if explain_line is not None:
            return 0 if explain(mapper, record, target, out) else 1
        try:
            trace: Trace = []
            mapper.read(record, target, validate=False, trace=trace)
        except InputError as exc:
            print(f"line {number}: {exc.stage}: {exc}", file=sys.stderr)
            failed += 1
            continue
        native = next((o for step, o in trace if step == NATIVE_STEP), None)
        print(json.dumps(native, ensure_ascii=False) if native is not None else "null", file=out)
    if explain_line is not None:
        print(f"connector map: no event on line {explain_line}", file=sys.stderr)
        return 1
    return 1 if failed else 0
