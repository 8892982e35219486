"""A resync under live traffic: what it costs the live traffic, and what it costs the budget.

    .venv/bin/python -m bench.resync [--orders 2000] [--budget 20] [--share 0.2] [--baseline 60]
                                     [--preload-budget B] [--audits]

One connector process, the sandbox (`connector sandbox`, budget x 60 a minute) and the broker
(scripts/kafka, or TEST_KAFKA_BOOTSTRAP_SERVERS). ``--orders`` orders are delivered first. Then live
traffic begins: a new order every 2 / budget seconds (half the budget). After ``--baseline`` seconds
the vendor loses every order it holds, a resync of every order is asked (`connector resync --all`),
and the live traffic goes on until the resync is done. Printed: live event-to-API latency (p50, p99)
before and during the resync; the resync's duration, and its calls per preloaded order; 429s; whether
every preloaded order is back. Figures are wall-clock on a shared machine: compare the two phases of
one run, not runs with each other.

``--preload-budget B`` (for large runs at a small budget, e.g. 10,000 orders at 5/s) delivers the
preload through a first sandbox and connector at B/s, stops both, and measures with a fresh sandbox at
``--budget`` and the connector restarted on the same group: the vendor has then lost every preloaded
order (a restored backup), and the restarted member resumes from the group's commits.

``--audits`` runs the connector with its read-back audits on (the product's default; the benchmarks
run them off so that the vendor's log counts the delivery's calls only): they find lost orders too,
and the resync skips those they repaired since it was asked. Calls count writes, not the audits'
reads, which are printed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from typing import Any

import httpx

from bench.run import (
    broker,
    orders,
    requests_log,
    sandbox,
    small_order,
    start_connector,
    stats,
    stop,
    topic_with,
    wait,
)
from connector import resynccmd
from connector.config import Settings


async def live(bootstrap: str, topic: str, gap: float, sent: dict[str, float], until: asyncio.Event) -> None:
    """A new order every ``gap`` seconds until ``until`` is set, noting when each was sent."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    i = 0
    try:
        while not until.is_set():
            key = f"live-{i}"
            i += 1
            sent[key] = time.time()
            await producer.send_and_wait(topic, small_order(key, 1), key=key.encode())
            await asyncio.sleep(gap)
    finally:
        await producer.stop()


async def holding(url: str, orders: int, timeout: float = 3600) -> float:
    """Seconds until the vendor at ``url`` holds ``orders`` orders."""
    return await asyncio.to_thread(wait, lambda: stats(url)["orders"] >= orders, timeout, 0.2)


def latency(log: list[dict[str, Any]], sent: dict[str, float], start: float, end: float) -> str:
    first: dict[str, float] = {}
    for r in log:
        key = r.get("external_id")
        if key in sent and start <= sent[key] < end and key not in first:
            first[key] = r["ts"]
    lat = sorted((first[k] - sent[k]) * 1000 for k in first)
    if not lat:
        return "no live events"
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return f"p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms ({len(lat)} events)"


async def scenario(bootstrap: str, args: argparse.Namespace) -> None:
    preload: list[tuple[bytes, bytes | None]] = [
        (f"r-{i}".encode(), small_order(f"r-{i}", 1)) for i in range(args.orders)
    ]
    topic = await topic_with(bootstrap, f"bench-resync-{time.time_ns()}", preload, partitions=4)
    settings = Settings(
        kafka={"bootstrap_servers": bootstrap, "topics": [topic], "group_id": f"{topic}-connector"}
    )
    await resynccmd.ensure_topic(settings)
    preload_budget = args.preload_budget or args.budget
    audits = {"AUDIT__ENABLED": "true"} if args.audits else {}
    if preload_budget != args.budget:
        with sandbox(preload_budget * 60) as url:
            proc, _ = start_connector(
                bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=preload_budget, **audits
            )
            try:
                took = await holding(url, args.orders)
                print(f"preloaded {args.orders} orders in {took:.0f} s at {preload_budget:g}/s", flush=True)
                await asyncio.sleep(6.0)  # the last commits land
            finally:
                stop(proc)
    with sandbox(args.budget * 60) as url:
        proc, _ = start_connector(bootstrap, topic, url, SINK__RATE_LIMIT_PER_SECOND=args.budget, **audits)
        try:
            if preload_budget == args.budget:
                took = await holding(url, args.orders)
                print(f"preloaded {args.orders} orders in {took:.0f} s", flush=True)
            sent: dict[str, float] = {}
            done = asyncio.Event()
            traffic = asyncio.create_task(live(bootstrap, topic, 2.0 / args.budget, sent, done))
            # The baseline begins once the first live order landed: a (re)started member's join and
            # warm-up are not the resync's doing (a run without this measured them as "before").
            await holding(url, stats(url)["orders"] + 1, timeout=120)
            t0 = time.time()
            await asyncio.sleep(args.baseline)
            t1 = time.time()
            held = [o for o in await asyncio.to_thread(orders, url) if o.startswith("r-")]
            async with httpx.AsyncClient(timeout=60) as client:
                lost = (await client.post(f"{url}/_sandbox/tamper", json={"lose": held})).json()["lose"]
            if preload_budget != args.budget:
                lost = [f"r-{i}" for i in range(args.orders)]  # the fresh sandbox never held them
            await resynccmd.publish(settings, resynccmd.new_request(settings, None, None, args.share))
            while not (await resynccmd.status(settings)).done:
                await asyncio.sleep(2.0)
                if time.time() - t1 > args.timeout:
                    print("resync not done within the timeout")
                    break
            t2 = time.time()
            done.set()
            await traffic
            await asyncio.sleep(3.0)  # the last live events land
            log = requests_log(url)
            back = orders(url)
        finally:
            stop(proc)
    state = await resynccmd.status(settings)
    resync_writes = [
        r
        for r in log
        if r["ts"] >= t1 and r["method"] != "GET" and str(r.get("external_id", "")).startswith("r-")
    ]
    reads = sum(1 for r in log if r["method"] == "GET")
    statuses = [r["status"] for r in log]
    missing = [o for o in lost if o not in back]
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores; budget {args.budget:g}/s, live traffic at half"
        f" of it, floor share {args.share:g}\n"
        f"live latency before the resync ({t1 - t0:.0f} s): {latency(log, sent, t0, t1)}\n"
        f"live latency during the resync ({t2 - t1:.0f} s): {latency(log, sent, t1, t2)}\n"
        f"resync: {len(lost)} orders lost, {len(resync_writes)} calls for them "
        f"({len(resync_writes) / max(1, len(lost)):.3f} per order), status {state.totals()}, "
        f"{len(missing)} still missing; 429s in the run: {statuses.count(429)}; audits "
        f"{'on' if args.audits else 'off'}, {reads} reads in the run"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--baseline", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--preload-budget", type=float, default=0.0)
    parser.add_argument("--audits", action="store_true")
    args = parser.parse_args()
    with broker() as bootstrap:
        asyncio.run(scenario(bootstrap, args))


if __name__ == "__main__":
    main()
