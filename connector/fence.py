"""The fence: which partitions this member may send requests for, and when.

Two members must never have requests for one order in flight at once, even when one of them was
expelled from the group without knowing it, or killed while its requests were on the wire. Kafka's
group protocol alone cannot promise that, so sending is fenced in time:

- **Lease.** A member sends for a partition only while it holds a lease on it: each successful offset
  commit grants ``lease_seconds`` from the moment the commit was sent. A member that can no longer
  commit (expelled, cut off from the broker) stops sending when its lease runs out.
- **Settle-by.** Every commit carries, as its metadata, the wall-clock time after which no request
  this member sent for the partition can still land at the vendor: the lease end plus
  ``settle_seconds`` (the vendor's longest processing time) while it runs, or, on a clean hand-over
  (revoke, shutdown), the settle time of the ambiguous requests it leaves behind (none: now).
- **Hold.** A member assigned a partition reads the committed metadata and sends nothing for it before
  that time.

Within a member, an ambiguous request (timed out, cut off) also holds its order until it can no longer
land (see ``deliver``). The assumptions are stated in the README: the vendor finishes or drops a
request within ``settle_seconds`` of its start, and the members' clocks agree within a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.clock import Clock
from connector.structs import TopicPartition

CLOCK_SKEW = 1.0
"""Seconds by which the members' wall clocks may disagree: added to a hold read from another member."""


@dataclass(slots=True)
class _Grant:
    hold_until: float = 0.0
    lease_until: float = 0.0
    ambiguous_until: float = 0.0


class Fence:
    """Per-partition send permission of one member (wall-clock times)."""

    def __init__(self, clock: Clock, lease_seconds: float, settle_seconds: float) -> None:
        self._clock = clock
        self.lease_seconds = lease_seconds
        self.settle_seconds = settle_seconds
        self._grants: dict[TopicPartition, _Grant] = {}
        self.generation = 0  # counts the changes of the windows (assign, drop, a longer lease)

    def assign(self, tp: TopicPartition, hold_until: float) -> None:
        """``tp`` is ours; its previous owner's requests may land until ``hold_until`` (its clock)."""
        self._grants[tp] = _Grant(hold_until=hold_until + CLOCK_SKEW if hold_until else 0.0)
        self.generation += 1

    def drop(self, tp: TopicPartition) -> None:
        """``tp`` is no longer ours."""
        if self._grants.pop(tp, None) is not None:
            self.generation += 1

    def renew(self, tp: TopicPartition, lease_until: float) -> None:
        """A commit sent before ``lease_until - lease_seconds`` succeeded: send until ``lease_until``."""
        grant = self._grants.get(tp)
        if grant is not None and lease_until > grant.lease_until:
            grant.lease_until = lease_until
            self.generation += 1

    def note_ambiguous(self, tp: TopicPartition, sent_by: float) -> None:
        """A request for ``tp`` sent no later than ``sent_by`` (wall) ended without a known outcome."""
        grant = self._grants.get(tp)
        if grant is not None:
            grant.ambiguous_until = max(grant.ambiguous_until, sent_by + self.settle_seconds)

    def partitions(self) -> list[TopicPartition]:
        """Partitions assigned to this member, in order."""
        return sorted(self._grants)

    def window(self, tp: TopicPartition) -> tuple[float, float] | None:
        """``(from, until)``: when requests for ``tp`` may start; None when not ours."""
        grant = self._grants.get(tp)
        if grant is None:
            return None
        return grant.hold_until, grant.lease_until

    def may_send(self, tp: TopicPartition, at: float | None = None) -> bool:
        """Whether a request for ``tp`` may start at ``at`` (now by default)."""
        grant = self._grants.get(tp)
        when = self._clock.wall() if at is None else at
        return grant is not None and grant.hold_until <= when < grant.lease_until

    def wait_hint(self, tp: TopicPartition) -> float:
        """Seconds until ``tp`` might become sendable (a short poll while waiting for a lease)."""
        grant = self._grants.get(tp)
        now = self._clock.wall()
        if grant is not None and grant.hold_until > now:
            return grant.hold_until - now
        return 0.1

    def settle_by(self, tp: TopicPartition, lease_until: float | None) -> float:
        """The commit metadata for ``tp``: after this wall time none of our requests can land.
        ``lease_until`` is the lease this commit grants (None: a hand-over, we stop sending now)."""
        grant = self._grants.get(tp)
        # A hold inherited from the previous owner is passed on: a member that gives the partition
        # back before that time must not let the next one send earlier than it could itself.
        ambiguous = max(grant.ambiguous_until, grant.hold_until) if grant is not None else 0.0
        if lease_until is None:
            return ambiguous
        return max(ambiguous, lease_until + self.settle_seconds)
