"""What an event and a call cost: the connector's own CPU and memory, beside the naive baseline and
the raw limit of the parts underneath, measured in one run.

    .venv/bin/python -m bench.cost [--quick] [--only J,K,...]

J  coalescing a backlog (200,000 events / 1,000 orders), API unthrottled: events per connector CPU s
K  distinct orders, API unthrottled, 1 ms latency: requests per connector CPU s, and peak RSS
L  peak RSS holding a 1,000,000-event backlog (API at 300/min)
M  request rate achieved while backlogged, at budgets of 5, 100 and 1,000 a second (and 429s)
N  100,000 events / 5,000 orders at 100/s: wall time from process start, over the ideal (orders/budget)
P  a preloaded backlog (20,000 events / 1,000 orders at 100/s, and 10,000 / 500 at 5/s) over 2, 4 and
   8 partitions: calls per order, and the wall time to the last order's newest state over the ideal
O  the mapping stage: J's backlog as Shopify order webhooks (examples/shopify), events per connector
   CPU s with no mapping (the same orders as native envelopes), the JMESPath mapping file and the
   Python mapping function; beside it, the stage alone in this process (read path, no Kafka)

"Per CPU s" divides by the connector process's own CPU seconds (``/proc/<pid>/stat``), counted from
its first event read to its last resolved, so the broker and the sandbox, on the same machine, do not
count against it. The raw limit of the input side is a bare aiokafka ``getmany`` loop: alone, with
``json.loads`` of each value (as the goal was set) and with ``orjson.loads`` (the ``--raw-consume``
mode of this script, each in a process of its own); that of the call path is in ``bench/transports.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.run import (
    PY,
    e_rss,
    events,
    orders,
    peak_rss_mb,
    requests_log,
    sandbox,
    start_connector,
    start_naive,
    stop,
    topic_with,
    wait,
)
from connector.localkafka import LocalKafka

Row = tuple[str, str, str, str]
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / _TICK


def sandbox_pid(url: str) -> int:
    """The pid of the sandbox process serving ``url`` (started by ``bench.run.sandbox``)."""
    port = url.rsplit(":", 1)[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")  # noqa: SIM115
            except OSError:
                continue
            if b"sandbox" in argv and port.encode() in argv:
                return int(entry)
    raise LookupError(f"no sandbox process for {url}")


def metric(port: int, name: str) -> float:
    """Sum of every sample of ``name`` on a connector's /metrics (0 before it is up)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name))


def sandbox_stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_sandbox/stats", timeout=60).json())


def first_then(pid: int, started: Any, done: Any, timeout: float) -> tuple[float, float]:
    """CPU seconds of ``pid`` from when ``started()`` first holds to when ``done()`` does, and the wall
    seconds between."""
    wait(started, timeout, 0.05)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    wait(done, timeout, 0.25)
    return cpu_seconds(pid) - cpu0, time.monotonic() - t0


