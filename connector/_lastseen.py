"""The shop last seen for each record key (many shops): what routes a delete that names none.

Debezium's tombstone after a delete has no value, and a delete at PostgreSQL's default ``REPLICA
IDENTITY`` carries the key columns only: with ``tenants.route = field:<name>`` (or a ``header:``
put there by a transform of the row) neither names its shop. Every event that is routed leaves its
shop here under its record key (topic and key bytes: the same for every event of one row), so that a
delete or tombstone naming no shop is routed to the shop of its order's last event. Bounded by
``kafka.remember_keys`` (least recently routed first out), it is filled by every read: the warm-up
re-read after an assignment (``kafka.warmup_records`` before the committed offset) and the
lookahead, so it survives a restart or a rebalance as far as they reach. A delete whose key was never
seen within them is dead-lettered, stage ``route``, as before (``connector dlq redrive --stage route``
once routable).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from connector.structs import Record


def is_delete(record: Record, data: Any) -> bool:
    """Whether ``record`` (``data``: its value as routing reads it) deletes its order: a tombstone, a
    Debezium delete (the row the mapping reads has ``__deleted``), or the connector's own
    ``order.deleted`` envelope."""
    if record.value is None:
        return True
    if not isinstance(data, dict):
        return False
    return data.get("__deleted") is True or data.get("event_type") == "order.deleted"


class LastSeen:
    """Record key → the shop its last routed event was for, at most ``limit`` keys."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._shops: OrderedDict[bytes, str] = OrderedDict()

    @staticmethod
    def _key(record: Record) -> bytes | None:
        if not record.key:
            return None
        return hashlib.blake2b(record.topic.encode() + b"\0" + record.key, digest_size=12).digest()

    def __len__(self) -> int:
        return len(self._shops)

    def note(self, record: Record, shop: str) -> None:
        """``record`` was routed to ``shop``."""
        key = self._key(record)
        if key is None or self._limit <= 0:
            return
        self._shops[key] = shop
        self._shops.move_to_end(key)
        if len(self._shops) > self._limit:
            self._shops.popitem(last=False)

    def shop_of(self, record: Record) -> str | None:
        """The shop the last routed event with ``record``'s key was for, if remembered."""
        key = self._key(record)
        return self._shops.get(key) if key is not None else None


__all__ = ["LastSeen", "is_delete"]
