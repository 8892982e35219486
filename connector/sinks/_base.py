"""The vendor-client interface and the HTTP plumbing every vendor shares.

Every HTTP request waits for a tick of the member's :class:`~connector.pacing.Pacer`, lookups and
reads included, so an ``apply`` that needs several requests costs several ticks. The deliverer takes
the tick for an attempt's first request itself (so that it claims the newest change only once the tick
is granted) and marks it in :data:`PREPAID`.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import ssl
import time
from collections import OrderedDict
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import certifi
import httpx
import orjson

from connector.config import SinkSettings
from connector.errors import (
    AuthError,
    ConflictError,
    EndpointError,
    NotFoundError,
    RateLimited,
    RejectedError,
    ServerError,
    SinkConnectError,
    SinkCutOff,
    SinkError,
    SinkTimeout,
    Unavailable,
)
from connector.logs import get_logger, redact
from connector.pacing import Pacer
from connector.structs import OrderChange

if TYPE_CHECKING:
    from datetime import datetime

_log = get_logger("connector.sinks")
USER_AGENT = "orders-connector/0.1"
PREPAID: contextvars.ContextVar[float | None] = contextvars.ContextVar("connector_prepaid_tick", default=None)
"""In an ``apply`` whose first request already holds a budget tick: the tick's time."""


class Sink(Protocol):
    """A vendor's Orders API. ``apply`` makes the vendor hold ``change`` or raises a SinkError."""

    name: str

    async def apply(self, change: OrderChange) -> None:
        """Upsert or delete the order, as ``change.op`` says."""
        ...

    async def probe(self) -> None:
        """One cheap read: returns when the API and the key work at all (a 404 counts), else raises.
        Tells a key that lost every right from a 403 for one operation."""
        ...

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        """Read what the vendor holds for ``change``'s order: ``(exists, its updated_at)``. Raises
        ``NotImplementedError`` when the vendor keeps no timestamp of ours to compare with."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def raise_for_status(response: httpx.Response, body_max: int = 4096, detail: str | None = None) -> None:
    """Map a non-2xx response to the matching SinkError class; ``detail`` is the vendor's message."""
    status = response.status_code
    if status < 300:
        return
    body = redact(response.text[:body_max])
    said = redact(detail) if detail else body[:300]
    message = f"{response.request.method} {response.request.url.path} answered {status}: {said}"
    if status < 400:
        where = response.headers.get("Location", "")
        raise EndpointError(
            f"{message} (redirect to {where!r}: check sink.base_url)", status=status, body=body
        )
    if status == 429:
        raise RateLimited(
            message,
            status=status,
            body=body,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    by_status: dict[int, type[SinkError]] = {
        401: AuthError,
        403: AuthError,
        404: NotFoundError,
        409: ConflictError,
        408: Unavailable,
        503: Unavailable,
    }
    error_class = by_status.get(status) or (ServerError if status >= 500 else RejectedError)
    raise error_class(message, status=status, body=body)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context (certifi's CA bundle) for every client of the process: loading the bundle costs
    tens of milliseconds."""
    return ssl.create_default_context(cafile=certifi.where())


K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(OrderedDict[K, V]):
    """A mapping that forgets its least recently stored entries beyond ``size`` (vendor id lookups)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def remember(self, key: K, value: V) -> None:
        """Store ``key`` as the most recent entry, evicting the oldest past the bound."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


class HttpSink:
    """Keep-alive HTTP connections, one per call slot, with transport errors mapped to SinkError classes.

    Each of the ``max_connections`` slots owns an httpx transport holding a single connection: the
    deliverer already bounds concurrency, and httpcore's shared pool re-scans every connection and
    every queued request on each call and each response close (profiled at several milliseconds of
    CPU per call with 32 connections), which a one-connection pool never does. Requests go to the
    transport as ``httpx.Request`` objects built here: the ``AsyncClient`` layer above it (base URL
    merging, cookie jar, redirects, event hooks) costs as much again per call and does nothing this
    needs; a redirect must not be followed anyway (it is an :class:`EndpointError`).
    """

    name = "http"

    def __init__(
        self,
        settings: SinkSettings,
        path: str,
        auth_header: str,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._pacer = pacer
        self._base = f"{settings.base_url.rstrip('/')}{path}"
        self._headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            auth_header: settings.api_key.get_secret_value(),
        }
        self._timeouts = httpx.Timeout(settings.timeout_seconds).as_dict()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._all: list[httpx.AsyncBaseTransport] = [
            transport or httpx.AsyncHTTPTransport(verify=_tls_context(), limits=limits)
            for _ in range(settings.max_in_flight)
        ]
        self._free: asyncio.Queue[httpx.AsyncBaseTransport] = asyncio.Queue()
        for slot in self._all:
            self._free.put_nowait(slot)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(slot.aclose() for slot in set(self._all)))

    async def request(self, method: str, url: str, json: object | None = None) -> httpx.Response:
        """Send one request when the budget allows; raise the SinkError matching the failure:
        not connected (never sent), timed out or cut off (ambiguous), or the status's class."""
        headers, content = self._headers, None
        if json is not None:
            content = orjson.dumps(json)
            headers = {**headers, "Content-Type": "application/json"}
        request = httpx.Request(
            method, self._base + url, headers=headers, content=content, extensions={"timeout": self._timeouts}
        )
        slot = await self._free.get()
        try:
            await self._take_tick()  # nothing awaits between the tick and the request's first bytes
            response = await slot.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            finally:
                await response.aclose()
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
        ) as exc:
            raise SinkConnectError(f"{method} {url}: {type(exc).__name__}: {redact(str(exc))}") from None
        except httpx.TimeoutException as exc:
            raise SinkTimeout(f"{method} {url}: no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise SinkCutOff(f"{method} {url}: {type(exc).__name__}: {redact(str(exc))}") from None
        finally:
            self._free.put_nowait(slot)
        if self._pacer is not None:
            self._pacer.observe(response.status_code == 429)
        raise_for_status(response, detail=self.error_detail(response))
        return response

    async def _take_tick(self) -> None:
        """Use the tick the deliverer took for this attempt, if still fresh; else wait for one."""
        tick = PREPAID.get()
        if tick is not None:
            PREPAID.set(None)
        if self._pacer is not None and (tick is None or not self._pacer.fresh(tick)):
            tick = await self._pacer.acquire()
        if tick is not None and self._pacer is not None:
            _log.debug(
                "api_request_tick", tick=round(tick, 4), late_ms=round(self._pacer.late(tick) * 1000, 1)
            )

    def error_detail(self, response: httpx.Response) -> str | None:
        """The vendor's own words for a failed response (overridden per vendor); None: the body."""
        return None


__all__ = ["PREPAID", "HttpSink", "Sink", "SinkError", "parse_retry_after", "raise_for_status"]
