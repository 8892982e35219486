"""Client-side CPU cost of an HTTP PUT through the httpx API over different transports, next to aiohttp.

    .venv/bin/python -m bench.transports [--requests N] [--latency-ms X] [--cases A,B,...]

What is measured: 8 concurrent asyncio workers PUT a ~400-byte JSON order to
``/api/v1/orders`` until ``--requests`` PUTs have been answered (after ``--warmup`` unmeasured
ones on the same client, so connections are open and code paths warm). The figure that matters is
requests per client CPU second: ``time.process_time()`` deltas in this process, which runs only the
client. The server (a small aiohttp app, answering 200 with ``{"id": ..., "external_id": ...}``
after ``--latency-ms`` of ``asyncio.sleep``) runs in a separate process started here with
``--serve PORT``, so its CPU is not counted; its CPU per case is shown apart, to tell when wall time is
bound by the server rather than the client. Each measured request includes building the body dict,
serialising it, sending, reading the whole response and releasing the connection.

Cases (all 8 workers; each pool or slot set holds at most 8 connections, kept alive):

httpcore-slots           what ``connector.sinks._base.HttpClient`` did until it moved to httpx-aiohttp: 8
                         ``httpx.AsyncHTTPTransport``
                         with one connection each in a queue of free slots, ``httpx.Request`` sent
                         with ``handle_async_request``, then ``aread`` and ``aclose``; orjson body
httpcore-slots-json      the same with ``json.dumps(...).encode()``
httpcore-pool            one ``httpx.AsyncClient`` (httpcore pool of 8), ``client.put``
httpx-aiohttp-client     ``httpx_aiohttp.HttpxAiohttpClient`` (aiohttp session, limit 8), ``client.put``
httpx-aiohttp-transport  one ``httpx_aiohttp.AiohttpTransport`` (limit 8) used as in httpcore-slots
httpx-aiohttp-transport-json  the same with ``json.dumps(...).encode()``
connector-httpsink       ``HttpClient.request`` as the connector calls it (httpx-aiohttp transport, URL
                         and headers built once, the slot semaphore, the error mapping), no pacer
raw-aiohttp              one ``aiohttp.ClientSession`` (TCPConnector limit 8), ``session.put``, ``read``

Figures are from a shared machine: compare the rows of one run, and run it twice to see the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version

import aiohttp
import httpx
import orjson
from aiohttp import web
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient

from bench.cost import cpu_seconds
from bench.run import ROOT, wait_port
from connector.config import SinkSettings
from connector.localkafka import free_port
from connector.sinks import HttpClient

WORKERS = 8
PATH = "/api/v1/orders"
HEADERS = {
    "Accept": "application/json",
    "User-Agent": "orders-connector/0.1",
    "X-Api-Key": "bench-key",
    "Content-Type": "application/json",
}
TIMEOUT_SECONDS = 10.0

Encode = Callable[[object], bytes]
Send = Callable[[bytes], Awaitable[int]]
"""Send one body; return the response's status once it is read and released."""


# --- the server (its own process) -------------------------------------------------------------------


def serve(port: int, latency_ms: float) -> None:
    """Answer PUT /api/v1/orders with 200 and a small JSON body, after ``latency_ms``."""
    delay = latency_ms / 1000
    counter = 0

    async def put_order(request: web.Request) -> web.Response:
        nonlocal counter
        body = await request.read()
        if delay > 0:
            await asyncio.sleep(delay)
        counter += 1
        external_id = orjson.loads(body).get("external_id", "") if body else ""
        answer = orjson.dumps({"id": f"ord_{counter}", "external_id": external_id})
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_put(PATH, put_order)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


# --- the request body -----------------------------------------------------------------------------

TEMPLATE: dict[str, object] = {
    "external_id": "",
    "status": "active",
    "currency": "EUR",
    "customer": {"email": "someone@example.com", "name": "Some One"},
    "shipping_address": {"line1": "1 Example Street", "city": "Berlin", "zip": "10115", "country": "DE"},
    "line_items": [
        {"sku": "SKU-0001", "quantity": 2, "price": {"amount": 1999}},
        {"sku": "SKU-0002", "quantity": 1, "price": {"amount": 4500}},
    ],
    "total_price": {"amount": 8498},
    "updated_at": "2026-11-01T00:00:00Z",
}


