"""The default transport's failures end in the right class: a request that never left is
``SinkConnectError`` (safe to resend at once), one that may have reached the vendor is ``SinkTimeout``
or ``SinkCutOff`` (ambiguous: the order settles before anything else is sent for it). Against real
sockets, because the class is read from what the socket did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from connector.config import SinkSettings
from connector.errors import EndpointError, SinkConnectError, SinkCutOff, SinkError, SinkTimeout
from connector.localkafka import free_port
from connector.sinks import HttpClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()


async def _put(base_url: str, timeout: float = 0.5) -> None:
    settings = SinkSettings(base_url=base_url, api_key="k", timeout_seconds=timeout)
    async with HttpClient(settings, "/api/v1", "X-Authorization") as sink:
        await sink.request("PUT", "/orders", json={"external_id": "x"})


async def _hang_up_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()


async def _stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)
    writer.close()


async def _cut_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id":')
    await writer.drain()
    writer.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()
    writer.close()


async def _redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def test_a_refused_connection_is_never_sent() -> None:
    """Nothing listens: SinkConnectError, the one transport failure that proves nothing was sent."""
    with pytest.raises(SinkConnectError):
        await _put(f"http://127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_hang_up_after_reading, SinkCutOff),
        (_stall, SinkTimeout),
        (_cut_mid_body, SinkCutOff),
        (_garbage, SinkCutOff),
    ],
    ids=["hang-up-after-request", "no-answer-in-time", "cut-mid-body", "not-http"],
)
async def test_a_request_that_reached_the_server_is_ambiguous(
    handler: Handler, expected: type[SinkError]
) -> None:
    """The server read the request, then hung up, stalled, cut the answer or answered garbage: never
    SinkConnectError
    (the wrapped library calls a hang-up a connect timeout), always an ambiguous class."""
    with pytest.raises(expected) as caught:
        await _put_to(handler)
    assert caught.value.ambiguous


async def _put_to(handler: Handler) -> None:
    async with server(handler) as url:
        await _put(url)


async def test_a_redirect_is_not_followed() -> None:
    """A 3xx is an EndpointError naming the target, never followed (a misconfigured base URL)."""
    with pytest.raises(EndpointError, match="elsewhere"):
        await _put_to(_redirect)


async def test_keep_alive_connections_are_reused() -> None:
    """Twenty sequential requests use one connection."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(OK)
            await writer.drain()

    async with server(serve) as url:
        settings = SinkSettings(base_url=url, api_key="k")
        async with HttpClient(settings, "/api/v1", "X-Authorization") as sink:
            for _ in range(20):
                await sink.request("PUT", "/orders", json={"external_id": "x"})
    assert connections == 1
