"""What the sandbox does in front of every vendor route, as the vendors would: the API version checked,
the key checked, the rate limit (a bucket per vendor and key), then the faults asked for (latency, an
outage window, hangs, 5xx, writes applied after the client gave up).

Split out of :class:`~connector.sandbox.app.Sandbox` so that the server reads as its routes while the
refusals and the injected faults sit in one place with the state they need: the buckets, the rates
that fill them and the random source the faults draw from (seeded: a test's faults repeat). The key
and the faults are the sandbox's own, changed while it serves (``POST /_sandbox/config``,
``/_sandbox/reset``): the guard reads them through :class:`Account` at each request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from connector.sandbox._ratelimit import TokenBucket
from connector.sandbox.shoplazza import shoplazza_error
from connector.sandbox.state import Faults, LoggedRequest
from connector.vendors import VENDORS

# What the vendors' entries say of their APIs: the versions each serves, the first segment of their
# paths, the header carrying the key. (The order rules are the sandbox's own: ``validate.py``.)
VERSIONS = {kind: {*entry.api_versions, *entry.other_versions} for kind, entry in VENDORS.items()}
VENDOR_PREFIXES = {entry.prefix: kind for kind, entry in VENDORS.items()}
AUTH_HEADERS = {kind: entry.auth_header for kind, entry in VENDORS.items()}
LOG_ENTRY = web.RequestKey("log_entry", LoggedRequest)
CREDENTIALS = web.RequestKey("credentials", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def loop_error(
    status: int, message: str, code: str, errors: dict[str, list[str]] | None = None
) -> web.Response:
    """An error as Loop answers it: ``{"message", "code"}``, with the fields' ``errors`` if any."""
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status)


def refuse(vendor: str, status: int, message: str, code: str) -> web.Response:
    """An error as ``vendor`` answers it (``code``: Loop's)."""
    if vendor == "shoplazza":
        return shoplazza_error(status, error=message) if status == 401 else shoplazza_error(status, [message])
    return loop_error(status, message, code)


class Account(Protocol):
    """What the guard reads of its sandbox at each request."""

    @property
    def api_key(self) -> str: ...

    @property
    def faults(self) -> Faults: ...


class Guard:
    """Refuses, delays or lets through a vendor request before its route answers it."""

    def __init__(
        self,
        account: Account,
        *,
        rate_per_minute: float = 300.0,
        burst: float | None = None,
        shoplazza_rate_per_second: float = 2.0,
        shoplazza_burst: float = 40.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._account = account
        self.rate_per_minute = rate_per_minute  # Loop's budget per key
        self.burst = burst  # Loop's bucket (None: one second's worth)
        self.shoplazza_rate_per_second = shoplazza_rate_per_second
        self.shoplazza_burst = shoplazza_burst
        self._clock = clock
        self._rng = random.Random(seed)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def configure(self, rate_per_minute: float, burst: float | None) -> None:
        """Loop's budget from now on; every bucket starts full again."""
        self.rate_per_minute, self.burst = rate_per_minute, burst
        self._buckets.clear()

    def _bucket(self, vendor: str, key: str) -> TokenBucket:
        bucket = self._buckets.get((vendor, key))
        if bucket is None:
            if vendor == "shoplazza":
                bucket = TokenBucket(self.shoplazza_rate_per_second, self.shoplazza_burst, self._clock)
            else:
                rate = self.rate_per_minute / 60.0
                bucket = TokenBucket(rate, self.burst or max(1.0, rate), self._clock)
            self._buckets[(vendor, key)] = bucket
        return bucket

    async def admit(
        self, request: web.Request, handler: Handler, entry: LoggedRequest, vendor: str
    ) -> web.StreamResponse:
        """``vendor``'s answer to ``request``: a refusal or a fault, else its route's (``handler``),
        perhaps late. ``entry`` is the request's line in the log; the route finds it as
        ``request[LOG_ENTRY]``, the key received as ``request[CREDENTIALS]``."""
        if request.match_info.get("version") not in VERSIONS[vendor]:
            return refuse(vendor, 404, "Not Found.", "NOT_FOUND")
        key = request.headers.get(AUTH_HEADERS[vendor], "")
        request[CREDENTIALS] = key
        f = self._account.faults
        if key != self._account.api_key:
            message = "store is not active" if vendor == "shoplazza" else "Unauthorized."
            if f.echo_credentials:
                message += f" Received {AUTH_HEADERS[vendor]}: {key}"
            return refuse(vendor, 401, message, "NOT_AUTHORIZED")
        if not self._bucket(vendor, key).take():
            headers = {}
            if f.retry_after is not None:
                headers["Retry-After"] = f"{f.retry_after:g}"
            body: dict[str, Any] = (
                {"errors": ["Exceeded 2 calls per second for api client. Reduce request rates."]}
                if vendor == "shoplazza"
                else {"message": "Too Many Attempts."}
            )
            return web.json_response(body, status=429, headers=headers)
        if f.latency_ms or f.latency_jitter_ms:
            await asyncio.sleep((f.latency_ms + self._rng.uniform(0, f.latency_jitter_ms)) / 1000.0)
        if time.time() < f.outage_until:
            return refuse(vendor, f.outage_status, "Service Unavailable.", "UNEXPECTED_ERROR")
        if f.timeout_rate and self._rng.random() < f.timeout_rate:
            await asyncio.sleep(f.hang_seconds)
            return refuse(vendor, 504, "Gateway Timeout.", "UNEXPECTED_ERROR")
        if f.error_rate and self._rng.random() < f.error_rate:
            status = self._rng.choice(f.error_statuses)
            return refuse(vendor, status, "Internal Server Error.", "UNEXPECTED_ERROR")
        if f.late_rate and self._rng.random() < f.late_rate:
            # The vendor has the whole request (read now: once the client gives up, the connection
            # is gone and its body could no longer be read), and applies it after the client timed out.
            await request.read()
            await asyncio.sleep(f.late_seconds)
        if "order_id" in request.match_info:
            entry.external_id = request.match_info["order_id"]
        request[LOG_ENTRY] = entry
        return await handler(request)
