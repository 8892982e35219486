"""What parking keeps per owned partition, and the parking record's own headers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from connector import constants as wire
from connector.lookahead import Lookahead
from connector.metadata import CommitMeta, size
from connector.offsets import PartitionOffsets
from connector.structs import Record, Version

PARK_HEADERS = (wire.H_PARKED_FROM, wire.H_PARKED_BY, wire.H_PARKED_HOLD, wire.H_PARKED_AS_OF, wire.H_TENANT)
MAX_TOKENS = 8
"""Writer tokens kept in the commit for members of 0.1.0 (which replay only records of a listed
token): this member's, and the most recent inherited ones."""


@dataclass(slots=True)
class ParkState:
    """The parking state of one source partition this member owns (``OwnedPartition.park``)."""

    q: int  # its parking partition (recorded in the commit: never recomputed once used)
    token: str  # this member's writer token for it (this assignment)
    start: int | None  # its committed offset when assigned: a record parked from below it counts
    parked: set[str] = field(default_factory=set)
    starts: dict[str, int] = field(default_factory=dict)  # per tenant: first parking offset to replay
    tokens: dict[str, int] = field(default_factory=dict)  # inherited writer tokens (0.1.0 readers)
    end_at_assign: int = 0  # the parking partition's end when assigned: inherited records lie below
    position: int | None = None  # next parking offset to read (None: nothing to replay yet)
    scans: dict[str, PartitionOffsets] = field(default_factory=dict)  # per tenant: offsets read
    dispatched: dict[int, str] = field(default_factory=dict)  # parking offset -> tenant
    held_from: dict[str, int] = field(default_factory=dict)  # tenant -> first offset held back
    held_ts: dict[str, float] = field(default_factory=dict)  # tenant -> time of that record
    writing: Counter[str] = field(default_factory=Counter)  # appends not yet acknowledged
    last_written: int = -1  # highest parking offset this member appended
    lookahead: Lookahead | None = None  # the newest version of each order in what is inherited
    looked_ahead: bool = False  # the inherited range was read for the lookahead
    ahead_at: int = 0  # how far the lookahead read

    def begin(self, offset: int) -> None:
        """Replay reads from ``offset`` (the earliest start), unless it already reads from earlier."""
        if self.position is None or offset < self.position:
            self.position = offset

    def scan(self, tenant: str) -> PartitionOffsets:
        """The parking offsets of ``tenant`` read (tracked) so far."""
        found = self.scans.get(tenant)
        if found is None:
            found = self.scans[tenant] = PartitionOffsets()
        return found

    @property
    def unresolved(self) -> int:
        """Parked records read and not resolved yet (held back, or handed over)."""
        return sum(s.unresolved for s in self.scans.values())

    @property
    def held(self) -> int:
        """Parking offsets kept behind a first unresolved one, over every tenant."""
        return sum(s.held for s in self.scans.values())

    def replay_from(self, tenant: str) -> int | None:
        """The first parking offset of ``tenant`` still to replay: its first unresolved one, else
        where reading will go on (never before where its replay starts)."""
        start = self.starts.get(tenant)
        if start is None:
            return None
        scan = self.scans.get(tenant)
        if scan is not None and scan.held:
            first = scan.committable()
            assert first is not None
            return first
        return max(start, self.position) if self.position is not None else start

    def commit_meta(self, offset: int) -> CommitMeta:
        """The parking part of a commit at source ``offset``: the parking partition, the parked
        tenants, where each one's replay resumes, and (for 0.1.0 members) the writer tokens with
        this member's reaching ``offset``."""
        starts = {t: at for t in sorted(self.starts) if (at := self.replay_from(t)) is not None}
        tokens = dict(list(self.tokens.items())[-(MAX_TOKENS - 1) :]) if MAX_TOKENS > 1 else {}
        tokens[self.token] = offset
        return CommitMeta(
            park_partition=self.q,
            park_from=min(starts.values()) if starts else self.position,
            parked=tuple(sorted(self.parked)),
            replay_from=tuple(starts.items()),
            tokens=tuple(tokens.items()),
        )

    def fits_with(self, tenant: str, budget: int) -> bool:
        """Whether the partition's commit metadata, tokens aside, stays within ``budget`` bytes with
        ``tenant`` parked too (every number at its widest)."""
        meta = self.commit_meta(2**62)
        wider = replace(
            meta,
            settle_by=9_999_999_999.999,
            read_to=2**62,
            park_from=2**62,
            parked=(*meta.parked, tenant),
            replay_from=(*((name, 2**62) for name, _ in meta.replay_from), (tenant, 2**62)),
            tokens=(),
        )
        return size(wider) <= budget


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


__all__ = ["MAX_TOKENS", "PARK_HEADERS", "ParkState", "Parked", "park_headers", "unpack"]
