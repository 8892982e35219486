"""The record types every stage shares, independent of the Kafka and HTTP client libraries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """A topic and partition (hashable, ordered; not the Kafka client's own type)."""

    topic: str
    partition: int
    _hash: int = field(init=False, repr=False, compare=False)
    """Made once: every stage looks partitions up in dicts and sets, several times a record."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.topic, self.partition)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:  # one object per partition, mostly (``Record.tp``)
            return True
        if not isinstance(other, TopicPartition):
            return NotImplemented
        return self.partition == other.partition and self.topic == other.topic

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"

    def __reduce__(self) -> tuple[type[TopicPartition], tuple[str, int]]:
        """Pickled without its hash, which is made again in the process that reads it (a string's
        hash differs from one process to the next)."""
        return TopicPartition, (self.topic, self.partition)


_PARTITIONS: dict[tuple[str, int], TopicPartition] = {}


@dataclass(slots=True, unsafe_hash=True)
class Record:
    """One Kafka record, as the pipeline needs it.

    Immutable, as a frozen dataclass would be, but checked by mypy alone (every field ``Final``):
    a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, 1.1 µs a record
    against 0.4 µs, paid for every record read. Hashed by its fields, as a frozen one is."""

    topic: Final[str]
    partition: Final[int]
    offset: Final[int]
    key: Final[bytes | None]
    value: Final[bytes | None]
    headers: Final[tuple[tuple[str, bytes], ...]] = ()
    timestamp_ms: Final[int] = 0
    parked_at: Final[int] = -1
    """For an event replayed from the parking topic (``connector/park/``), its offset there; the rest of the
    record is the original's, as it was read from its own partition."""
    tp: Final[TopicPartition] = field(init=False, repr=False, compare=False)
    """The record's topic and partition (made once: every stage asks for it)."""

    def __post_init__(self) -> None:
        where = (self.topic, self.partition)
        tp = _PARTITIONS.get(where)
        if tp is None:  # one object per partition, shared by every record and remembered version
            tp = _PARTITIONS[where] = TopicPartition(self.topic, self.partition)
        object.__setattr__(self, "tp", tp)  # Final: set once, here

    def where(self) -> dict[str, object]:
        """The record's place (topic, partition, offset), as every log line about it names it."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @property
    def size(self) -> int:
        """Bytes held in memory for this record (key + value + headers)."""
        size = len(self.key or b"") + len(self.value or b"")
        if self.headers:
            size += sum(len(k) + len(v or b"") for k, v in self.headers)
        return size


@dataclass(slots=True, unsafe_hash=True)
class Version:
    """Where a change stands in its order's history: the order's ``updated_at`` (epoch seconds) when
    the event carries one, and its position in the log. Immutable as :class:`Record` is (made for
    nearly every record read)."""

    updated_at: Final[float | None]
    tp: Final[TopicPartition]
    offset: Final[int]

    def older_than(self, other: Version) -> bool:
        """True when this is an earlier state than ``other``: by ``updated_at`` when both have one
        (the same ``updated_at``: the earlier in the log, within one partition), else by offset
        within one partition (events of different partitions without ``updated_at`` are never
        older than each other)."""
        if (
            self.updated_at is not None
            and other.updated_at is not None
            and self.updated_at != other.updated_at
        ):
            return self.updated_at < other.updated_at
        return self.tp == other.tp and self.offset < other.offset

    def joined(self, other: Version | None) -> Version:
        """The version of one state that stands for two events (an event skipped as identical to
        it; or two deletes, every delete being the same state): the later ``updated_at`` of the two
        and the later place in the log, so that an event older than either is older than it. A
        tombstone (no ``updated_at``) after a delete so keeps the delete's time: an update re-sent
        after both is stale, not the order brought back."""
        if other is None:
            return self
        stamps = [s for s in (self.updated_at, other.updated_at) if s is not None]
        place = other if other.tp == self.tp and other.offset > self.offset else self
        return Version(max(stamps) if stamps else None, place.tp, place.offset)


class Pending(Protocol):
    """What a lazy read keeps of an upsert instead of its parsed body (one object a change): how to
    make the body again from the record, and the change's digest."""

    def __call__(self) -> dict[str, Any]:
        """The body, made now (raises the InputError the read path would: MappingError for a
        mapping's ``order``)."""
        ...

    def digest(self, body: dict[str, Any] | None) -> bytes:
        """The change's digest; ``body``: made by the call already, None for not made yet."""
        ...


@dataclass(slots=True)
class OrderChange:
    """A decoded, valid event: what to do to which order."""

    record: Record
    external_id: str
    op: Literal["upsert", "delete"]
    body: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    _digest: bytes | None = field(default=b"", repr=False)
    """See :attr:`digest`; None while a lazy read's is not made yet."""
    unknown: tuple[str, ...] = ()
    validated: bool = False  # the whole body was checked against the vendor model
    tenant: str = ""  # the shop it is for ("": the deployment's only one)
    pending: Pending | None = field(default=None, repr=False, compare=False)
    """The body still to be made (a lazy read's): made just before the change is sent
    (:meth:`complete`), never for a change replaced before then."""
    _version: Version | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        """What changes are coalesced by: one order of one tenant."""
        return f"{self.tenant}/{self.external_id}" if self.tenant else self.external_id

    @property
    def tp(self) -> TopicPartition:
        """The partition the change was read from."""
        return self.record.tp

    @property
    def version(self) -> Version:
        """The change's place in its order's history."""
        if self._version is None:
            stamp = self.updated_at.timestamp() if self.updated_at is not None else None
            self._version = Version(stamp, self.record.tp, self.record.offset)
        return self._version

    @property
    def digest(self) -> bytes:
        """What identical events share (``connector.decode.digest``). A lazy read's whose body
        carries its ``updated_at`` is made on first use (:meth:`differs_after`): most events of a
        backlog are replaced by a newer one before anything compares or sends them."""
        if self._digest is None:
            assert self.pending is not None, "a digest not made yet keeps what makes it"
            self._digest = self.pending.digest(None)
        return self._digest

    def differs_after(self, version: Version) -> bool:
        """Whether this change certainly differs from every state of ``version`` or older, without
        making its digest: its digest is not made yet (it is a lazy read's, and covers its
        ``updated_at``, which is written in the body or the record), and its ``updated_at`` is later
        than ``version``'s (which no identical state of an older version can have)."""
        if self._digest is not None or version.updated_at is None:
            return False
        stamp = self.version.updated_at
        return stamp is not None and stamp > version.updated_at

    def complete(self) -> None:
        """Make the body when it is still to be made (a lazy read's), and its digest with it; raises
        what the read path raises (a mapping's MappingError, stage ``map``)."""
        make = self.pending
        if make is None:
            return
        self.body = make()
        self.pending = None
        if self._digest is None:
            self._digest = make.digest(self.body)


@dataclass(frozen=True, slots=True)
class Mark:
    """What is remembered of a change the vendor acknowledged: no payload, only its digest and
    version (a few tens of bytes a key, whatever the size of the order)."""

    digest: bytes
    version: Version
    deleted: bool = False
    """The newest version accepted is a delete: a later delete (a tombstone, a delete sent again)
    is the same state and joins its version (:meth:`Version.joined`)."""


__all__ = ["Mark", "OrderChange", "Pending", "Record", "TopicPartition", "Version"]
