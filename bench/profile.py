"""Where the connector's CPU goes, for the two throughput figures of ``bench/cost.py``.

    .venv/bin/python -m bench.profile [--case coalesce|calls|both] [--events N] [--top 40]

``coalesce``: a backlog of N events over 1,000 orders (most events replaced before any call);
``calls``: N distinct orders (one call each). Both against the sandbox, unthrottled, 1 ms latency. The
connector runs under cProfile in its own process (``python -m cProfile -o FILE -m connector run``),
is stopped with SIGTERM once every event is resolved, and the profile is written to
``bench/profiles/<case>.prof`` with the top functions by own time and by cumulative time in
``bench/profiles/<case>.txt``. Open the .prof with ``snakeviz`` or ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import time
from pathlib import Path

from bench.cost import metric
from bench.run import ROOT, events, sandbox, start_connector, stop, topic_with, wait
from connector.localkafka import LocalKafka

OUT = ROOT / "bench" / "profiles"


def profile(bootstrap: str, case: str, n: int, top: int) -> Path:
    """Run one case under cProfile; returns the text summary's path."""
    keys = 1_000 if case == "coalesce" else n
    topic = asyncio.run(topic_with(bootstrap, f"profile-{case}-{time.time_ns()}", events(n, keys)))
    OUT.mkdir(exist_ok=True)
    prof = OUT / f"{case}.prof"
    with sandbox(1e9, latency_ms=1) as url:
        proc, port = start_connector(
            bootstrap,
            topic,
            url,
            python_args=("-m", "cProfile", "-o", str(prof)),
            SINK__RATE_LIMIT_PER_SECOND=1e6,
            SINK__MAX_IN_FLIGHT=32,
        )
        took = wait(lambda: metric(port, "connector_events_resolved_total") >= n, 1800, 0.5)
        stop(proc)
    buffer = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buffer)
    buffer.write(f"{case}: {n:,} events over {keys:,} orders, resolved in {took:.1f} s (wall, profiled)\n")
    for order in ("tottime", "cumulative"):
        buffer.write(f"\n=== by {order} ===\n")
        stats.sort_stats(order).print_stats(top)
    text = OUT / f"{case}.txt"
    text.write_text(buffer.getvalue())
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=("coalesce", "calls", "both"), default="both")
    parser.add_argument("--events", type=int, default=0, help="events (default 100,000 / 30,000)")
    parser.add_argument("--top", type=int, default=40, help="functions listed per ordering")
    args = parser.parse_args()
    cases = ("coalesce", "calls") if args.case == "both" else (args.case,)
    with LocalKafka() as kafka:
        for case in cases:
            n = args.events or (100_000 if case == "coalesce" else 30_000)
            text = profile(kafka.bootstrap_servers, case, n, args.top)
            print(text.read_text()[:6000])
            print(f"written: {text} and {text.with_suffix('.prof')}")


if __name__ == "__main__":
    main()
