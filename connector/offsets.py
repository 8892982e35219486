"""Commit watermarks: which offset of each partition is safe to commit.

Events complete out of order (deliveries run concurrently), so each partition keeps the offsets it has
handed out and which of them are resolved. The committable offset is the first unresolved one, or one
past the highest seen when all are resolved; so a commit never passes an event that is not resolved.
Offsets resolved behind an unresolved one are *held* (kept until the head resolves, 9 bytes each); the
read-ahead bounds count them (``kafka.max_held_offsets``) beside the unresolved events and their bytes,
so a stuck event pauses its partition instead of letting memory grow.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass, field


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets of one partition: tracked in arrival (increasing) order, resolved in any order.

    The offsets kept (from the first unresolved to the last tracked) cost 9 bytes each: an ``array``
    of offsets and a ``bytearray`` of flags (1: unresolved). Only unresolved offsets keep more (their
    size and timestamp), so a backlog whose events are mostly replaced costs little to hold.
    """

    _offsets: array[int] = field(default_factory=lambda: array("q"))
    _unresolved: bytearray = field(default_factory=bytearray)
    _start: int = 0  # index of the first offset kept
    _sizes: dict[int, int] = field(default_factory=dict)
    _times: dict[int, float] = field(default_factory=dict)
    _next: int | None = None
    unresolved_bytes: int = 0

    def start_at(self, offset: int) -> None:
        """The partition is read from ``offset`` (its committed position): committable until then."""
        if self._next is None:
            self._next = offset

    def follows(self, offset: int) -> bool:
        """Whether ``offset`` comes after every offset tracked (or started at) so far."""
        return self._next is None or offset >= self._next

    def track(self, offset: int, size: int = 0, timestamp: float = 0.0) -> None:
        """Hand out ``offset`` (its record's ``timestamp`` in seconds); it must be higher than every
        offset tracked before."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} tracked after {self._next - 1}")
        self._offsets.append(offset)
        self._unresolved.append(1)
        self._sizes[offset] = size
        self._times[offset] = timestamp
        self.unresolved_bytes += size
        self._next = offset + 1

    def resolve(self, offset: int) -> bool:
        """Mark ``offset`` resolved; False when it was not outstanding (already resolved or unknown)."""
        size = self._sizes.pop(offset, None)
        if size is None:
            return False
        self.unresolved_bytes -= size
        self._times.pop(offset, None)
        self._unresolved[bisect_left(self._offsets, offset, self._start)] = 0
        flags, end = self._unresolved, len(self._offsets)
        start = self._start
        while start < end and not flags[start]:
            start += 1
        if start == end:
            del self._offsets[:], self._unresolved[:]
            start = 0
        elif start > 4096 and start * 2 > end:  # compact, amortised
            del self._offsets[:start], self._unresolved[:start]
            start = 0
        self._start = start
        return True

    def is_unresolved(self, offset: int) -> bool:
        """Whether ``offset`` was tracked and is not resolved yet."""
        return offset in self._sizes

    @property
    def unresolved(self) -> int:
        """How many tracked offsets are not resolved yet."""
        return len(self._sizes)

    @property
    def held(self) -> int:
        """Offsets kept: every one from the first unresolved to the last tracked."""
        return len(self._offsets) - self._start

    def oldest_timestamp(self) -> float | None:
        """The record timestamp of the first unresolved offset (the oldest unsynced event)."""
        return self._times.get(self._offsets[self._start]) if self.held else None

    @property
    def next_offset(self) -> int | None:
        """The offset after the last one tracked (or started at); None before either."""
        return self._next

    def committable(self) -> int | None:
        """The offset to commit (the next one to read), or None when nothing was ever tracked."""
        if self.held:
            return self._offsets[self._start]
        return self._next
