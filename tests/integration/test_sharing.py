"""One budget per key across the fleet, on the real broker (issue 20, item 5): two connector processes
and another client spending half of one key, against the sandbox in a process of its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connector.localkafka import free_port
from connector.samples import make_stream
from tests.helpers import create_topics, produce
from tests.procs import ConnectorProcess, SandboxProcess, connector_env

pytestmark = pytest.mark.integration

KEY = "test-key"
OTHER = "/api/2026-07/"
"""The other client's path: ``v1`` (the connector's) is an alias of it, so the sandbox's log tells the
two apart even for a refused request, whose body (and ``external_id``) the sandbox never reads."""


async def _other_client(url: str, rate: float, until: float) -> None:
    """Another integration of the merchant: ``rate`` upserts a second, evenly, on the same key."""
    async with httpx.AsyncClient(
        base_url=f"{url}{OTHER.rstrip('/')}", headers={"X-Authorization": KEY}
    ) as client:
        i = 0
        while time.time() < until:
            i += 1
            await client.put("/orders", json={"external_id": f"other-{i}", "status": "active"})
            await asyncio.sleep(1 / rate)


def _pace_cuts(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        line.split('origin="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("connector_pace_cuts_total{")
    }


async def test_two_members_sharing_a_key_with_another_client_pace_as_one(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """Found on the real broker (issue 20): with two members serving a key another client spends half
    of, the member the 429s fell on slowed while the other kept its whole share (7.5 to 10.3 429s per
    100 accepted calls), and the 429s opened the outage circuit ("26 of the last 50 calls failed;
    last: ... answered 429"). Now, over the first 90 s from the connector's first request: no
    ``api_outage`` line, the members follow each other's cuts through the pace topic, at most 6 429s
    per 100 accepted calls (the goal is 3; judged with margin, the machine is shared) and at least half
    of what the other client leaves: a floor that says the fleet does not starve itself, not the
    figure (goal 85%), which is a benchmark's (``bench/sharing.py``, ``docs/benchmarks.md``): on a
    loaded machine (load average ~24) a correct run measured 64%."""
    stream = make_stream(2_000, 2_000, seed=20)
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"{topic_name}.pace", 1, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    await produce(kafka_bootstrap, topic_name, stream.events)
    ports = [free_port(), free_port()]
    with SandboxProcess(tmp_path / "sandbox.log", api_key=KEY, rate_per_minute=300) as sandbox:
        other = asyncio.create_task(_other_client(sandbox.url, 2.5, time.time() + 110))
        await asyncio.sleep(3.0)  # the other client is there first
        procs = [
            ConnectorProcess(
                connector_env(
                    kafka_bootstrap,
                    topic_name,
                    sandbox.url,
                    SINK__API_KEY=KEY,
                    SINK__RATE_LIMIT_PER_SECOND=5,
                    METRICS__PORT=port,
                ),
                tmp_path / f"member-{n}.log",
            ).start()
            for n, port in enumerate(ports)
        ]
        try:
            await asyncio.sleep(100)
            cuts = [await asyncio.to_thread(_pace_cuts, port) for port in ports]
            log = await sandbox.requests()
        finally:
            for proc in procs:
                proc.stop()
            other.cancel()
    ours = [r for r in log if not r["path"].startswith(OTHER)]
    theirs = [r for r in log if r["path"].startswith(OTHER)]
    t0 = min(r["ts"] for r in ours)
    accepted = sum(1 for r in ours if r["ts"] < t0 + 90 and r["status"] == 200)
    limited = sum(1 for r in ours if r["ts"] < t0 + 90 and r["status"] == 429)
    left = 5.0 * 90 - sum(1 for r in theirs if t0 <= r["ts"] < t0 + 90 and r["status"] == 200)
    outages = [line for proc in procs for line in proc.log_lines() if '"api_outage"' in line]
    print(f"\n429 per accepted {limited}/{accepted} = {limited / accepted:.1%}, of what is left "
          f"{accepted / left:.0%}, cuts {cuts}")  # fmt: skip
    assert outages == [], "429s never open the circuit"
    assert sum(c.get("429", 0) for c in cuts) >= 1, "a 429 cut the pace"
    assert sum(c.get("fleet", 0) for c in cuts) >= 1, "a member followed another's cut"
    assert limited / accepted <= 0.06
    assert accepted / left >= 0.50