def order(i: int) -> dict[str, object]:
    return {**TEMPLATE, "external_id": f"ord-{i:09d}"}


def orjson_encode(value: object) -> bytes:
    return orjson.dumps(value)


def json_encode(value: object) -> bytes:
    return json.dumps(value).encode()


# --- the clients ----------------------------------------------------------------------------------
# Each builder returns (send, close) for one case; the url is the full PUT target.

Built = tuple[Send, Callable[[], Awaitable[None]]]


def httpcore_slots(url: str, encode: Encode) -> Built:
    del encode  # the body is encoded by the worker; kept for a uniform signature
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    slots = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(WORKERS)]
    free: asyncio.Queue[httpx.AsyncHTTPTransport] = asyncio.Queue()
    for slot in slots:
        free.put_nowait(slot)
    timeouts = httpx.Timeout(TIMEOUT_SECONDS).as_dict()

    async def send(content: bytes) -> int:
        request = httpx.Request(
            "PUT", url, headers=HEADERS, content=content, extensions={"timeout": timeouts}
        )
        slot = await free.get()
        try:
            response = await slot.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            finally:
                await response.aclose()
        finally:
            free.put_nowait(slot)
        return response.status_code

    async def close() -> None:
        await asyncio.gather(*(slot.aclose() for slot in slots))

    return send, close


def _client_case(client_class: type[httpx.AsyncClient]) -> Callable[[str, Encode], Built]:
    """A case sending through an ``AsyncClient`` of ``client_class`` (pool of WORKERS), ``client.put``."""

    def build(url: str, encode: Encode) -> Built:
        del encode  # the body is encoded by the worker; kept for a uniform signature
        limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
        client = client_class(limits=limits, timeout=TIMEOUT_SECONDS)

        async def send(content: bytes) -> int:
            response = await client.put(url, content=content, headers=HEADERS)
            return response.status_code

        return send, client.aclose

    return build


httpcore_pool = _client_case(httpx.AsyncClient)
httpx_aiohttp_client = _client_case(HttpxAiohttpClient)


def httpx_aiohttp_transport(url: str, encode: Encode) -> Built:
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    transport = AiohttpTransport(limits=limits)
    timeouts = httpx.Timeout(TIMEOUT_SECONDS).as_dict()

    async def send(content: bytes) -> int:
        request = httpx.Request(
            "PUT", url, headers=HEADERS, content=content, extensions={"timeout": timeouts}
        )
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response.status_code

    return send, transport.aclose


def raw_aiohttp(url: str, encode: Encode) -> Built:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=WORKERS),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
    )

    async def send(content: bytes) -> int:
        async with session.put(url, data=content, headers=HEADERS) as response:
            await response.read()
            return response.status

    return send, session.close


def connector_sink(url: str, encode: Encode) -> Built:
    """The connector's own call path: ``HttpClient.request`` on its default transport, no pacer."""
    del encode  # HttpClient serialises the body itself (orjson)
    base, path = url.split("/api/", 1)
    settings = SinkSettings(base_url=base, api_key="bench-key", max_in_flight=WORKERS)
    sink = HttpClient(settings, "/api/" + path.rsplit("/", 1)[0], "X-Api-Key")
    body = order(0)

    async def send(content: bytes) -> int:
        del content
        response = await sink.request("PUT", "/orders", json=body)
        return response.status_code

    async def close() -> None:
        await sink.__aexit__(None, None, None)

    return send, close


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str, Encode], Built]
    encode: Encode


CASES = [
    Case("httpcore-slots", httpcore_slots, orjson_encode),
    Case("httpcore-slots-json", httpcore_slots, json_encode),
    Case("httpcore-pool", httpcore_pool, orjson_encode),
    Case("httpx-aiohttp-client", httpx_aiohttp_client, orjson_encode),
    Case("httpx-aiohttp-transport", httpx_aiohttp_transport, orjson_encode),
    Case("httpx-aiohttp-transport-json", httpx_aiohttp_transport, json_encode),
    Case("connector-httpsink", connector_sink, orjson_encode),
    Case("raw-aiohttp", raw_aiohttp, orjson_encode),
]
BASELINE = "raw-aiohttp"


