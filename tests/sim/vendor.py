"""A simulated Loop Orders API, reached through an httpx transport (the real sink code runs on top).

Per request: a network delay in, the vendor's decision on arrival (outage, auth, wrong endpoint,
budget bucket shared with another client, random 5xx, per-event rejection), the write applied after
a processing time, and a delay out. The client's timeout is the transport's own: when it expires the
client sees ``ReadTimeout`` while the vendor carries on, so the write lands late: the ambiguous outcome
every HTTP client must live with. A request's life at the vendor (arrival to write) is at most
``max_life`` seconds after it was sent, the documented assumption (``kafka.settle_seconds``).

Everything the vendor sees is recorded for the checker: sends (for the budget), arrivals and writes
per order (for concurrency and order), and which member, partition epoch and event each came from.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any
from urllib.parse import unquote

import httpx

from connector.logs import named_in_logs
from connector.structs import TopicPartition


@dataclass
class Fault:
    """A window of vendor behaviour: ``kind`` from ``start`` to ``end`` (virtual wall seconds)."""

    kind: str  # outage | refused | auth | endpoint | errors | slow | stranger | forbid_delete
    start: float
    end: float
    level: float = 0.0  # errors: share of requests; stranger: share of the budget it spends
    retry_after: float | None = None  # stranger: the vendor's Retry-After on its 429s
    tenant: str = ""  # many tenants: the shop whose API behaves so ("": every shop's)


@dataclass
class Write:
    """A write the vendor applied."""

    at: float
    sent_at: float
    key: str
    op: str  # upsert | delete
    state: str | None
    member: str
    epoch: int
    event: tuple[TopicPartition, int] | None  # the event the connector was sending


@dataclass
class VendorStats:
    """What happened, for the report."""

    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    late_writes: int = 0


class SimVendor:
    """The vendor's state and rules."""

    def __init__(
        self,
        *,
        rng: Random,
        wall: Callable[[], float],
        budget: float,
        faults: list[Fault],
        latency: float,
        max_life: float,
        epoch_of: Callable[[str, TopicPartition], int],
        alive: Callable[[str], bool],
    ) -> None:
        self._rng = rng
        self._wall = wall
        self.budget = budget
        self.faults = faults
        self._latency = latency
        self._max_life = max_life
        self._epoch_of = epoch_of
        self._alive = alive
        self.orders: dict[str, tuple[str, str | None]] = {}  # key -> (op, state)
        self.bodies: dict[str, list[Any]] = {}  # key -> every body it held, in order (read back, revert)
        self._before: dict[str, tuple[tuple[str, str | None], list[Any]]] = {}  # as it was before a tamper
        self.ids: dict[str, int] = {}
        self._by_id: dict[int, str] = {}
        self.sends: list[tuple[float, str, str]] = []  # (sent, member, tenant)
        self.writes: list[Write] = []
        self.overlaps: list[tuple[str, str]] = []  # (order, what happened)
        self.requests: list[tuple[float, float, float, str, str, str, str | None, int]] = []
        """(sent, arrived, done, member, method, path, key, status) of every request processed."""
        self.stats = VendorStats()
        self._inflight: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at): one budget each
        self.keys: dict[str, str] = {}  # tenant -> the one key its API accepts (unset: any key)
        self._tasks: set[asyncio.Task[httpx.Response]] = set()

    # -- faults -------------------------------------------------------------------------------
    def _active(self, kind: str, at: float, tenant: str = "") -> Fault | None:
        for f in self.faults:
            if f.kind == kind and f.start <= at < f.end and f.tenant in ("", tenant):
                return f
        return None

    def _take_token(self, at: float, tenant: str) -> bool:
        """The tenant's bucket (capacity: one second of budget), refilled at the budget, minus what
        the other client spends while it runs."""
        stranger = self._active("stranger", at, tenant)
        refill = self.budget * (1.0 - (stranger.level if stranger else 0.0))
        tokens, since = self._buckets.get(tenant, (self.budget, 0.0))
        tokens = min(self.budget, tokens + (at - since) * refill)
        taken = tokens >= 1.0
        self._buckets[tenant] = (tokens - 1.0 if taken else tokens, at)
        return taken

    # -- the transport ------------------------------------------------------------------------
    def transport(self, member: str) -> httpx.AsyncBaseTransport:
        """What member ``member``'s HTTP client talks to."""
        return _Transport(self, member)

    async def handle(self, member: str, request: httpx.Request) -> httpx.Response:
        sent_at = self._wall()
        tenant = tenant_of(unquote(request.url.path))
        self.sends.append((sent_at, member, tenant))
        self.stats.requests += 1
        if not self._alive(member) or self._active("refused", sent_at, tenant):
            raise httpx.ConnectError("connection refused", request=request)
        context = named_in_logs()
        event = None
        if "topic" in context:
            event = (TopicPartition(context["topic"], context["partition"]), context["offset"])
        slow = self._active("slow", sent_at, tenant)
        budget_life = self._max_life * 0.95
        delay_in = min(self._rng.expovariate(1 / self._latency), budget_life / 3)
        work = self._rng.expovariate(1 / self._latency)
        if slow is not None and self._rng.random() < max(0.3, slow.level):
            work = self._rng.uniform(0.5, 1.0) * budget_life
        work = min(work, budget_life - delay_in)
        delay_out = self._rng.expovariate(1 / self._latency)
        epoch = self._epoch_of(member, event[0]) if event else -1
        task = asyncio.get_running_loop().create_task(
            self._process(request, member, epoch, event, sent_at, delay_in, work, delay_out)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        timeout = (request.extensions.get("timeout") or {}).get("read") or 5.0
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(task)
        except TimeoutError:
            self.stats.timeouts += 1
            raise httpx.ReadTimeout("timed out", request=request) from None

    async def settle(self) -> None:
        """Wait until every request still being processed has landed."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _process(
        self,
        request: httpx.Request,
        member: str,
        epoch: int,
        event: tuple[TopicPartition, int] | None,
        sent_at: float,
        delay_in: float,
        work: float,
        delay_out: float,
    ) -> httpx.Response:
        await asyncio.sleep(delay_in)
        at = self._wall()
        method, path = request.method, unquote(request.url.path)
        body = json.loads(request.content) if request.content else None
        key = self._key(method, path, body)
        if key is not None:
            self._inflight[key] = self._inflight.get(key, 0) + 1
            if self._inflight[key] > 1:
                self.overlaps.append(
                    (key, f"t={at:.3f} {key}: {self._inflight[key]} requests at once ({member})")
                )
        try:
            status, answer, headers = self._decide(method, path, key, at, tenant_of(path))
            wanted = self.keys.get(tenant_of(path))
            if wanted is not None and request.headers.get("X-Authorization") != wanted:
                status, answer, headers = 401, {"message": "Unauthenticated."}, {}
            await asyncio.sleep(work)
            if status == 200 and key is not None:
                status, answer = self._apply(method, path, key, body, member, epoch, event, sent_at)
            elif status == 500 and key is not None and method == "PUT" and self._rng.random() < 0.5:
                self._apply(method, path, key, body, member, epoch, event, sent_at)  # then fails
        finally:
            if key is not None:
                self._inflight[key] -= 1
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        self.requests.append((sent_at, at, self._wall(), member, method, path, key, status))
        await asyncio.sleep(delay_out)
        return httpx.Response(status, json=answer, headers=headers, request=request)

    def _key(self, method: str, path: str, body: Any) -> str | None:
        if path.endswith("/orders") and isinstance(body, dict):
            return str(body.get("external_id"))
        if "/orders/external/" in path:
            return path.rsplit("/orders/external/", 1)[1]
        tail = path.rsplit("/orders/", 1)
        if len(tail) == 2 and tail[1].isdigit():
            return self._by_id.get(int(tail[1]), f"id:{tail[1]}")
        return None

    def _decide(
        self, method: str, path: str, key: str | None, at: float, tenant: str
    ) -> tuple[int, Any, dict[str, str]]:
        if self._active("outage", at, tenant):
            return 503, {"message": "Service Unavailable"}, {}
        if self._active("auth", at, tenant):
            return 401, {"message": "Unauthenticated."}, {}
        if self._active("endpoint", at, tenant) and method == "PUT" and path.endswith("/orders"):
            return 404, {"message": "Not Found"}, {}
        if self._active("forbid_delete", at, tenant) and method == "DELETE":
            return 403, {"message": "This action is unauthorized."}, {}
        if not self._take_token(at, tenant):
            stranger = self._active("stranger", at, tenant)
            headers = {}
            if stranger is not None and stranger.retry_after is not None:
                headers["Retry-After"] = str(math.ceil(stranger.retry_after))
            return 429, {"message": "Too Many Attempts."}, headers
        errors = self._active("errors", at, tenant)
        if errors is not None and self._rng.random() < errors.level:
            return self._rng.choice((500, 502, 503)), {"message": "Server Error"}, {}
        return 200, None, {}

    def _apply(
        self,
        method: str,
        path: str,
        key: str,
        body: Any,
        member: str,
        epoch: int,
        event: tuple[TopicPartition, int] | None,
        sent_at: float,
    ) -> tuple[int, Any]:
        """Apply a write that passed the checks; returns the status and body to answer."""
        exists = key in self.orders and self.orders[key][0] == "upsert"
        if method == "GET":
            if not exists:
                return 404, {"message": "Not Found"}
            held = self.bodies.get(key) or [{"external_id": key}]
            return 200, {"order": {**held[-1], "id": self.ids[key]}}
        if method == "DELETE":
            self._write(key, "delete", None, member, epoch, event, sent_at)  # gone either way
            if not exists:
                return 404, {"message": "Not Found"}
            return 200, {"message": "deleted"}
        state = _state(body)
        if state is not None and state.startswith("poison"):
            return 422, {"message": "The given data was invalid.", "errors": {"tags": ["rejected"]}}
        if method == "POST" and exists:
            return 422, {"message": "The external id has already been taken."}
        if method == "PUT" and not path.endswith("/orders") and not exists:
            return 404, {"message": "Not Found"}
        if not exists:  # a new order (or one created again after a delete) gets a new id
            self.ids[key] = len(self._by_id) + 1
            self._by_id[self.ids[key]] = key
        self._write(key, "upsert", state, member, epoch, event, sent_at)
        if isinstance(body, dict):
            self.bodies.setdefault(key, []).append(body)
        return 200, {"order": {"id": self.ids[key], "external_id": key}}

    def tamper(self, lose: list[str], revert: list[str]) -> list[str]:
        """The vendor, by itself, loses the orders of ``lose`` and puts those of ``revert`` back to
        an older body it held (with an older ``updated_at``); not a write of any client's. Returns
        the orders tampered with (those of ``revert`` without an older body are left alone)."""
        done = []
        for key in lose:
            self._before[key] = (self.orders.pop(key), self.bodies.pop(key, []))
            done.append(key)
        for key in revert:
            held = self.bodies.get(key, [])
            older = (
                [b for b in held if b.get("updated_at", "") < held[-1].get("updated_at", "")] if held else []
            )
            if not older:
                continue
            self._before[key] = (self.orders[key], list(held))
            self.bodies[key] = [*held, older[-1]]
            self.orders[key] = ("upsert", _state(older[-1]))
            done.append(key)
        return done

    def untamper(self, key: str) -> None:
        """Put ``key`` back as it was before :meth:`tamper` (a drift the connector is not expected
        to find: judged apart, it must not fail the final state)."""
        self.orders[key], self.bodies[key] = self._before[key]

    def _write(
        self,
        key: str,
        op: str,
        state: str | None,
        member: str,
        epoch: int,
        event: tuple[TopicPartition, int] | None,
        sent_at: float,
    ) -> None:
        at = self._wall()
        self.orders[key] = (op, state)
        self.writes.append(Write(at, sent_at, key, op, state, member, epoch, event))


def tenant_of(path: str) -> str:
    """The shop a request is for: its base URL's ``/t/<shop>`` prefix ("" in the single-shop mode)."""
    if path.startswith("/t/"):
        return path.split("/", 3)[2]
    return ""


def _state(body: Any) -> str | None:
    if isinstance(body, dict):
        tags = body.get("tags")
        if isinstance(tags, list) and tags:
            return str(tags[0])
    return None


class _Transport(httpx.AsyncBaseTransport):
    def __init__(self, vendor: SimVendor, member: str) -> None:
        self._vendor = vendor
        self._member = member

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._vendor.handle(self._member, request)
