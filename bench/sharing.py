"""Issue 20, item 5 on the real broker: members sharing a key with another client.

    .venv/bin/python -m bench.sharing [--members 1,2] [--seconds 150] [--topic on,off] [--code DIR]

The sandbox (its own process) enforces Loop's 300/min with a bucket of one second; another client
(``bench.run.other_client``) spends half of it evenly from before the connector starts. Then
``members`` connector processes of one group start on a backlog of 4,000 distinct orders (4
partitions), with the pace topic (``<topic>.pace``, compacted) created or not (``--topic off``: each
member paces on its own 429s). Measured from the connector's first request, over the first 30 s,
90 s and ``--seconds``: its 429s per accepted request and its accepted requests over what the other
client left (5/s times the time, less what the other client got accepted); the ``api_outage`` lines
the members logged; the cuts they made and followed (``connector_pace_cuts_total``).

``--code DIR`` runs the connector processes from another checkout (the code before the change, say),
with this one's sandbox and client. Figures are wall-clock on a shared machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.run import (
    ROOT,
    broker,
    events,
    is_other,
    requests_log,
    sandbox,
    start_connector,
    stop,
    topic_with,
)

WINDOWS = (30.0, 90.0)


async def _pace_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


def _cuts(port: int) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("connector_pace_cuts_total{"):
            origin = line.split('origin="', 1)[1].split('"', 1)[0]
            out[origin] = float(line.rsplit(" ", 1)[1])
    return out


def measure(bootstrap: str, members: int, seconds: float, topic_on: bool, code: str | None) -> dict[str, Any]:
    """One run; returns its figures."""
    topic = asyncio.run(topic_with(bootstrap, f"bench-share-{time.time_ns()}", events(4_000, 4_000)))
    if topic_on:
        asyncio.run(_pace_topic(bootstrap, f"{topic}.pace"))
    logs = [Path(f"/tmp/bench-share-{os.getpid()}-{n}.log") for n in range(members)]
    with sandbox(300) as url:
        stranger = subprocess.Popen(  # in a process of its own, as another integration would be
            [sys.executable, "-c", _STRANGER, url, str(seconds + 20)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        time.sleep(3.0)
        handles = [log.open("wb") for log in logs]
        before, here = os.environ.get("PYTHONPATH"), os.getcwd()
        if code:  # python -m puts the working directory first on the path
            os.environ["PYTHONPATH"] = code
            os.chdir(code)
        try:
            started = [
                start_connector(
                    bootstrap, topic, url, handle, LOG_LEVEL="INFO", SINK__RATE_LIMIT_PER_SECOND=5
                )
                for handle in handles
            ]
        finally:
            os.chdir(here)
            if before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = before
        deadline = time.monotonic() + seconds + 15
        while time.monotonic() < deadline:
            time.sleep(1.0)
        cuts = [_cuts(port) for _, port in started]
        log = requests_log(url)
        for proc, _ in started:
            stop(proc)
        stranger.wait(60)
        for handle in handles:
            handle.close()
    ours = [r for r in log if not is_other(r)]
    theirs = [r for r in log if is_other(r)]
    t0 = min(r["ts"] for r in ours)
    figures: dict[str, Any] = {"members": members, "topic": topic_on}
    for window in (*WINDOWS, seconds):
        mine = [r for r in ours if r["ts"] < t0 + window]
        other_ok = sum(1 for r in theirs if t0 <= r["ts"] < t0 + window and r["status"] == 200)
        accepted = sum(1 for r in mine if r["status"] == 200)
        limited = sum(1 for r in mine if r["status"] == 429)
        figures[f"429_{window:g}"] = limited / max(1, accepted)
        figures[f"left_{window:g}"] = accepted / max(1.0, 5.0 * window - other_ok)
    figures["outage_lines"] = sum(
        1 for path in logs for line in path.read_text(errors="replace").splitlines() if '"api_outage"' in line
    )
    figures["cuts_made"] = sum(c.get("429", 0.0) for c in cuts)
    figures["cuts_followed"] = sum(c.get("fleet", 0.0) for c in cuts)
    if os.environ.get("BENCH_KEEP"):  # for a closer look: the requests and the members' logs stay
        Path(f"/tmp/bench-share-{os.getpid()}-requests.json").write_text(json.dumps(log))
    else:
        for path in logs:
            path.unlink(missing_ok=True)
    return figures


_STRANGER = """
import asyncio, sys
from bench.run import other_client
asyncio.run(other_client(sys.argv[1], 2.5, float(sys.argv[2])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", default="1,2")
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--topic", default="on,off", help="with the pace topic (on), without (off)")
    parser.add_argument("--code", default=None, help="run the connector processes from this checkout")
    args = parser.parse_args()
    with broker() as bootstrap:
        load = os.getloadavg()
        print(
            f"machine: {platform.node()} {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}, "
            f"Python {platform.python_version()}; code: {args.code or 'this checkout'}",
            flush=True,
        )
        print(f"{'members':>7} {'topic':>5}  {'429/accepted 30 s / 90 s / all':>32}  {'of what is left':>22}  "
              f"{'api_outage':>10}  {'cuts made/followed':>18}", flush=True)  # fmt: skip
        for members in (int(m) for m in args.members.split(",")):
            for topic_on in (t == "on" for t in args.topic.split(",")):
                f = measure(bootstrap, members, args.seconds, topic_on, args.code)
                rates = " / ".join(f"{f[f'429_{w:g}']:.1%}" for w in (*WINDOWS, args.seconds))
                left = " / ".join(f"{f[f'left_{w:g}']:.0%}" for w in (*WINDOWS, args.seconds))
                print(f"{members:>7} {'on' if topic_on else 'off':>5}  {rates:>32}  {left:>22}  "
                      f"{f['outage_lines']:>10}  {f['cuts_made']:>8.0f}/{f['cuts_followed']:<9.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