async def raw_consume(bootstrap: str, topic: str, n: int, parse: str) -> None:
    """The input side's raw limit: records per CPU s of getmany, and of getmany + ``parse`` of each
    value (``json``: the standard library, the issue's reference; ``orjson``: what the connector uses;
    ``none``: no parse), nothing else."""
    import json

    import orjson
    from aiokafka import AIOKafkaConsumer

    loads = {"json": json.loads, "orjson": orjson.loads, "none": len}[parse]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen, cpu0 = 0, 0.0
    try:
        while seen < n:
            for records in (await consumer.getmany(timeout_ms=500, max_records=500)).values():
                if not seen:
                    cpu0 = time.process_time()
                for record in records:
                    loads(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    print(f"{seen / (time.process_time() - cpu0):.0f}")


def raw_limit(bootstrap: str, topic: str, n: int) -> str:
    """getmany alone, with json.loads, with orjson.loads: each in a process of its own."""
    rates = []
    for parse in ("none", "json", "orjson"):
        out = subprocess.run(
            [PY, "-m", "bench.cost", "--raw-consume", bootstrap, topic, str(n), parse],
            capture_output=True,
            text=True,
            check=True,
        )
        rates.append(float(out.stdout.strip().splitlines()[-1]))
    return (
        f"{rates[1]:,.0f} events/CPU s with json.loads ({rates[0]:,.0f} getmany alone, "
        f"{rates[2]:,.0f} with orjson)"
    )


def unthrottled_backlog(bootstrap: str, topic: str, url: str, n: int, **extra: Any) -> str:
    """The connector (``extra`` settings) through a backlog of ``n`` events, API unthrottled: events
    per connector CPU second, from its first event read to its last resolved."""
    proc, port = start_connector(
        bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=1e6, SINK__MAX_IN_FLIGHT=32, **extra
    )
    try:
        cpu, wall = first_then(
            proc.pid,
            lambda p=port: metric(p, "connector_events_consumed_total") > 0,
            lambda p=port: metric(p, "connector_events_resolved_total") >= n,
            900,
        )
        calls = sandbox_stats(url)["requests"]
    finally:
        stop(proc)
    return f"{n / cpu:,.0f} events/CPU s ({n / wall:,.0f}/s wall, {calls:,} calls)"


def j_coalesce(bootstrap: str, n: int, keys: int) -> Row:
    data = events(n, keys)
    naive_n = min(n, 20_000)
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-j-{who}-{time.time_ns()}", data))
        with sandbox(1e9, latency_ms=1) as url:
            if who == "connector":
                out.append(unthrottled_backlog(bootstrap, topic, url, n))
                raw = raw_limit(bootstrap, topic, n)
                continue
            proc = start_naive(bootstrap, topic, url)  # stopped by stop(), so its CPU can be read
            cpu, _ = first_then(
                proc.pid,
                lambda u=url: sandbox_stats(u)["requests"] > 0,
                lambda u=url: sandbox_stats(u)["requests"] >= naive_n,
                900,
            )
            done = sandbox_stats(url)["requests"]
            out.append(f"{done / cpu:,.0f} events/CPU s (first {done:,}, a call each)")
            stop(proc)
    return f"J coalescing {n:,} events / {keys:,} orders, API unthrottled", out[0], out[1], raw


def k_calls(bootstrap: str, n: int) -> tuple[Row, Row]:
    data = events(n, n)
    naive_n = min(n, 20_000)
    out, rss = [], []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-k-{who}-{time.time_ns()}", data))
        with sandbox(1e9, latency_ms=1) as url:
            if who == "connector":
                proc, port = start_connector(
                    bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=1e6, SINK__MAX_IN_FLIGHT=32
                )
                count = n
                started = lambda p=port: metric(p, "connector_events_consumed_total") > 0  # noqa: E731
            else:
                proc, count = start_naive(bootstrap, topic, url), naive_n
                started = lambda u=url: sandbox_stats(u)["requests"] > 0  # noqa: E731
            cpu, wall = first_then(
                proc.pid, started, lambda u=url, c=count: sandbox_stats(u)["orders"] >= c, 1800
            )
            rss.append(f"{peak_rss_mb(proc.pid):.0f} MB after {count:,} orders")
            stop(proc)
        out.append(f"{count / cpu:,.0f} requests/CPU s ({count / wall:,.0f}/s wall)")
    see = "bench/transports.py"
    return (
        (f"K distinct orders ({n:,}), API unthrottled, 1 ms: requests", out[0], out[1], see),
        (f"K peak RSS, {n:,} distinct orders delivered", rss[0], rss[1], ""),
    )


def m_pace(bootstrap: str, budget: float, seconds: float, **extra: Any) -> Row:
    data = events(int(budget * (seconds + 15)), int(budget * (seconds + 15)))
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-m-{who}-{time.time_ns()}", data))
        with sandbox(budget * 60) as url:
            if who == "connector":
                proc = start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=budget, **extra)[0]
            else:
                proc = start_naive(bootstrap, topic, url)
            wait(lambda u=url: sandbox_stats(u)["requests"] > 0, 60, 0.1)
            server = sandbox_pid(url)
            cpu0, server0 = cpu_seconds(proc.pid), cpu_seconds(server)
            time.sleep(seconds)
            busy = (cpu_seconds(proc.pid) - cpu0) / seconds
            server_busy = (cpu_seconds(server) - server0) / seconds
            log = requests_log(url)
            stop(proc)
        t0 = min(r["ts"] for r in log)
        span = seconds - 4
        window = [r for r in log if t0 + 3 <= r["ts"] < t0 + 3 + span]
        ok = sum(1 for r in window if r["status"] == 200) / span
        refused = sum(1 for r in window if r["status"] == 429)
        out.append(
            f"{ok:,.1f}/s = {ok / budget:.1%} ({refused} x 429, CPU {busy:.0%}, API {server_busy:.0%})"
        )
    return f"M rate while backlogged, budget {budget:g}/s", out[0], out[1], f"{budget:g}/s"


