"""The commit metadata: what a member tells the partition's next owner, in the offset commit itself.

Every commit of a partition carries one line of text (Kafka keeps it with the offset, at most the
broker's ``offset.metadata.max.bytes``, 4096 by default) of ``;``-separated ``name=value`` fields::

    settle_by=1800000012.500;v=2;read_to=4711;pq=3;park_from=120;parked=acme,bolt;from=acme:120,bolt:131;tokens=9f2c01aa:4700

========== ======= ===============================================================================
field      since   meaning
========== ======= ===============================================================================
settle_by  v0      wall time after which no request of this member for the partition can land
                   (the next owner sends nothing before it: ``fence.py``). Always first.
v          v2      the format version (absent: v1, or v0 before parking existed)
read_to    v2      the member's read position when it committed; it reads (and so sends) nothing
                   past ``read_to + kafka.lookahead_records`` until a later commit says so, and the
                   next owner reads that far ahead before it sends (never an older state after a
                   newer one)
pq         v2      the parking topic's partition this partition's parked events go to (recorded:
                   never recomputed once something was parked)
park_from  v1      the first parking offset still to replay, over every shop (``min`` of ``from``)
parked     v1      shops whose events of this partition go to the parking topic
from       v2      per shop, the first parking offset of its own still to replay
tokens     v1      parking writers whose records count, with the offset their last commit reached:
                   read by v1 members only (v2 replays a record parked below the committed offset)
========== ======= ===============================================================================

**Version rule.** Fields are only ever added. A reader takes the fields it knows and keeps the rest
verbatim, writing them back on its next commit, so a newer member's state survives an older member
that owned the partition meanwhile. A field whose value would be wrong once carried forward unchanged
is written with a ``!`` before its name: a reader that does not know such a field must not act on the
partition (:attr:`Origin.UNREADABLE`: it neither sends for it nor commits it, and says so). Metadata
of another tool (not starting with ``settle_by=``) holds no parking state and is given the worst-case
hold; ours that does not parse is unreadable, never read as "no hold" or "nothing parked".

A v1 member (0.1.0) reads ``settle_by``, ``park_from``, ``parked`` and ``tokens`` and ignores the
rest (it drops them when it commits: a v2 member reading v1 metadata replays every parked shop from
``park_from`` and recomputes ``pq`` as v1 did). :func:`encode` fits the text in the budget by dropping
the oldest inherited tokens first (only v1 readers use them); what else grows with the number of
parked shops is bounded before it is written (``connector.park``: a shop is parked on a partition
only while its metadata still fits).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

VERSION = 2
"""The version this release writes (the ``v`` field)."""
MAX_BYTES = 4096
"""The broker's default ``offset.metadata.max.bytes``: a commit carrying more is refused whole."""
SETTLE_BY = "settle_by"
MUST_UNDERSTAND = "!"
_KNOWN = frozenset({"settle_by", "v", "read_to", "pq", "park_from", "parked", "from", "tokens"})


class Origin(StrEnum):
    """Who wrote the metadata a partition was committed with, as far as the reader can tell."""

    NONE = "none"  # never committed, or committed without metadata (an operator's offset reset)
    OURS = "ours"  # this format, any version: every field this release knows was read
    FOREIGN = "foreign"  # another tool's text: no parking state; the hold is assumed at its worst
    UNREADABLE = "unreadable"  # ours, but malformed or carrying a must-understand field unknown here