# --- the measurement ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    wall: float
    cpu: float
    server_cpu: float

    @property
    def per_cpu_second(self) -> float:
        return self.requests / self.cpu if self.cpu > 0 else float("inf")

    @property
    def per_wall_second(self) -> float:
        return self.requests / self.wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6


async def drive(send: Send, encode: Encode, count: int, first: int) -> None:
    """Have WORKERS workers send ``count`` requests between them; fail on any status but 200."""
    next_index = first
    end = first + count

    async def worker() -> None:
        nonlocal next_index
        while next_index < end:
            i = next_index
            next_index += 1
            status = await send(encode(order(i)))
            if status != 200:
                raise RuntimeError(f"request {i} answered {status}")

    async with asyncio.TaskGroup() as group:
        for _ in range(WORKERS):
            group.create_task(worker())


async def measure(case: Case, url: str, requests: int, warmup: int, server_pid: int) -> Result:
    send, close = case.build(url, case.encode)
    try:
        await drive(send, case.encode, warmup, 0)
        gc.collect()
        server0, wall0, cpu0 = cpu_seconds(server_pid), time.perf_counter(), time.process_time()
        await drive(send, case.encode, requests, warmup)
        cpu1, wall1, server1 = time.process_time(), time.perf_counter(), cpu_seconds(server_pid)
    finally:
        await close()
    return Result(case.name, requests, wall1 - wall0, cpu1 - cpu0, server1 - server0)


def print_table(results: list[Result]) -> None:
    header = (
        f"{'case':<30} {'requests':>8} {'wall s':>7} {'cpu s':>7} {'req/cpu s':>10} "
        f"{'req/wall s':>10} {'cpu us/req':>10} {'server cpu s':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<30} {r.requests:>8} {r.wall:>7.2f} {r.cpu:>7.2f} {r.per_cpu_second:>10.0f} "
            f"{r.per_wall_second:>10.0f} {r.cpu_us:>10.0f} {r.server_cpu:>12.2f}"
        )
    base = next((r for r in results if r.name == BASELINE), None)
    if base is not None:
        ratios = ", ".join(f"{r.name} {r.cpu_us / base.cpu_us:.2f}x" for r in results if r is not base)
        print(f"client CPU per request vs {BASELINE}: {ratios}")


def run(requests: int, warmup: int, latency_ms: float, names: list[str]) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.transports", "--serve", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}{PATH}"
        print(
            f"python {sys.version.split()[0]}, httpx {httpx.__version__}, httpcore {version('httpcore')}, "
            f"aiohttp {aiohttp.__version__}, httpx-aiohttp {version('httpx-aiohttp')}, orjson {orjson.__version__}"
        )
        print(
            f"{WORKERS} workers, {requests} requests per case after {warmup} warm-up, "
            f"server latency {latency_ms} ms (server in pid {server.pid})\n"
        )
        results = []
        for case in CASES:
            if case.name in names:
                results.append(asyncio.run(measure(case, url, requests, warmup, server.pid)))
        print_table(results)
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Client CPU cost of HTTP PUTs through httpx over httpcore and over aiohttp, "
        "next to a raw aiohttp loop (the server runs in its own process).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="cases: " + ", ".join(c.name for c in CASES) + "\n\n"
        "example:\n  .venv/bin/python -m bench.transports --requests 5000 --latency-ms 1\n"
        "  .venv/bin/python -m bench.transports --cases httpcore-slots,raw-aiohttp",
    )
    parser.add_argument("--requests", type=int, default=5000, help="measured PUTs per case (default 5000)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured PUTs first (default 200)")
    parser.add_argument(
        "--latency-ms", type=float, default=1.0, help="server sleep before answering (default 1)"
    )
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.latency_ms)
        return
    names = [n.strip() for n in args.cases.split(",") if n.strip()] or [c.name for c in CASES]
    unknown = set(names) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    run(args.requests, args.warmup, args.latency_ms, names)


if __name__ == "__main__":
    main()
