"""Benchmarks of the connector next to a naive baseline (bench/naive.py), measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--only A,B,...]

A  events/s through the pipeline, sandbox unlimited with 1 ms latency (distinct orders: no coalescing)
B  API calls per distinct order on a duplicate-heavy backlog
C  request rate achieved against a 300/min budget (and 429s drawn)
D  p50/p99 event-to-API latency when idle
E  peak RSS while holding a 1,000,000-event backlog (API at 300/min, 45 s)
F  busiest 1-second window of requests, a fleet of 3 processes on a 60 s backlog at 300/min
G  another client on the same key takes half of 300/min: 429s per accepted request, share of what is left
H  a 429 with Retry-After: 3600: how fast /readyz says not ready, the metric and the log line
I  Shoplazza with a cold cache at 2/s: requests a second, number lookups included

Every process is separate: the broker (scripts/kafka), the sandbox (`connector sandbox`), the
connector (`connector run`) and the baseline. Figures are wall-clock on a shared machine: compare the
two columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from connector.demo import create_topics, produce
from connector.localkafka import free_port
from tests.helpers import kafka_broker as broker

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEY = "bench-key"


def small_order(key: str, version: int) -> bytes:
    return json.dumps(
        {
            "external_id": key,
            "status": "active",
            "total_price": {"amount": version * 100},
            "updated_at": f"2026-11-01T00:{version // 60 % 60:02d}:{version % 60:02d}Z",
        }
    ).encode()


def events(n: int, keys: int) -> list[tuple[bytes, bytes | None]]:
    versions: dict[str, int] = {}
    out = []
    for i in range(n):
        key = f"k{i % keys:07d}"
        versions[key] = versions.get(key, 0) + 1
        out.append((key.encode(), small_order(key, versions[key])))
    return out


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@contextmanager
def sandbox(rate_per_minute: float, latency_ms: float = 0.0) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "connector",
            "sandbox",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--rate-per-minute",
            str(rate_per_minute),
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_connector(
    bootstrap: str,
    topic: str,
    url: str,
    stdout: Any = subprocess.DEVNULL,
    python_args: tuple[str, ...] = (),
    **extra: Any,
) -> tuple[subprocess.Popen[bytes], int]:
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "CONNECTOR_KAFKA__TOPICS": topic,
            "CONNECTOR_KAFKA__GROUP_ID": f"{topic}-connector",
            "CONNECTOR_DLQ__TOPIC": f"{topic}.dlq",
            "CONNECTOR_SINK__BASE_URL": url,
            "CONNECTOR_SINK__API_KEY": KEY,
            "CONNECTOR_LOG_LEVEL": "WARNING",
            "CONNECTOR_METRICS__PORT": str(metrics_port),
            # The figures are the delivery's: calls per order count the vendor's log, where an
            # audit's reads (on ticks the delivery leaves) would count as calls. ``extra`` may
            # turn them on (AUDIT__ENABLED=true).
            "CONNECTOR_AUDIT__ENABLED": "false",
        }
    )
    env.update({f"CONNECTOR_{k}": str(v) for k, v in extra.items()})
    argv = [PY, *python_args, "-m", "connector", "run"]
    return subprocess.Popen(argv, env=env, stdout=stdout), metrics_port


def start_naive(bootstrap: str, topic: str, url: str, max_events: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PY,
            str(ROOT / "bench" / "naive.py"),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--group",
            f"{topic}-naive",
            "--base-url",
            url,
            "--api-key",
            KEY,
            "--max-events",
            str(max_events),
        ]
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


def stats(url: str) -> dict[str, Any]:
    """The sandbox's counters (cheap: polling the whole request log would stall the sandbox's loop
    and skew the arrival times being measured)."""
    return dict(httpx.get(f"{url}/_sandbox/stats", timeout=30).json())


def requests_log(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/_sandbox/requests", timeout=60).json()["requests"])


def orders(url: str) -> dict[str, dict[str, Any]]:
    return {o["external_id"]: o for o in httpx.get(f"{url}/_sandbox/orders", timeout=60).json()["orders"]}


def wait(predicate: Any, timeout: float, interval: float = 0.5) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("benchmark step did not finish")
        time.sleep(interval)
    return time.monotonic() - started


async def topic_with(
    bootstrap: str, name: str, data: list[tuple[bytes, bytes | None]], partitions: int = 4
) -> str:
    await create_topics(bootstrap, {name: partitions, f"{name}.dlq": 1})
    for i in range(0, len(data), 50_000):
        await produce(bootstrap, name, data[i : i + 50_000])
    return name


def a_throughput(bootstrap: str, n: int) -> tuple[str, str, str]:
    data = events(n, n)
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-a-{who}-{time.time_ns()}", data))
        with sandbox(1e9, latency_ms=1) as url:
            proc = (
                start_connector(
                    bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=1e6, SINK__MAX_IN_FLIGHT=32
                )[0]
                if who == "connector"
                else start_naive(bootstrap, topic, url, n)
            )
            wait(lambda u=url: httpx.get(f"{u}/_sandbox/stats").json()["orders"] >= n, 900)
            log = requests_log(url)
            stop(proc)
        span = max(r["ts"] for r in log) - min(r["ts"] for r in log)
        out.append(f"{n / span:,.0f} events/s")
    return "A events/s, API unlimited, 1 ms latency", out[0], out[1]


def b_calls_per_order(bootstrap: str, n: int, keys: int) -> tuple[str, str, str]:
    data = events(n, keys)
    latest = {k.decode(): json.loads(v or b"{}")["updated_at"] for k, v in data}
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-b-{who}-{time.time_ns()}", data))
        with sandbox(12_000, latency_ms=5) as url:
            proc = (
                start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=200)[0]
                if who == "connector"
                else start_naive(bootstrap, topic, url, n)
            )

            def synced(u: str = url) -> bool:
                held = orders(u)
                return all(held.get(k, {}).get("updated_at") == ts for k, ts in latest.items())

            wait(synced, 900, 1.0)
            if who == "naive":
                proc.wait(120)
            calls = len(requests_log(url))
            stop(proc)
        out.append(f"{calls / keys:.2f} calls/order")
    return f"B API calls per order, {n:,} events / {keys} orders", out[0], out[1]


def c_rate(bootstrap: str, seconds: float) -> tuple[str, str, str]:
    data = events(3_000, 3_000)
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-c-{who}-{time.time_ns()}", data))
        with sandbox(300) as url:
            proc = (
                start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=5)[0]
                if who == "connector"
                else start_naive(bootstrap, topic, url)
            )
            wait(lambda u=url: len(requests_log(u)) > 0, 60, 0.2)
            time.sleep(seconds)
            log = requests_log(url)
            stop(proc)
        t0 = min(r["ts"] for r in log)
        window = [r for r in log if t0 + 2 <= r["ts"] < t0 + 2 + (seconds - 4)]
        ok = sum(1 for r in window if r["status"] == 200) / (seconds - 4)
        refused = sum(1 for r in log if r["status"] == 429)
        out.append(f"{ok:.2f}/s ok of 5.00 ({refused} x 429)")
    return "C request rate against a 300/min budget", out[0], out[1]


def d_latency(bootstrap: str, count: int) -> tuple[str, str, str]:
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-d-{who}-{time.time_ns()}", []))
        with sandbox(1e9) as url:
            proc = (
                start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=100)[0]
                if who == "connector"
                else start_naive(bootstrap, topic, url)
            )
            time.sleep(8)  # group join
            sent: dict[str, float] = {}

            asyncio.run(trickle(bootstrap, topic, count, sent))
            wait(lambda u=url: httpx.get(f"{u}/_sandbox/stats").json()["orders"] >= count, 60, 0.2)
            log = requests_log(url)
            stop(proc)
        lat = sorted((r["ts"] - sent[r["external_id"]]) * 1000 for r in log if r["external_id"] in sent)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        out.append(f"p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms")
    return "D event-to-API latency when idle", out[0], out[1]


async def trickle(bootstrap: str, topic: str, count: int, sent: dict[str, float]) -> None:
    """Produce ``count`` events one at a time, 20 a second, noting when each was sent."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for i in range(count):
        key = f"idle-{i}"
        sent[key] = time.time()
        await producer.send_and_wait(topic, small_order(key, 1), key=key.encode())
        await asyncio.sleep(0.05)
    await producer.stop()