@dataclass(frozen=True, slots=True)
class CommitMeta:
    """What one commit of one partition carries besides its offset."""

    settle_by: float = 0.0
    version: int = VERSION
    read_to: int | None = None
    park_partition: int | None = None  # pq
    park_from: int | None = None
    parked: tuple[str, ...] = ()
    replay_from: tuple[tuple[str, int], ...] = ()  # from: per shop
    tokens: tuple[tuple[str, int], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()  # fields of a newer version, carried forward verbatim

    @property
    def replay_starts(self) -> dict[str, int]:
        """Per shop, the first parking offset to replay from: ``from`` (v2), else every shop of
        ``parked`` from ``park_from`` (v1)."""
        if self.version >= 2:
            return dict(self.replay_from)
        if self.park_from is None:
            return {}
        return dict.fromkeys(self.parked, self.park_from)


@dataclass(frozen=True, slots=True)
class Read:
    """Metadata as read back: where it came from, what it says, and why it cannot be used."""

    origin: Origin
    meta: CommitMeta = field(default_factory=CommitMeta)
    problem: str = ""


def encode(meta: CommitMeta, budget: int = MAX_BYTES) -> str:
    """The text of ``meta`` (shop names and tokens never hold ``,;:=``), within ``budget`` bytes:
    the oldest tokens go first when it would not fit. Raises ValueError when it cannot fit even
    without them (the caller bounds the rest: see the module docstring)."""
    head = f"{SETTLE_BY}={meta.settle_by:.3f};v={meta.version}"
    if meta.read_to is not None:
        head += f";read_to={meta.read_to}"
    if meta.park_partition is not None:
        head += f";pq={meta.park_partition}"
    if meta.park_from is not None:
        head += f";park_from={meta.park_from}"
    if meta.parked:
        head += ";parked=" + ",".join(meta.parked)
    if meta.replay_from:
        head += ";from=" + ",".join(f"{name}:{at}" for name, at in meta.replay_from)
    tail = "".join(f";{name}={value}" for name, value in meta.extra)
    tokens = list(meta.tokens)
    while True:
        text = head + (";tokens=" + ",".join(f"{t}:{o}" for t, o in tokens) if tokens else "") + tail
        if len(text.encode()) <= budget:
            return text
        if not tokens:
            raise ValueError(f"commit metadata of {len(text.encode())} bytes exceeds {budget}")
        tokens.pop(0)


def size(meta: CommitMeta) -> int:
    """Bytes of ``meta``'s text, tokens aside (what cannot be shed to fit the budget)."""
    return len(encode(replace(meta, tokens=()), budget=1 << 30).encode())


def decode(text: str | None) -> Read:
    """Read commit metadata back (the module docstring says what each origin means)."""
    if not text:
        return Read(Origin.NONE)
    if not text.startswith(SETTLE_BY + "="):
        return Read(Origin.FOREIGN, problem="not written by the connector")
    fields: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not eq or name in fields:
            return Read(Origin.UNREADABLE, problem=f"malformed field {part[:40]!r}")
        if name in _KNOWN:
            fields[name] = value
        elif name.startswith(MUST_UNDERSTAND):
            return Read(Origin.UNREADABLE, problem=f"field {name!r} of a newer version is not understood")
        else:
            extra.append((name, value))
    try:
        version = int(fields.get("v", "1"))
        meta = CommitMeta(
            settle_by=float(fields[SETTLE_BY]),
            version=version,
            read_to=_int(fields.get("read_to")),
            park_partition=_int(fields.get("pq")),
            park_from=_int(fields.get("park_from")),
            parked=tuple(n for n in fields.get("parked", "").split(",") if n),
            replay_from=_pairs(fields.get("from", "")),
            tokens=_pairs(fields.get("tokens", "")),
            extra=tuple(extra),
        )
    except (KeyError, ValueError) as exc:
        return Read(Origin.UNREADABLE, problem=f"{type(exc).__name__}: {exc}")
    return Read(Origin.OURS, meta)


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _pairs(value: str) -> tuple[tuple[str, int], ...]:
    out = []
    for item in (v for v in value.split(",") if v):
        name, sep, number = item.rpartition(":")
        if not sep or not name:
            raise ValueError(f"malformed pair {item!r}")
        out.append((name, int(number)))
    return tuple(out)


__all__ = [
    "MAX_BYTES",
    "VERSION",
    "CommitMeta",
    "Origin",
    "Read",
    "decode",
    "encode",
    "size",
]
