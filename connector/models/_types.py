"""Constrained scalar types shared by the vendor models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_RFC3339_HINT = "an RFC 3339 timestamp with a time zone, e.g. 2023-04-25T13:25:00-05:00"


def _rfc3339(value: str) -> str:
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    if "T" not in text.upper() and " " not in text:
        raise ValueError(f"must be {_RFC3339_HINT}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be {_RFC3339_HINT}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"must be {_RFC3339_HINT} (the time zone is missing)")
    return value


Timestamp = Annotated[str, AfterValidator(_rfc3339)]
"""An RFC 3339 timestamp, kept as the caller wrote it so that it is forwarded byte for byte."""


def parse_timestamp(value: str) -> datetime:
    """Parse a value already checked by :data:`Timestamp`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))


Str30 = Annotated[str, StringConstraints(max_length=30)]
Str45 = Annotated[str, StringConstraints(max_length=45)]
Str64 = Annotated[str, StringConstraints(max_length=64)]
Str100 = Annotated[str, StringConstraints(max_length=100)]
Str255 = Annotated[str, StringConstraints(max_length=255)]
Str1000 = Annotated[str, StringConstraints(max_length=1000)]