def e_rss(bootstrap: str, n: int, seconds: float) -> tuple[str, str, str]:
    data = events(n, max(1, n // 10))
    topic = asyncio.run(topic_with(bootstrap, f"bench-e-{time.time_ns()}", data))
    out = []
    for who in ("connector", "naive"):
        with sandbox(300) as url:
            if who == "connector":
                proc, metrics_port = start_connector(bootstrap, topic, url)
            else:
                proc = start_naive(bootstrap, topic, url)
            time.sleep(seconds)
            rss = peak_rss_mb(proc.pid)
            held = ""
            if who == "connector":
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                line = next(
                    ln for ln in text.splitlines() if ln.startswith("connector_events_consumed_total")
                )
                held = f", {float(line.split()[1]):,.0f} events read"
            stop(proc)
        out.append(f"{rss:.0f} MB{held}")
    return f"E peak RSS, {n:,}-event backlog, {seconds:.0f} s", out[0], out[1]


def busiest(times: list[float], window: float = 1.0) -> int:
    """Most requests in any window of ``window`` seconds."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def f_fleet_window(bootstrap: str, seconds: float) -> tuple[str, str, str]:
    data = events(4_000, 4_000)
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-f-{who}-{time.time_ns()}", data, partitions=6))
        logs = [Path(f"/tmp/bench-f-{os.getpid()}-{n}.log") for n in range(3)]
        with sandbox(300) as url:
            handles = [log.open("wb") for log in logs]
            procs = [
                start_connector(
                    bootstrap, topic, url, handle, SINK__RATE_LIMIT_PER_SECOND=5, LOG_LEVEL="DEBUG"
                )[0]
                if who == "connector"
                else start_naive(bootstrap, topic, url)
                for handle in handles
            ]
            wait(lambda u=url: stats(u)["requests"] > 0, 60, 0.2)
            time.sleep(seconds)
            log = requests_log(url)
            for proc in procs:
                stop(proc)
            for handle in handles:
                handle.close()
        t0 = min(r["ts"] for r in log)
        window = [r["ts"] for r in log if r["ts"] < t0 + seconds]
        refused = sum(1 for r in log if r["status"] == 429)
        sent = ""
        if who == "connector":  # when each request left, from the members' own logs (DEBUG)
            times = [
                (line := json.loads(text))["tick"] + line["late_ms"] / 1000
                for log_file in logs
                for text in log_file.read_text().splitlines()
                if '"api_request_tick"' in text
            ]
            sent = f"sent: busiest second {busiest([t for t in times if t < t0 + seconds])}; arrived: "
        for log_file in logs:
            log_file.unlink(missing_ok=True)
        out.append(
            f"{sent}busiest second {busiest(window)}, busiest minute {busiest(window, 60.0)}, {refused} x 429"
        )
    return f"F fleet of 3 at 300/min, {seconds:.0f} s backlog", out[0], out[1]


def g_shared_key(bootstrap: str, seconds: float) -> tuple[str, str, str]:
    data = events(4_000, 4_000)
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-g-{who}-{time.time_ns()}", data))
        with sandbox(300) as url:
            proc = (
                start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=5)[0]
                if who == "connector"
                else start_naive(bootstrap, topic, url)
            )
            wait(lambda u=url: stats(u)["requests"] > 0, 60, 0.2)
            started = time.time()
            asyncio.run(other_client(url, 2.5, seconds))
            log = requests_log(url)
            stop(proc)
        ours = [r for r in log if r["ts"] >= started + 30 and not is_other(r)]
        theirs = [r for r in log if r["ts"] >= started + 30 and is_other(r)]
        span = seconds - 30
        accepted = sum(1 for r in ours if r["status"] == 200)
        limited = sum(1 for r in ours if r["status"] == 429)
        left = 5.0 * span - sum(1 for r in theirs if r["status"] == 200)
        out.append(f"{limited / max(1, accepted):.1%} 429/accepted, {accepted / left:.0%} of what is left")
    return f"G another client takes half of 300/min ({seconds:.0f} s, first 30 s not counted)", out[0], out[1]


OTHER_PATH = "/api/2026-07/"
"""Where the other client sends: ``v1`` is an alias of ``2026-07``, and the connector uses ``v1``, so
the sandbox's log tells the two apart even for a request refused with 429 (whose body, and so its
``external_id``, the sandbox never reads)."""


def is_other(request: dict[str, Any]) -> bool:
    """Whether a request of the sandbox's log is the other client's."""
    return str(request["path"]).startswith(OTHER_PATH)


async def other_client(url: str, rate: float, seconds: float) -> None:
    """Another integration on the same key: ``rate`` upserts a second, evenly spaced."""
    base = f"{url}{OTHER_PATH.rstrip('/')}"
    async with httpx.AsyncClient(base_url=base, headers={"X-Authorization": KEY}) as client:
        loop = asyncio.get_running_loop()
        end, i = loop.time() + seconds, 0
        while loop.time() < end:
            i += 1
            key = f"other-{i}"
            await client.put("/orders", json={"external_id": key, "status": "active"})
            await asyncio.sleep(1 / rate)


def h_retry_after(bootstrap: str) -> tuple[str, str, str]:
    data = events(2_000, 2_000)
    topic = asyncio.run(topic_with(bootstrap, f"bench-h-{time.time_ns()}", data))
    with sandbox(60) as url:
        httpx.post(f"{url}/_sandbox/faults", json={"retry_after": 3600}).raise_for_status()
        env = {"SINK__RATE_LIMIT_PER_SECOND": 5, "DELIVERY__PROBE_INTERVAL_SECONDS": 5, "LOG_LEVEL": "INFO"}
        log_path = Path(f"/tmp/bench-h-{os.getpid()}.log")
        with log_path.open("wb") as handle:
            proc, port = start_connector(bootstrap, topic, url, **env, stdout=handle)
            wait(lambda: any(r["status"] == 429 for r in requests_log(url)), 120, 0.1)
            first_429 = min(r["ts"] for r in requests_log(url) if r["status"] == 429)
            wait(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503, 30, 0.05)
            not_ready_after = time.time() - first_429
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            stop(proc)
        exceeded = next(
            float(ln.split()[1])
            for ln in metrics.splitlines()
            if ln.startswith("connector_retry_after_exceeded_total")
        )
        said = [
            ln for ln in log_path.read_text().splitlines() if '"api_outage"' in ln and "Retry-After" in ln
        ]
        log_path.unlink()
    ours = f"/readyz 503 {not_ready_after:.1f} s after the first 429, {exceeded:.0f} counted, {len(said)} log line(s)"
    return "H 429 with Retry-After: 3600 (probe interval 5 s)", ours, "waits 1 s and retries, for ever"


def i_shoplazza(bootstrap: str, orders_n: int) -> tuple[str, str, str]:
    data = [
        (f"n{i}".encode(), json.dumps({"number": f"{1000 + i}", "note": "bench"}).encode())
        for i in range(orders_n)
    ]
    topic = asyncio.run(topic_with(bootstrap, f"bench-i-{time.time_ns()}", data))
    with sandbox(300) as url:
        seed = [{"id": f"o-{i}", "number": f"{1000 + i}"} for i in range(orders_n)]
        httpx.post(f"{url}/_sandbox/shoplazza/orders", json=seed).raise_for_status()
        log_file = Path(f"/tmp/bench-i-{os.getpid()}.log")
        with log_file.open("wb") as handle:
            proc, _ = start_connector(
                bootstrap, topic, url, handle, SINK__KIND="shoplazza", SINK__RATE_LIMIT_PER_SECOND=2,
                LOG_LEVEL="DEBUG",
            )  # fmt: skip
            wait(lambda u=url: stats(u)["requests"] >= 2 * orders_n, 300, 0.5)
            log = requests_log(url)
            stop(proc)
    sent = [
        (line := json.loads(text))["tick"] + line["late_ms"] / 1000
        for text in log_file.read_text().splitlines()
        if '"api_request_tick"' in text
    ]
    log_file.unlink()
    times = [r["ts"] for r in log]
    lookups = sum(1 for r in log if r["method"] == "GET")
    rate = (len(times) - 1) / (max(times) - min(times))
    ours = (
        f"{len(times)} requests ({lookups} lookups): {rate:.2f}/s; busiest second: sent {busiest(sent)}, "
        f"arrived {busiest(times)}"
    )
    return f"I Shoplazza at 2/s, {orders_n} orders by number, cold cache", ours, "n/a (Loop only)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="A,B,C,D,E,F,G,H,I")
    args = parser.parse_args()
    q = args.quick
    chosen = set(args.only.split(","))
    with broker() as bootstrap:
        print(
            f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"figures are wall-clock, compare within a row",
            flush=True,
        )
        rows = []
        plan = {
            "A": lambda: a_throughput(bootstrap, 2_000 if q else 20_000),
            "B": lambda: b_calls_per_order(bootstrap, 2_000 if q else 10_000, 50 if q else 250),
            "C": lambda: c_rate(bootstrap, 12 if q else 30),
            "D": lambda: d_latency(bootstrap, 40 if q else 200),
            "E": lambda: e_rss(bootstrap, 50_000 if q else 1_000_000, 15 if q else 45),
            "F": lambda: f_fleet_window(bootstrap, 20 if q else 60),
            "G": lambda: g_shared_key(bootstrap, 60 if q else 150),
            "H": lambda: h_retry_after(bootstrap),
            "I": lambda: i_shoplazza(bootstrap, 20 if q else 60),
        }
        for name, run in plan.items():
            if name in chosen:
                rows.append(run())
                print(f"  {rows[-1][0]}: connector {rows[-1][1]} | naive {rows[-1][2]}", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'connector':<40}  naive baseline")
    for label, ours, naive in rows:
        print(f"{label:<{width}}  {ours:<40}  {naive}")


if __name__ == "__main__":
    main()
