"""HTTP answers become the right error class; Retry-After is read in both of its forms."""

from __future__ import annotations

import asyncio
import email.utils

import httpx
import pytest

from connector.config import SinkSettings
from connector.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RateLimited,
    RejectedError,
    ServerError,
    SinkError,
)
from connector.pacing import Pacer
from connector.sinks import HttpClient, Prepaid, parse_retry_after, raise_for_status
from connector.structs import OrderChange, Record
from connector.vendors import make_sink
from tests.fakes import LoopClock
from tests.sim.loop import VirtualTimeLoop


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, text="{}", request=httpx.Request("PUT", "http://x/orders"))


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, RejectedError),
        (422, RejectedError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
    ],
)
def test_status_maps_to_error_class(status: int, error_class: type[SinkError]) -> None:
    """Each documented status raises its class, carrying the status."""
    with pytest.raises(error_class) as caught:
        raise_for_status(_response(status))
    assert caught.value.status == status


def test_success_raises_nothing() -> None:
    """2xx is success."""
    raise_for_status(_response(200))


def test_retry_after_seconds() -> None:
    """Retry-After: 12 means twelve seconds."""
    assert parse_retry_after("12") == 12.0


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP date is measured from now."""
    header = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(header, now=1_000_000.0) == pytest.approx(30.0)


@pytest.mark.parametrize("value", [None, "", "soon"])
def test_retry_after_absent_or_garbled_is_none(value: str | None) -> None:
    """No usable header: the policy's own backoff applies."""
    assert parse_retry_after(value) is None


def test_429_carries_retry_after() -> None:
    """The 429 error keeps the vendor's Retry-After."""
    with pytest.raises(RateLimited) as caught:
        raise_for_status(_response(429, {"Retry-After": "3"}))
    assert caught.value.retry_after == 3.0


class _CountingPacer(Pacer):
    """A pacer that counts the ticks asked of it."""

    asked = 0

    async def acquire(self) -> float:
        self.asked += 1
        return await super().acquire()


@pytest.mark.parametrize(("prepaid", "asked"), [(True, 1), (False, 2)])
def test_an_applys_first_request_uses_the_tick_the_deliverer_took_and_the_rest_wait_their_own(
    prepaid: bool, asked: int
) -> None:
    """Loop's create/update mode: a lookup (404), then the create. With the tick the deliverer took
    for the attempt, the lookup uses it and only the create asks the pacer; without, both ask."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(1_800_000_000.0)) as runner:
        assert runner.run(_apply_counting(prepaid)) == asked


async def _apply_counting(prepaid: bool) -> int:
    """Ticks asked of the pacer by one create/update apply (after a prepaid tick, or none)."""

    def vendor(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404, json={"message": "not found"})
        return httpx.Response(201, json={"order": {"id": 7, "external_id": "A-1"}})

    # Both clocks the event loop's: on virtual time a tick is never late because the machine is busy
    # (on the real clock, a loaded CI machine made the prepaid tick stale: 2 asked, not 1).
    pacer = _CountingPacer.standalone(1000.0, LoopClock())
    assert isinstance(pacer, _CountingPacer)
    settings = SinkSettings(base_url="http://loop", api_key="k", mode="create_update")
    change = OrderChange(Record("orders", 0, 1, b"A-1", b"{}"), "A-1", "upsert", {"external_id": "A-1"})
    async with make_sink(settings, httpx.MockTransport(vendor), pacer) as sink:
        tick = await pacer.acquire() if prepaid else None
        pacer.asked = 0
        await sink.apply(change, Prepaid(tick))
    return pacer.asked


def test_the_vendors_message_is_read_from_an_errors_body_only() -> None:
    """A success's body is not parsed for an error message (it cost a JSON parse per call); an
    error's message is still read, and said in the error."""
    with asyncio.Runner() as runner:
        assert runner.run(_details_read(200)) == ([], "")
        asked, said = runner.run(_details_read(422))
    assert asked == [422]
    assert said.endswith("answered 422: external_id: is taken"), said


async def _details_read(status: int) -> tuple[list[int], str]:
    """The statuses whose body the client's ``error_detail`` was asked to read for one request, and
    the detail the error said ("" when none was raised)."""
    asked: list[int] = []

    def detail(response: httpx.Response) -> str:
        asked.append(response.status_code)
        return "external_id: is taken"

    def vendor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"message": "no"})

    settings = SinkSettings(base_url="http://loop", api_key="k")
    said = ""
    async with HttpClient(
        settings, "/api", "X-Authorization", httpx.MockTransport(vendor), None, detail
    ) as http:
        try:
            await http.request("PUT", "/orders", json={})
        except RejectedError as exc:
            said = str(exc)
    return asked, said