def n_wall(bootstrap: str, n: int, keys: int, budget: float) -> Row:
    data = events(n, keys)
    ideal = keys / budget
    latest = {k.decode(): v for k, v in data}
    want = {k: orjson_updated(v) for k, v in latest.items()}
    out = []
    for who in ("connector", "naive"):
        topic = asyncio.run(topic_with(bootstrap, f"bench-n-{who}-{time.time_ns()}", data))
        with sandbox(budget * 60) as url:
            started, started_wall = time.monotonic(), time.time()
            if who == "connector":
                proc = start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=budget)[0]
            else:
                proc = start_naive(bootstrap, topic, url)

            def synced(u: str = url) -> bool:
                held = orders(u)
                return all(held.get(k, {}).get("updated_at") == ts for k, ts in want.items())

            try:
                wait(synced, ideal * 3, 1.0)
                took = time.monotonic() - started
                # When the last order reached its latest state, from the vendor's own log: the poll
                # above only says that it has (a second's granularity, and a slow 5,000-order read).
                landed = max(
                    r["ts"]
                    for r in requests_log(url)
                    if r["status"] == 200 and want.get(r["external_id"]) == r["updated_at"]
                )
                exact = landed - started_wall
                out.append(f"{exact:.1f} s = {exact / ideal:.2f} x ideal (seen synced at {took:.1f} s)")
            except TimeoutError:
                held = orders(url)
                behind = sum(1 for k, ts in want.items() if held.get(k, {}).get("updated_at") != ts)
                out.append(f"{behind:,} of {keys:,} orders behind after {ideal * 3:.0f} s")
            stop(proc)
    return f"N {n:,} events / {keys:,} orders at {budget:g}/s, from start", out[0], out[1], f"{ideal:.0f} s"


def p_backlog(bootstrap: str, n: int, keys: int, budget: float, partitions: int, **extra: Any) -> Row:
    """A preloaded backlog of ``n`` events for ``keys`` orders over ``partitions`` partitions at
    ``budget`` a second (the connector alone): the calls it made per order (the sandbox's log, every
    request counted) and the wall time from process start to the last order's newest state landing,
    over the ideal (``keys / budget``)."""
    data = events(n, keys)
    ideal = keys / budget
    want = {k.decode(): orjson_updated(v) for k, v in data}
    topic = asyncio.run(topic_with(bootstrap, f"bench-p-{time.time_ns()}", data, partitions=partitions))
    with sandbox(budget * 60) as url:
        started_wall = time.time()
        proc = start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=budget, **extra)[0]

        def synced(u: str = url) -> bool:
            held = orders(u)
            return all(held.get(k, {}).get("updated_at") == ts for k, ts in want.items())

        try:
            wait(synced, ideal * 3 + 30, 1.0)
            log = requests_log(url)
            landed = max(
                r["ts"] for r in log if r["status"] == 200 and want.get(r["external_id"]) == r["updated_at"]
            )
            first = min(r["ts"] for r in log)
            calls = sum(1 for r in log if r["status"] != 429)
            refused = sum(1 for r in log if r["status"] == 429)
            took = landed - started_wall
            figure = (
                f"{calls / keys:.3f} calls/order, {took:.1f} s = {took / ideal:.2f} x ideal "
                f"(first call at {first - started_wall:.1f} s; from it {(landed - first) / ideal:.2f} x), "
                f"{refused} x 429"
            )
        except TimeoutError:
            figure = f"not synced after {ideal * 3 + 30:.0f} s"
        stop(proc)
    name = f"P backlog {n:,} / {keys:,} at {budget:g}/s, {partitions} partitions"
    return name, figure, "", f"{ideal:.0f} s ideal"


def shopify_events(
    n: int, keys: int
) -> tuple[list[tuple[bytes, bytes | None]], list[tuple[bytes, bytes | None]]]:
    """``n`` Shopify order webhooks over ``keys`` orders (the first event of examples/shopify, with
    its id, updated_at and tags varied), and the same events as native envelopes (the mapping's
    output, what a producer of the connector's own format would write)."""
    import json

    from connector.config import MappingSettings
    from connector.mapping import NATIVE_STEP, Mapper, Trace
    from connector.structs import Record

    with open("examples/shopify/events.jsonl") as handle:
        template = json.loads(handle.readline())["value"]
    mapper = Mapper(MappingSettings(file="examples/shopify/mapping.toml"))
    shopify, native = [], []
    versions: dict[int, int] = {}
    for i in range(n):
        ident = 820982911946154508 + (i % keys) * 10
        versions[ident] = version = versions.get(ident, 0) + 1
        body = dict(template, id=ident, name=f"#{1000 + i % keys}", tags=f"v{version}, bench")
        body["updated_at"] = (
            f"2026-11-01T{12 + version // 3600:02d}:{version // 60 % 60:02d}:{version % 60:02d}-05:00"
        )
        body["line_items"] = [dict(template["line_items"][0], id=ident + 1)]
        key, value = str(ident).encode(), json.dumps(body).encode()
        trace: Trace = []
        mapper.read(Record("bench", 0, i, key, value), trace=trace)
        shopify.append((key, value))
        native.append((key, json.dumps(dict(trace)[NATIVE_STEP]).encode()))
    return native, shopify


