"""Lookahead: the newest version of each order within a range of a log, read before any of it is sent.

A partition's new owner reads again what its previous owner may already have read and sent: the
records from the committed offset up to where that owner may have read (its last commit's
``read_to``, plus ``kafka.lookahead_records``: a member never reads further than that ahead of its
last commit). Sending them as they come would send an order's older state after the newer one the
previous owner already delivered. So that range is read once first, without sending, noting each
order's newest version in it; read again for real, an event older than the newest of its order in the
range is *replaced* (that newer event follows in the same log, and the offset cannot be committed past
it before it is resolved). The parking replay does the same over what it is about to replay.

The map is bounded (``kafka.remember_keys`` orders): past the bound the orders not noted yet are not
protected, which is counted and logged once.

A delete is not replaced by a later delete of its order alone (a tombstone after it, a delete sent
again): every delete is the same state, and the coalescer joins their versions, which keeps the
delete's time (a tombstone has none); replaced, it would leave the tombstone ordered by offset only,
and an older update sent again after it would bring the order back. It is replaced when an update
newer than it lies ahead.
"""

from __future__ import annotations

from connector.structs import OrderChange, Version


class Lookahead:
    """The newest version of each order seen in ``[start, end)`` of one log."""

    def __init__(self, start: int, end: int, max_keys: int) -> None:
        self.start = start
        self.end = end
        self._max = max_keys
        self._newest: dict[str, Version] = {}
        self._deleted: set[str] = set()  # orders whose newest noted event is a delete
        self._upserts: dict[str, Version] = {}  # the newest update noted, of orders deleted last
        self.truncated = 0  # events of orders not noted: over the bound

    def __len__(self) -> int:
        return len(self._newest)

    def note(self, change: OrderChange, version: Version | None = None) -> None:
        """``change`` lies in the range (``version``: what it stands for, when newer than its own)."""
        key, seen = change.key, version or change.version
        known = self._newest.get(key)
        if known is None:
            if len(self._newest) >= self._max:
                self.truncated += 1
                return
        elif not known.older_than(seen):
            if change.op == "upsert" and not seen.older_than(self._upserts.get(key, seen)):
                self._upserts[key] = seen
            return
        if change.op == "delete":
            if known is not None and key not in self._deleted:
                self._upserts[key] = known
            self._deleted.add(key)
        else:
            self._deleted.discard(key)
            self._upserts.pop(key, None)
        self._newest[key] = seen

    def covers(self, offset: int) -> bool:
        """Whether ``offset`` lies in the range."""
        return self.start <= offset < self.end

    def superseded(self, change: OrderChange, offset: int) -> bool:
        """Whether ``change`` (read at ``offset`` of the log) is older than a later event of its order
        in the range, which will be read after it."""
        if not self.covers(offset):
            return False
        newest = self._newest.get(change.key)
        if newest is None or not change.version.older_than(newest):
            return False
        if change.op == "delete" and change.key in self._deleted:  # deletes only after it?
            upsert = self._upserts.get(change.key)
            return upsert is not None and change.version.older_than(upsert)
        return True


__all__ = ["Lookahead"]
