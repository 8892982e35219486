"""What parking keeps per owned partition, and the parking record's own headers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from connector import constants as wire
from connector.offsets import PartitionOffsets
from connector.structs import Record, Version

PARK_HEADERS = (wire.H_PARKED_FROM, wire.H_PARKED_BY, wire.H_PARKED_HOLD, wire.H_PARKED_AS_OF, wire.H_TENANT)


@dataclass(slots=True)
class Partition:
    """The parking state of one source partition this member owns."""

    q: int  # its parking partition
    token: str  # this member's writer token for it (this assignment)
    parked: set[str] = field(default_factory=set)
    parked_before: frozenset[str] = frozenset()  # parked as the last commit said: before our reads
    inherited: dict[str, int] = field(default_factory=dict)  # earlier writers' tokens: offset limit
    end_at_assign: int = 0  # the parking partition's end when assigned: inherited records lie below
    scan: PartitionOffsets | None = None  # parking offsets read; unresolved = held back or dispatched
    position: int | None = None  # next parking offset to read (None: nothing parked yet)
    dispatched: dict[int, str] = field(default_factory=dict)  # parking offset -> tenant
    held_from: dict[str, int] = field(default_factory=dict)  # tenant -> first offset held back
    held_ts: dict[str, float] = field(default_factory=dict)  # tenant -> time of that record
    writing: Counter[str] = field(default_factory=Counter)  # appends not yet acknowledged
    last_written: int = -1  # highest parking offset this member appended
    frozen: bool = False  # being revoked: nothing more is handed over

    def start(self, offset: int) -> None:
        if self.position is None:
            self.position = offset
            self.scan = PartitionOffsets()
            self.scan.start_at(offset)

    @property
    def park_from(self) -> int | None:
        return self.scan.committable() if self.scan is not None else None


@dataclass(frozen=True, slots=True)
class Parked:
    """A record read back from the parking topic: the original, and its parking facts."""

    record: Record
    tenant: str
    token: str
    hold_until: float
    as_of: Version | None = None  # a newer event of its order it stands for (skipped as identical)


def unpack(r: Record) -> Parked | None:
    """The original record behind a parking record (None: not one of ours)."""
    headers = dict(r.headers)
    try:
        topic, partition, offset = headers[wire.H_PARKED_FROM].decode().rsplit("/", 2)
        tenant, token = headers[wire.H_TENANT].decode(), headers[wire.H_PARKED_BY].decode()
        hold = float(headers.get(wire.H_PARKED_HOLD, b"0"))
        own = tuple((k, v) for k, v in r.headers if k not in PARK_HEADERS)
        original = Record(topic, int(partition), int(offset), r.key, r.value, own, r.timestamp_ms, r.offset)
        as_of = None
        if wire.H_PARKED_AS_OF in headers:
            stamp, _, at = headers[wire.H_PARKED_AS_OF].decode().partition("/")
            as_of = Version(float(stamp) if stamp else None, original.tp, int(at))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return Parked(original, tenant, token, hold, as_of)


def park_headers(
    record: Record, tenant: str, token: str, hold: float, as_of: Version | None
) -> list[tuple[str, bytes]]:
    """The headers of ``record`` parked by ``token``: its own, then where it was read, its tenant,
    who parked it, its hold and the newer version it stands for."""
    headers = [
        *((k, v) for k, v in record.headers if k not in PARK_HEADERS),
        (wire.H_PARKED_FROM, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        (wire.H_TENANT, tenant.encode()),
        (wire.H_PARKED_BY, token.encode()),
    ]
    if hold:
        headers.append((wire.H_PARKED_HOLD, f"{hold:.3f}".encode()))
    if as_of is not None:
        stamp = "" if as_of.updated_at is None else repr(as_of.updated_at)
        headers.append((wire.H_PARKED_AS_OF, f"{stamp}/{as_of.offset}".encode()))
    return headers


__all__ = ["PARK_HEADERS", "Parked", "Partition", "park_headers", "unpack"]