def stage_alone(data: list[tuple[bytes, bytes | None]], **mapping: str) -> float:
    """Events per CPU second of the read path alone (decode, or the mapping stage), in this process."""
    from connector.config import MappingSettings
    from connector.decode import decode
    from connector.mapping import Mapper
    from connector.structs import Record

    records = [Record("bench", 0, i, k, v) for i, (k, v) in enumerate(data)]
    mapper = Mapper(MappingSettings(**mapping)) if mapping else None
    started = time.process_time()
    for record in records:
        if mapper is None:
            decode(record, validate=False)
        else:
            mapper.read(record)
    return len(records) / (time.process_time() - started)


def o_mapping(bootstrap: str, n: int, keys: int) -> list[Row]:
    native, shopify = shopify_events(n, keys)
    cases = [
        ("no mapping (native envelopes)", native, {}),
        ("JMESPath mapping file", shopify, {"file": "examples/shopify/mapping.toml"}),
        ("Python mapping function", shopify, {"function": "examples.shopify.mapping:to_loop"}),
    ]
    rows: list[Row] = []
    for label, data, mapping in cases:
        topic = asyncio.run(topic_with(bootstrap, f"bench-o-{time.time_ns()}", data))
        with sandbox(1e9, latency_ms=1) as url:
            extra = {f"MAPPING__{k.upper()}": v for k, v in mapping.items()}
            figure = unthrottled_backlog(bootstrap, topic, url, n, **extra)
        alone = stage_alone(data[:20_000], **mapping)
        rows.append(
            (
                f"O {n:,} Shopify webhooks / {keys:,} orders: {label}",
                figure,
                "n/a",
                f"read path alone: {alone:,.0f} events/CPU s",
            )
        )
    return rows


def orjson_updated(value: bytes | None) -> str:
    import orjson

    return str(orjson.loads(value or b"{}").get("updated_at"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    parser.add_argument("--only", default="J,K,L,M,N,O", help="which benchmarks, e.g. --only J,M")
    parser.add_argument("--budgets", default="5,100,1000", help="M's budgets, requests a second")
    parser.add_argument("--partitions", default="2,4,8", help="P's partition counts")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a connector setting for P (env name)",
    )
    parser.add_argument(
        "--p-budgets", default="100,5", help="P's budgets (100: 20,000 / 1,000; 5: 10,000 / 500)"
    )
    parser.add_argument(
        "--raw-consume", nargs=4, metavar=("BOOTSTRAP", "TOPIC", "N", "PARSE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.raw_consume:
        bootstrap, topic, n, parse = args.raw_consume
        asyncio.run(raw_consume(bootstrap, topic, int(n), parse))
        return
    only = set(args.only.split(","))
    q = args.quick
    rows: list[Row] = []
    with LocalKafka() as kafka:
        b = kafka.bootstrap_servers
        if "J" in only:
            rows.append(j_coalesce(b, 20_000 if q else 200_000, 1_000))
        if "K" in only:
            rows.extend(k_calls(b, 5_000 if q else 200_000))
        if "L" in only:
            name, conn, naive = e_rss(b, 100_000 if q else 1_000_000, 15 if q else 45)
            rows.append((name.replace("E peak", "L peak"), conn, naive, ""))
        if "M" in only:
            for budget in map(float, args.budgets.split(",")):
                rows.append(m_pace(b, budget, 12 if q else 30))
        if "N" in only:
            rows.append(n_wall(b, 10_000 if q else 100_000, 500 if q else 5_000, 100.0))
        if "O" in only:
            rows.extend(o_mapping(b, 20_000 if q else 200_000, 1_000))
        if "P" in only:
            for budget in map(float, args.p_budgets.split(",")):
                keys = 1_000 if budget >= 100 else 500
                for count in map(int, args.partitions.split(",")):
                    extra = dict(item.split("=", 1) for item in args.set)
                    rows.append(p_backlog(b, keys * 20, keys, budget, count, **extra))
    print(f"\n{'figure':58} {'connector':44} {'naive':44} raw limit / goal")
    for name, conn, naive, raw in rows:
        print(f"{name:58} {conn:44} {naive:44} {raw}")
    print(f"({os.cpu_count()} cores, {sys.platform}; wall figures share the machine with broker and sandbox)")


if __name__ == "__main__":
    main()
