"""Many shops: total requests a second with N tenants at their own budget each, per connector CPU second.

    .venv/bin/python -m bench.tenants [--tenants 1000] [--orders 40] [--rate 5] [--profile FILE]

Every tenant is a Loop account of its own in one sandbox process (``connector sandbox --tenants N``:
its own key, and a bucket of ``rate`` a second holding one second's worth). One connector process
serves them all from one tenants file, routing by the envelope's ``shop`` field. The backlog is
``orders`` distinct orders per tenant, interleaved, so every event costs one call. Printed, from the
connector's own metrics and ``/proc``: the total request rate between 10% and 90% of the calls, the
429s, requests per connector CPU second over the same span, peak RSS, and the time from process
start to the first request. The ideal total rate is ``N x rate x 0.99`` (the pacer's slack); on a
2-core machine the connector's CPU, not the budget, is the limit long before 1,000 tenants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.cost import cpu_seconds, metric
from bench.run import KEY, PY, peak_rss_mb, start_connector, stop, topic_with, wait, wait_port
from connector.demo import create_topics
from connector.localkafka import LocalKafka, free_port


def backlog(tenants: int, orders: int) -> list[tuple[bytes, bytes | None]]:
    """``orders`` distinct orders for each tenant, interleaved tenant by tenant."""
    out: list[tuple[bytes, bytes | None]] = []
    for o in range(orders):
        for t in range(tenants):
            key = f"o{o:05d}"
            event = {
                "event_id": f"t{t:04d}:{key}",
                "event_type": "order.updated",
                "shop": f"t{t:04d}",
                "order": {"external_id": key, "status": "active", "updated_at": "2026-11-01T00:00:01Z"},
            }
            out.append((f"t{t:04d}/{key}".encode(), json.dumps(event).encode()))
    return out


def tenants_file(path: Path, url: str, tenants: int, rate: float) -> None:
    lines = []
    for t in range(tenants):
        name = f"t{t:04d}"
        lines += [f"[{name}]", f'base_url = "{url}/t/{name}"', f'api_key = "{KEY}-{name}"']
        lines += [f"rate_limit_per_second = {rate}", ""]
    path.write_text("\n".join(lines))


def run(bootstrap: str, tenants: int, orders: int, rate: float, profile: str = "", **extra: str) -> str:
    total = tenants * orders
    topic = asyncio.run(topic_with(bootstrap, f"bench-tenants-{time.time_ns()}", backlog(tenants, orders)))
    asyncio.run(create_topics(bootstrap, {f"{topic}.parked": 4}))  # parking on, as the README says
    port = free_port()
    box = subprocess.Popen(
        [PY, "-m", "connector", "sandbox", "--port", str(port), "--api-key", KEY, "--tenants", str(tenants),
         "--rate-per-minute", str(rate * 60)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tenants.toml"
            tenants_file(path, url, tenants, rate)
            proc, mport = start_connector(
                bootstrap,
                topic,
                url,
                python_args=("-m", "cProfile", "-o", profile) if profile else (),
                TENANTS__PATH=str(path),
                TENANTS__ROUTE="field:shop",
                **extra,
            )

            def calls() -> float:
                """Calls answered so far, as the sandbox counts them: polling the connector's own
                /metrics ten times a second (1,000 shops' series) cost it about 7% of the CPU
                measured (py-spy), where Prometheus scrapes every 15 s or more."""
                return float(httpx.get(f"{url}/_sandbox/stats", timeout=10).json()["requests_all"])

            first = wait(lambda: calls() > 0, 300, 0.05)
            wait(lambda: calls() >= 0.1 * total, 900, 0.1)
            cpu0, t0, n0 = cpu_seconds(proc.pid), time.monotonic(), calls()
            wait(lambda: calls() >= 0.9 * total, 900, 0.1)
            cpu1, t1, n1 = cpu_seconds(proc.pid), time.monotonic(), calls()
            wait(lambda: metric(mport, "connector_events_resolved_total") >= total, 900, 0.25)
            limited = metric(mport, 'connector_api_requests_total{status_class="429"}')
            rss = peak_rss_mb(proc.pid)
            stop(proc)
    finally:
        box.terminate()
        box.wait(30)
    rate_achieved = (n1 - n0) / (t1 - t0)
    ideal = tenants * rate * 0.99
    return (
        f"{tenants:,} tenants at {rate:g}/s, {total:,} orders: {rate_achieved:,.0f} requests/s "
        f"({rate_achieved / ideal:.1%} of {ideal:,.0f}), {(n1 - n0) / (cpu1 - cpu0):,.0f} requests per "
        f"connector CPU s, {limited:.0f} x 429, peak RSS {rss:.0f} MB, first request "
        f"{first:.1f} s after start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=40, help="distinct orders per tenant")
    parser.add_argument("--rate", type=float, default=5.0, help="each tenant's budget, requests a second")
    parser.add_argument("--profile", default="", help="run the connector under cProfile, writing FILE")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a connector setting (env name)"
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    with LocalKafka() as kafka:
        print(run(kafka.bootstrap_servers, args.tenants, args.orders, args.rate, args.profile, **extra))


if __name__ == "__main__":
    main()
