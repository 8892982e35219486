"""The partitions this member owns, each with its whole state in one object.

One :class:`OwnedPartition` per partition of the current assignment holds everything that lives as
long as the member owns it: its status, its offsets (read, resolved, committed), what its last commit
said (the previous owner's settle-by, read position and parking state), the warm-up re-read, the
lookahead, the dead letters being written and the parking state. A revoke drops the object, and with
it all of that at once. The life of one::

    ASSIGNING ──metadata read──▶ WARMING ──re-read done──▶ OWNED ──revoke──▶ REVOKING ──▶ (dropped)
        │                                                                     ▲
        └──metadata unreadable──▶ HELD ───────────────────────────────────────┘

- **ASSIGNING**: paused; its last commit's metadata is being read (again, on the commit loop, when the
  broker could not be asked). Neither read, sent for nor committed.
- **HELD**: the metadata is ours but cannot be used (malformed, or a newer version's field this one
  must understand): neither read, sent for nor committed, so that the metadata stays for a member that
  can read it; said once in the log and by ``connector_partitions_held``.
- **WARMING**: read from ``warmup_records`` before the committed offset up to the end of the previous
  owner's lookahead, without sending: what was delivered before is remembered (stale events are
  recognised) and the newest state of each order ahead is noted (:mod:`connector.lookahead`); then
  read again from the committed offset. Committed (at the committed offset, renewing the lease).
- **OWNED**: read, coalesced, sent for and committed.
- **REVOKING**: nothing new starts; its calls finish, its last commit is a hand-over.

:meth:`Assignment.commit_plan` is the pure part of a commit: which offset and metadata each partition
gets, and why a partition is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from connector.lookahead import Lookahead
from connector.metadata import CommitMeta, Origin
from connector.offsets import PartitionOffsets
from connector.structs import TopicPartition

if TYPE_CHECKING:
    from connector.parked import ParkState


class PartitionStatus(StrEnum):
    """Where an owned partition is in its life (module docstring)."""

    ASSIGNING = "assigning"
    HELD = "held"
    WARMING = "warming"
    OWNED = "owned"
    REVOKING = "revoking"


@dataclass(eq=False)
class OwnedPartition:
    """Everything this member keeps about one partition it owns."""

    tp: TopicPartition
    status: PartitionStatus = PartitionStatus.ASSIGNING
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    inherited: CommitMeta = field(default_factory=CommitMeta)  # what its last commit said
    origin: Origin = Origin.NONE
    problem: str = ""  # HELD: why
    start: int | None = None  # the committed offset at assignment (or the first position read)
    warm_until: int | None = None  # WARMING: the re-read ends before this offset
    lookahead: Lookahead | None = None
    committed: int | None = None  # the last offset this member committed
    announced: int | None = None  # the read position its last successful commit announced
    at_horizon: bool = False  # paused: read as far past ``announced`` as a member may
    dead_letters: dict[asyncio.Task[None], None] = field(default_factory=dict)
    park: ParkState | None = None

    @property
    def reading(self) -> bool:
        """Whether records of it are handled (warm-up re-read, or for real)."""
        return self.status in (PartitionStatus.WARMING, PartitionStatus.OWNED)

    @property
    def sending(self) -> bool:
        """Whether its changes may be sent (the fence and the budget decide when)."""
        return self.status is PartitionStatus.OWNED

    @property
    def committable(self) -> bool:
        """Whether a commit of it may be made now (its metadata is known and usable)."""
        return self.status in (PartitionStatus.WARMING, PartitionStatus.OWNED, PartitionStatus.REVOKING)

    def read_to(self) -> int | None:
        """What a commit announces as read: this member's next offset, or the previous owner's, if
        that is further (until this member has read past it, what the previous owner may have sent
        is still ahead of the committed offset)."""
        mine = self.offsets.next_offset
        theirs = self.inherited.read_to
        if mine is None or (theirs is not None and theirs > mine):
            return theirs
        return mine


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """What a commit sends: each partition's offset and metadata; and the partitions left out, why."""

    offsets: dict[TopicPartition, tuple[int, CommitMeta]]
    skipped: dict[TopicPartition, str]


