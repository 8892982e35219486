"""The vendor-client interface and the HTTP plumbing every vendor shares.

Every HTTP request waits for a tick of the member's :class:`~connector.pacing.Pacer`, lookups and
reads included, so an ``apply`` that needs several requests costs several ticks. The deliverer takes
the tick for an attempt's first request itself (so that a newer change handed to the job while it
waits is the one sent) and hands it to ``apply`` as a :class:`Prepaid`, which the first request uses.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import certifi
import httpx
import orjson
from pydantic import SecretStr

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
from connector.logs import debug_enabled, get_logger, redact, register_secret
from connector.pacing import Pacer
from connector.structs import OrderChange

if TYPE_CHECKING:
    from datetime import datetime

_log = get_logger("connector.sinks")
USER_AGENT = "orders-connector/0.1"


class Prepaid:
    """A budget tick the deliverer already took for one attempt: the attempt's first request uses it
    (if still fresh), every later one waits for a tick of its own. Passed to ``apply`` and on to
    each request it makes."""

    __slots__ = ("_tick",)

    def __init__(self, tick: float | None = None) -> None:
        self._tick = tick

    def take(self) -> float | None:
        """The tick, once; None after that (and when there was none)."""
        tick, self._tick = self._tick, None
        return tick


class SinkOptions(Protocol):
    """What a vendor client reads of its settings: :class:`connector.config.SinkSettings` is one
    (the vendors' modules sit below ``config``, which checks settings against them)."""

    @property
    def kind(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> SecretStr: ...
    @property
    def api_version(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def cache_size(self) -> int: ...


class Sink(Protocol):
    """A vendor's Orders API. ``apply`` makes the vendor hold ``change`` or raises a SinkError."""

    name: str

    async def apply(self, change: OrderChange, prepaid: Prepaid | None = None) -> None:
        """Upsert or delete the order, as ``change.op`` says (``prepaid``: the tick its first
        request uses)."""
        ...

    async def probe(self, prepaid: Prepaid | None = None) -> None:
        """One cheap read: returns when the API and the key work at all (a 404 counts), else raises.
        Tells a key that lost every right from a 403 for one operation."""
        ...

    async def held_version(self, change: OrderChange) -> tuple[bool, datetime | None]:
        """Read what the vendor holds for ``change``'s order: ``(exists, its updated_at)``. Raises
        ``NotImplementedError`` when the vendor keeps no timestamp of ours to compare with."""
        ...

    def set_api_key(self, api_key: SecretStr) -> None:
        """Send ``api_key`` from the next request on (a key rotated without a restart)."""
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


def default_transport(connections: int) -> httpx.AsyncBaseTransport:
    """httpx's API over aiohttp's connection pool (``httpx-aiohttp``), ``connections`` keep-alive
    connections at most.

    Measured per client CPU second, 8 concurrent PUTs with 1 ms latency (``bench/transports.py``):
    this transport 1,850 to 2,000 requests, httpcore with a one-connection pool per slot 780 to 940,
    httpcore's shared pool 550 to 610, raw aiohttp 3,270 to 3,400. It is the closest to raw aiohttp
    that keeps httpx's request, response and error types.
    """
    from httpx_aiohttp import AiohttpTransport  # imports aiohttp: see _unmapped

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return AiohttpTransport(verify=_tls_context(), limits=limits, trust_env=False)


def _unmapped() -> type[Exception]:
    """aiohttp's errors, which the transport does not map to httpx's when the answer is malformed.

    aiohttp is imported where it is used, not with this module: the vendors' modules import this one,
    and ``config``, ``connector --help`` and ``connector validate`` read the vendors' registry without
    sending anything (aiohttp takes about 0.3 s to import)."""
    from aiohttp import ClientError

    return ClientError


def _never_sent(exc: httpx.TransportError) -> bool:
    """Whether a transport error proves the request never left: the connection was never made.

    httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` to ``ConnectTimeout``, a server that
    hangs up after reading the request included, so its class alone would call an ambiguous outcome
    "never sent"; the aiohttp error it wraps (``__cause__``) says which it was.
    """
    import aiohttp  # see _unmapped

    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(
            cause,
            aiohttp.ClientConnectorError
            | aiohttp.ConnectionTimeoutError
            | aiohttp.NonHttpUrlClientError
            | aiohttp.InvalidUrlClientError,
        )
    return isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol
    )


ErrorDetail = Callable[[httpx.Response], "str | None"]
"""A vendor's own words for a failed response (its error body's shape); None: the body itself."""


def no_detail(response: httpx.Response) -> str | None:
    """No vendor-specific reading of error bodies."""
    return None


class HttpClient:
    """Keep-alive HTTP connections, ``max_in_flight`` at most, with transport errors mapped to
    SinkError classes: what every vendor's client sends its requests through (it owns one).

    A request takes one of ``max_in_flight`` slots before its budget tick, so the connection pool
    (as large as the slots) never makes a request wait after its tick. Requests go to the transport as
    ``httpx.Request`` objects built here: the ``AsyncClient`` layer above it (base URL merging, cookie
    jar, redirects, event hooks) costs as much again per call and does nothing this needs; a redirect
    must not be followed anyway (it is an :class:`EndpointError`).
    """

    def __init__(
        self,
        settings: SinkOptions,
        path: str,
        auth_header: str,
        transport: httpx.AsyncBaseTransport | None = None,
        pacer: Pacer | None = None,
        error_detail: ErrorDetail = no_detail,
    ) -> None:
        self._pacer = pacer
        self._error_detail = error_detail
        self._base = f"{settings.base_url.rstrip('/')}{path}"
        self._auth_header = auth_header
        self.set_api_key(settings.api_key)
        self._urls: BoundedCache[str, httpx.URL] = BoundedCache(1024)
        self._timeouts = httpx.Timeout(settings.timeout_seconds).as_dict()
        self._transport = transport or default_transport(settings.max_in_flight)
        self._slots = asyncio.Semaphore(settings.max_in_flight)

    def set_api_key(self, api_key: SecretStr) -> None:
        """Send ``api_key`` from the next request on."""
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            self._auth_header: api_key.get_secret_value(),
        }
        register_secret(api_key.get_secret_value())
        # Built once: parsing a URL and normalising headers cost more per call than the rest of
        # building the request (profiled).
        self._headers = httpx.Headers(headers)
        self._json_headers = httpx.Headers({**headers, "Content-Type": "application/json"})

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._transport.aclose()

    async def request(
        self, method: str, url: str, json: object | None = None, prepaid: Prepaid | None = None
    ) -> httpx.Response:
        """Send one request when the budget allows (``prepaid``: a tick already taken for it); raise
        the SinkError matching the failure: not connected (never sent), timed out or cut off
        (ambiguous), or the status's class."""
        headers, content = self._headers, None
        if json is not None:
            content = orjson.dumps(json)
            headers = self._json_headers
        target = self._urls.get(url)
        if target is None:
            target = httpx.URL(self._base + url)
            self._urls.remember(url, target)
        request = httpx.Request(
            method, target, headers=headers, content=content, extensions={"timeout": self._timeouts}
        )
        async with self._slots:
            try:
                # nothing awaits between the tick and the request's first bytes
                await self._take_tick(prepaid)
                response = await self._transport.handle_async_request(request)
                response.request = request
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                what = f"{type(exc.__cause__ or exc).__name__}: {redact(str(exc))}"
                if _never_sent(exc):
                    raise SinkConnectError(f"{method} {url}: {what}") from None
                if isinstance(exc.__cause__ or exc, httpx.TimeoutException | TimeoutError):
                    raise SinkTimeout(f"{method} {url}: no answer in time ({what})") from None
                raise SinkCutOff(f"{method} {url}: {what}") from None
            except _unmapped() as exc:  # evaluated only when an error got this far
                raise SinkCutOff(f"{method} {url}: {type(exc).__name__}: {redact(str(exc))}") from None
        if self._pacer is not None:
            self._pacer.observe(response.status_code == 429)
        if response.status_code >= 300:  # the vendor's message is read only from an error's body
            raise_for_status(response, detail=self._error_detail(response))
        return response

    async def _take_tick(self, prepaid: Prepaid | None) -> None:
        """Use the tick the deliverer took for this attempt, if still fresh; else wait for one."""
        tick = prepaid.take() if prepaid is not None else None
        if self._pacer is not None and (tick is None or not self._pacer.fresh(tick)):
            tick = await self._pacer.acquire()
        if tick is not None and self._pacer is not None and debug_enabled():
            _log.debug(
                "api_request_tick", tick=round(tick, 4), late_ms=round(self._pacer.late(tick) * 1000, 1)
            )


__all__ = [
    "ErrorDetail",
    "HttpClient",
    "Prepaid",
    "Sink",
    "SinkError",
    "SinkOptions",
    "default_transport",
    "parse_retry_after",
    "raise_for_status",
]
