"""`connector validate FILE|-`: check events offline, one JSON value per line, with the pipeline's rules."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from connector.decode import decode
from connector.errors import InputError
from connector.structs import Record


def validate_lines(
    lines: Iterable[bytes], kind: str, max_bytes: int, out: TextIO, api_version: str = ""
) -> tuple[int, int]:
    """Decode every non-blank line as a Kafka value; print each failure; return (valid, invalid)."""
    valid = invalid = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            change = decode(Record("validate", 0, number, None, line), max_bytes, kind, api_version)
        except InputError as exc:
            invalid += 1
            print(f"line {number}: {exc.stage}: {exc}", file=out)
            continue
        valid += 1
        for field in change.unknown:
            print(f"line {number}: note: unknown field {field} (forwarded as sent)", file=out)
    return valid, invalid


def run(path: str, kind: str, max_bytes: int, api_version: str = "") -> int:
    """Validate ``path`` (``-``: standard input); exit code 1 when any event is invalid."""
    if path == "-":
        valid, invalid = validate_lines(sys.stdin.buffer, kind, max_bytes, sys.stdout, api_version)
    else:
        with open(path, "rb") as handle:
            valid, invalid = validate_lines(handle, kind, max_bytes, sys.stdout, api_version)
    print(f"{valid} valid, {invalid} invalid", file=sys.stdout)
    return 1 if invalid else 0
