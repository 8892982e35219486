"""Parking: a shop that cannot be served never holds back the shops it shares partitions with.

A partition's commit cannot pass its first unresolved event, and unresolved events count against the
read-ahead. So one shop whose API is down, whose key was revoked or whose backlog is far beyond its
budget would, left alone, stop the commits of every partition it shares with healthy shops, and in
the end pause their reading. Instead, after a bound, that tenant is *parked*:

- **Park.** Its events in hand (not being sent) are appended, in the order they were read, to the
  parking topic (``tenants.park_topic``), each with where it was read and who parked it; once the
  broker acknowledged one (``acks=all``) its offset is resolved (``parked``) and the watermark moves
  on. While the tenant is parked on a partition, every newer event of it from that partition takes
  the same path, so no order goes backwards.
- **Replay.** The member owning a partition reads back what was parked from it (each source
  partition has its own parking partition, its index in the layout modulo the parking topic's
  partitions) and hands it to the coalescer as if read from the partition itself, at its original
  offset: it is ordered, coalesced, paced (with that partition's budget ticks), fenced and
  dead-lettered exactly as any event. A parked tenant gets one event at a time while its circuit is
  open (its probe), ``tenants.park_replay_events`` once it closes; what it cannot take yet is held
  back (an offset, 9 bytes) and read again later, so one parked tenant never stalls another.
- **Unpark.** When everything parked of the tenant from a partition has been delivered (or
  dead-lettered) and the reader has caught up with the parking partition, its events from that
  partition are sent directly again.

What must survive a crash or a rebalance is in the partition's commit metadata (``constants.py``):
the first parking offset still to replay (``park_from``), the tenants parked, and the *tokens* of the
members whose parked records count, each with the offset its last commit reached. A record parked by a
member that never committed past it (it crashed, or was expelled) is ignored: its event is read again
from the partition itself. A new owner re-reading the partition for its warm-up skips the events of
parked tenants, which were parked, not delivered.

What this keeps is the README's guarantees 1, 3 and 11, and how: ``docs/design.md``, "Many shops:
parking". At most ``tenants.max_parked`` tenants are parked per partition (the commit metadata must fit
in the broker's 4 KB), beyond which a failing tenant holds the partition back as before.
"""

from connector.park._parking import Parking
from connector.park._ports import ParkLedger, ParkReader, ShopHealth, Shops, Warmth
from connector.park.log import KafkaParkLog, ParkLog, RecordsGone
from connector.parked import ParkState

__all__ = [
    "KafkaParkLog",
    "ParkLedger",
    "ParkLog",
    "ParkReader",
    "ParkState",
    "Parking",
    "RecordsGone",
    "ShopHealth",
    "Shops",
    "Warmth",
]
