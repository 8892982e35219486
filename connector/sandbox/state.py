"""The sandbox's memory: orders, the request log, the faults to inject, and what the vendor itself
did to orders (lost, reverted, edited: :meth:`Store.tamper`)."""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

KEPT_VERSIONS = 4
"""Versions of each order kept, newest last, for :meth:`Store.tamper`'s ``revert``."""


@dataclass
class Faults:
    """What the sandbox does to requests besides answering them. Set by flags or POST /_sandbox/faults."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503, 504])
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    late_rate: float = 0.0  # share of writes held this long, then applied: after the client gave up
    late_seconds: float = 0.0
    outage_until: float = 0.0
    outage_status: int = 503
    reject_external_ids: dict[str, int] = field(default_factory=dict)
    retry_after: float | None = None
    echo_credentials: bool = False  # a careless vendor: error bodies repeat the credentials received

    def update(self, values: dict[str, Any]) -> None:
        """Apply a partial update; ``outage_seconds`` starts an outage window from now."""
        for key, value in values.items():
            if key == "outage_seconds":
                self.outage_until = time.time() + float(value)
            elif hasattr(self, key):
                setattr(self, key, value)
            else:
                raise KeyError(key)

    def as_dict(self) -> dict[str, Any]:
        """The faults as JSON."""
        return asdict(self)


@dataclass(slots=True)
class LoggedRequest:
    """One request the sandbox received."""

    ts: float
    method: str
    path: str
    status: int
    external_id: str | None = None
    updated_at: str | None = None
    done: float = 0.0  # when the answer was ready (the write applied, for a late write)


@dataclass(frozen=True, slots=True)
class Write:
    """One change applied to an order, in the order applied (late writes when they land): what a
    judge of "never backwards" reads. ``updated_at`` is the body's (None for a delete: it has none)."""

    ts: float
    op: str  # "upsert", "create", "update" or "delete"
    external_id: str | None
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class Tamper:
    """One thing the vendor did to an order by itself (not asked by a client's request): ``op`` is
    ``lose`` (gone), ``revert`` (back to an older version it held) or ``alter`` (fields edited, as in
    the vendor's admin). Kept apart from :attr:`Store.writes`, which judge the clients' writes."""

    ts: float
    op: str
    external_id: str
    updated_at_before: str | None
    updated_at_after: str | None
    fields: tuple[str, ...] = ()


class Store:
    """Orders by Loop id and by external id, every request received, every write applied, and every
    tamper (:meth:`tamper`)."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.by_external: dict[str, int] = {}
        self.requests: list[LoggedRequest] = []
        self.writes: list[Write] = []
        self.tampers: list[Tamper] = []
        self._versions: dict[str, deque[dict[str, Any]]] = {}  # each order's last bodies, newest last
        self._ids = itertools.count(1)

    def _wrote(self, op: str, external_id: Any, updated_at: Any = None) -> None:
        self.writes.append(
            Write(
                time.time(),
                op,
                external_id if isinstance(external_id, str) else None,
                updated_at if isinstance(updated_at, str) else None,
            )
        )
        if isinstance(external_id, str) and op != "delete":
            order = self.get_external(external_id)
            if order is not None:
                kept = self._versions.setdefault(external_id, deque(maxlen=KEPT_VERSIONS))
                kept.append(dict(order))

    def upsert(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create or replace the order with ``body['external_id']``; returns it with its id."""
        ext = body["external_id"]
        order_id = self.by_external.get(ext)
        if order_id is None:
            order_id = next(self._ids)
            self.by_external[ext] = order_id
        self.orders[order_id] = {**body, "id": order_id}
        self._wrote("upsert", ext, body.get("updated_at"))
        return self.orders[order_id]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a new order (its external id, if any, must be new)."""
        order_id = next(self._ids)
        if body.get("external_id"):
            self.by_external[body["external_id"]] = order_id
        self.orders[order_id] = {**body, "id": order_id}
        self._wrote("create", body.get("external_id"), body.get("updated_at"))
        return self.orders[order_id]

    def update(self, order_id: int, body: dict[str, Any]) -> dict[str, Any] | None:
        """Merge ``body`` into order ``order_id``; None when there is no such order."""
        current = self.orders.get(order_id)
        if current is None:
            return None
        old_ext, new_ext = current.get("external_id"), body.get("external_id")
        if new_ext and new_ext != old_ext:
            if isinstance(old_ext, str):
                self.by_external.pop(old_ext, None)
            self.by_external[new_ext] = order_id
        current.update(body)
        self._wrote("update", current.get("external_id"), body.get("updated_at"))
        return current

    def get_external(self, external_id: str) -> dict[str, Any] | None:
        """The order with ``external_id``, if any."""
        order_id = self.by_external.get(external_id)
        return None if order_id is None else self.orders.get(order_id)

    def delete_external(self, external_id: str) -> int | None:
        """Delete by external id; returns the deleted order's id."""
        order_id = self.by_external.pop(external_id, None)
        if order_id is not None:
            self.orders.pop(order_id, None)
            self._wrote("delete", external_id)
        return order_id

    def tamper(
        self, lose: list[str], revert: list[str], alter: dict[str, dict[str, Any]]
    ) -> dict[str, list[str]]:
        """The vendor, by itself, loses the orders of ``lose``, puts those of ``revert`` back to the
        newest version it held with another ``updated_at`` (a second revert: the one before that),
        and edits the fields ``alter`` gives each (its ``updated_at`` unchanged unless given).
        Returns the external ids done by op, and those it could not do (no such order, or no older
        version to revert to) under ``skipped``."""
        done: dict[str, list[str]] = {"lose": [], "revert": [], "alter": [], "skipped": []}
        for ext in lose:
            order = self.get_external(ext)
            if order is None:
                done["skipped"].append(ext)
                continue
            self.orders.pop(self.by_external.pop(ext), None)
            self._tampered("lose", ext, order.get("updated_at"), None)
            done["lose"].append(ext)
        for ext in revert:
            order = self.get_external(ext)
            kept = self._versions.get(ext)
            while order is not None and kept and kept[-1].get("updated_at") == order.get("updated_at"):
                kept.pop()  # the versions it goes back past are forgotten: a second revert goes further
            if order is None or not kept:
                done["skipped"].append(ext)
                continue
            self.orders[order["id"]] = {**kept[-1], "id": order["id"]}
            self._tampered("revert", ext, order.get("updated_at"), kept[-1].get("updated_at"))
            done["revert"].append(ext)
        for ext, values in alter.items():
            order = self.get_external(ext)
            if order is None:
                done["skipped"].append(ext)
                continue
            before = order.get("updated_at")
            order.update({k: v for k, v in values.items() if k not in ("id", "external_id")})
            self._tampered("alter", ext, before, order.get("updated_at"), tuple(sorted(values)))
            done["alter"].append(ext)
        return done

    def _tampered(self, op: str, ext: str, before: Any, after: Any, fields: tuple[str, ...] = ()) -> None:
        self.tampers.append(
            Tamper(
                time.time(),
                op,
                ext,
                before if isinstance(before, str) else None,
                after if isinstance(after, str) else None,
                fields,
            )
        )

    def reset(self) -> None:
        """Forget every order and request."""
        self.orders.clear()
        self.by_external.clear()
        self.requests.clear()
        self.writes.clear()
        self.tampers.clear()
        self._versions.clear()