class Assignment:
    """The partitions this member owns now (by the latest rebalance), and their totals."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, OwnedPartition] = {}

    def __iter__(self) -> Iterator[OwnedPartition]:
        return iter(self._parts.values())

    def __contains__(self, tp: object) -> bool:
        return tp in self._parts

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, tp: TopicPartition) -> OwnedPartition:
        """``tp`` was assigned: a fresh state, ASSIGNING."""
        part = self._parts[tp] = OwnedPartition(tp)
        return part

    def get(self, tp: TopicPartition) -> OwnedPartition | None:
        """The state of ``tp`` while it is owned."""
        return self._parts.get(tp)

    def drop(self, tp: TopicPartition) -> OwnedPartition | None:
        """``tp`` was revoked (or lost): its state goes with it."""
        return self._parts.pop(tp, None)

    def read_below(self, tp: TopicPartition, assignment: object) -> int | None:
        """The offset of ``tp`` below which every record was handed to the live traffic: read by
        this member (resolved, or known to the coalescer and its jobs), or resolved and committed
        before it owned the partition. None unless ``tp`` is owned, in ``assignment`` (what
        :meth:`owned` gave for it: revoked and assigned again, the coalescer forgot its orders)."""
        part = self._parts.get(tp)
        if part is None or part is not assignment or part.status is not PartitionStatus.OWNED:
            return None
        if part.offsets.next_offset is not None:
            return part.offsets.next_offset
        return part.committed if part.committed is not None else part.start

    def parked(self, tp: TopicPartition, tenant: str) -> bool:
        """Whether ``tenant`` is parked on ``tp`` (its records there wait on the parking topic, or
        are being replayed)."""
        part = self._parts.get(tp)
        return part is not None and part.park is not None and tenant in part.park.parked

    def owned(self) -> dict[TopicPartition, object]:
        """Partitions owned and sent for (neither being assigned, warmed nor revoked), each with what
        stands for this assignment of it (a partition revoked and assigned again is another)."""
        return {tp: p for tp, p in self._parts.items() if p.status is PartitionStatus.OWNED}

    def partitions(self, *statuses: PartitionStatus) -> set[TopicPartition]:
        """Owned partitions, in any of ``statuses`` (every one when none is given)."""
        return {tp for tp, p in self._parts.items() if not statuses or p.status in statuses}

    def resolve(self, tp: TopicPartition, offset: int) -> bool:
        """Resolve ``offset`` of an owned partition; False when not owned or not outstanding."""
        part = self._parts.get(tp)
        return part is not None and part.offsets.resolve(offset)

    # -- totals over every owned partition (the read-ahead bounds) ----------------------------
    @property
    def unresolved(self) -> int:
        """Unresolved events over all partitions."""
        return sum(p.offsets.unresolved for p in self._parts.values())

    @property
    def held(self) -> int:
        """Offsets kept over all partitions (unresolved, and resolved behind an unresolved one)."""
        return sum(p.offsets.held for p in self._parts.values())

    @property
    def unresolved_bytes(self) -> int:
        """Bytes of unresolved events over all partitions."""
        return sum(p.offsets.unresolved_bytes for p in self._parts.values())

    def oldest_unsynced_age(self, now: float) -> float:
        """Seconds since the oldest unresolved event of any partition was produced (0: none)."""
        stamps = [t for p in self._parts.values() if (t := p.offsets.oldest_timestamp())]
        return max(0.0, now - min(stamps)) if stamps else 0.0

    def committed(self) -> dict[TopicPartition, int]:
        """The last offsets this member committed, per owned partition."""
        return {tp: p.committed for tp, p in sorted(self._parts.items()) if p.committed is not None}

    # -- commits ------------------------------------------------------------------------------
    def commit_plan(
        self,
        settle_by: Mapping[TopicPartition, float],
        parking: Mapping[TopicPartition, CommitMeta] | None = None,
        only: set[TopicPartition] | None = None,
        handover: bool = False,
    ) -> CommitPlan:
        """What to commit: for each owned partition (``only`` those given), the first unresolved
        offset and the metadata announcing ``settle_by`` (the fence's), the read position and the
        parking state (``parking``: its current state, when parking knows the partition; else what
        the last commit said, carried forward unchanged). A partition whose metadata is not known or
        not usable is left out, as is one being revoked unless this is the hand-over."""
        offsets: dict[TopicPartition, tuple[int, CommitMeta]] = {}
        skipped: dict[TopicPartition, str] = {}
        for tp, part in sorted(self._parts.items()):
            if only is not None and tp not in only:
                continue
            if not part.committable:
                skipped[tp] = part.status.value if not part.problem else f"{part.status}: {part.problem}"
                continue
            if part.status is PartitionStatus.REVOKING and not handover:
                skipped[tp] = "revoking"
                continue
            offset = part.offsets.committable()
            if offset is None:
                skipped[tp] = "nothing read yet"
                continue
            carried = (parking or {}).get(tp) or part.inherited
            meta = CommitMeta(
                settle_by=settle_by.get(tp, 0.0),
                read_to=part.read_to(),
                park_partition=carried.park_partition,
                park_from=carried.park_from,
                parked=carried.parked,
                replay_from=carried.replay_from if carried.version >= 2 else _v1_starts(carried),
                tokens=carried.tokens,
                extra=part.inherited.extra,
            )
            offsets[tp] = (offset, meta)
        return CommitPlan(offsets, skipped)


def _v1_starts(meta: CommitMeta) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(meta.replay_starts.items()))


__all__ = ["Assignment", "CommitPlan", "OwnedPartition", "PartitionStatus"]
