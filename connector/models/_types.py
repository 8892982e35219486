"""Constrained scalar types shared by the vendor models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_RFC3339_HINT = "an RFC 3339 timestamp with a time zone, e.g. 2023-04-25T13:25:00-05:00"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: str) -> str:
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"must be {_RFC3339_HINT}")
    try:
        parse_timestamp(value)
    except ValueError:
        raise ValueError(f"must be {_RFC3339_HINT} (not a real date or time)") from None
    return value


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (Python's parser wants at most 6 fractional digits, and an
    upper-case T; the common form is parsed as is)."""
    if "t" not in value and "z" not in value and len(value) <= 32:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00").replace("z", "+00:00"))
    return datetime.fromisoformat(text.replace("t", "T"))


def parse_instant(value: object) -> datetime | None:
    """A timestamp a vendor answered with, as an instant: None when it is not a string or does not
    parse, and UTC when it carries no offset (ours always do: compared with one of ours, a naive
    time would raise)."""
    if not isinstance(value, str):
        return None
    try:
        stamp = parse_timestamp(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


Timestamp = Annotated[str, AfterValidator(_rfc3339)]
"""An RFC 3339 timestamp, kept as the caller wrote it so that it is forwarded byte for byte."""

Str30 = Annotated[str, StringConstraints(max_length=30)]
Str45 = Annotated[str, StringConstraints(max_length=45)]
Str64 = Annotated[str, StringConstraints(max_length=64)]
Str100 = Annotated[str, StringConstraints(max_length=100)]
Str255 = Annotated[str, StringConstraints(max_length=255)]
Str1000 = Annotated[str, StringConstraints(max_length=1000)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
