"""The invariants (the README's "Guarantees") under load, crashes, rebalances and shutdown, on the real broker.

Each scenario runs real connector processes (or the in-process app where no process boundary matters)
against the sandbox, and checks the sandbox's final state against the latest event of every key.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connector.samples import make_stream
from connector.sandbox import Faults, Sandbox
from tests.helpers import committed_offsets, create_topics, produce, running, settings_for, wait_until
from tests.procs import ConnectorProcess, connector_env, sent_times, wait_for_log

pytestmark = pytest.mark.integration


def written(sandbox: Sandbox) -> list[Any]:
    """The successful writes (not the read-back audits' GETs, which are on by default)."""
    return [r for r in sandbox.store.requests if r.status == 200 and r.method != "GET"]


def duplicate_calls(sandbox: Sandbox) -> int:
    """Successful calls that carried a state the API had already been sent successfully."""
    seen = Counter((r.external_id, r.updated_at) for r in written(sandbox))
    return sum(n - 1 for n in seen.values())


def busiest_window(procs: list[ConnectorProcess], seconds: float = 1.0) -> list[tuple[float, int, str]]:
    """The requests in the busiest window of ``seconds`` (when each left, which member, its log line):
    printed when the fleet's budget check fails, to tell a tick used twice from a tick used late."""
    sends = sorted(
        (entry["tick"] + entry["late_ms"] / 1000, n, line)
        for n, proc in enumerate(procs)
        for line in proc.log_lines()
        if '"api_request_tick"' in line and (entry := json.loads(line))
    )
    best: list[tuple[float, int, str]] = []
    start = 0
    for end, sent in enumerate(sends):
        while sent[0] - sends[start][0] >= seconds:
            start += 1
        if end - start + 1 > len(best):
            best = sends[start : end + 1]
    return best


def max_in_window(sandbox: Sandbox, seconds: float) -> int:
    return busiest_in([r.ts for r in sandbox.store.requests], seconds)


def busiest_in(times: list[float], seconds: float) -> int:
    """Most of ``times`` in any window of ``seconds``."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_backlog_costs_one_call_per_order_at_exactly_the_budget(
    kafka_bootstrap: str, topic_name: str
) -> None:
    """10,000 events over 500 orders with the API at 1,200 requests/minute: at most 550 calls (one per
    order, and a few sent before their newer events were read), the exact final state, not one 429.
    (The same at Loop's own 300/minute only takes longer: `bench/run.py`, figures B and C.)"""
    stream = make_stream(10_000, 500, seed=3, duplicate_rate=0.05)
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    async with Sandbox(api_key="test-key", rate_per_minute=1_200) as sandbox:
        settings = settings_for(kafka_bootstrap, topic_name, sandbox.url, rate_limit_per_second=20.0)
        started = time.monotonic()
        async with running(settings):
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=300, interval=1.0)
        took = time.monotonic() - started
        assert sandbox.holds(stream.latest), "judged again once the connector stopped"
        calls = len(sandbox.store.requests)
        statuses = Counter(r.status for r in sandbox.store.requests)
        print(
            f"\nbacklog: {calls} calls for 10000 events / 500 orders in {took:.0f}s; statuses {dict(statuses)}"
        )
        assert calls <= 550
        assert statuses == {200: calls}
        assert len(sandbox.store.orders) == 500


async def test_kill_9_at_random_points_loses_no_update(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """kill -9 of the connector three times mid-stream, then a restart: every order ends at its latest
    event. Duplicate calls (states sent twice because their offsets were not yet committed) are reported."""
    stream = make_stream(3_000, 300, seed=5)
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    rng = random.Random(17)
    async with Sandbox(api_key="test-key", rate_per_minute=12_000, faults=Faults(latency_ms=20)) as sandbox:
        env = connector_env(kafka_bootstrap, topic_name, sandbox.url, SINK__RATE_LIMIT_PER_SECOND=60)

        async def feed() -> None:
            for i in range(0, len(stream.events), 300):
                await produce(kafka_bootstrap, topic_name, stream.events[i : i + 300])
                await asyncio.sleep(0.5)

        feeding = asyncio.create_task(feed())
        procs = []
        try:
            for n in range(3):
                proc = ConnectorProcess(env, tmp_path / f"crash-{n}.log").start()
                procs.append(proc)
                await asyncio.sleep(rng.uniform(2.0, 4.0))
                await asyncio.to_thread(proc.kill9)
            await feeding
            final = ConnectorProcess(env, tmp_path / "final.log").start()
            procs.append(final)
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=180, interval=0.5)
            final.terminate()
            assert await asyncio.to_thread(final.wait, 30) == 0
        finally:
            for proc in procs:
                proc.stop()
        assert sandbox.holds(stream.latest), "judged again once every process stopped"
        calls = len(written(sandbox))
        duplicates = duplicate_calls(sandbox)
        print(
            f"\nkill -9 x3: {calls} successful calls for {len(stream.events)} events / 300 orders; "
            f"duplicate calls {duplicates}"
        )
        assert len(sandbox.store.orders) == 300
        # A crash re-sends only states delivered since the last commit (0.2 s apart here), and each
        # order at most once per crash: far fewer than one per order.
        assert duplicates <= 3 * 60


async def test_rebalance_with_three_processes_keeps_state_exact_and_fleet_within_budget(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """Three connectors on six partitions, one stopped and one started mid-stream: final state exact,
    and the fleet never draws a 429 from a sandbox holding it to 600 requests/minute."""
    stream = make_stream(360, 60, seed=9)
    await create_topics(kafka_bootstrap, {topic_name: 6, f"{topic_name}.dlq": 1})
    async with Sandbox(api_key="test-key", rate_per_minute=600) as sandbox:
        env = connector_env(
            kafka_bootstrap, topic_name, sandbox.url, SINK__RATE_LIMIT_PER_SECOND=10, LOG_LEVEL="DEBUG"
        )
        procs = [ConnectorProcess(env, tmp_path / f"member-{n}.log").start() for n in range(3)]
        try:
            for proc in procs:
                await asyncio.to_thread(wait_for_log, proc, "partitions_assigned", 60)
            for i in range(0, 360, 60):
                await produce(kafka_bootstrap, topic_name, stream.events[i : i + 60])
                await asyncio.sleep(1.5)
                if i == 120:
                    procs[1].terminate()
                    assert await asyncio.to_thread(procs[1].wait, 40) == 0
                if i == 180:
                    procs.append(ConnectorProcess(env, tmp_path / "member-3.log").start())
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=240, interval=0.5)
            for proc in procs:
                if proc.proc and proc.proc.poll() is None:
                    proc.terminate()
                    assert await asyncio.to_thread(proc.wait, 40) == 0
        finally:
            for proc in procs:
                proc.terminate() if proc.proc and proc.proc.poll() is None else None
            for proc in procs:
                if proc.proc and proc.proc.poll() is None:
                    assert await asyncio.to_thread(proc.wait, 40) == 0
        assert sandbox.holds(stream.latest), "judged again once every process stopped"
        statuses = Counter(r.status for r in sandbox.store.requests)
        sent = sent_times(procs)
        busiest_sent = busiest_in(sent, 1.0)
        print(
            f"\nrebalance: statuses {dict(statuses)}; busiest second {busiest_sent} sent "
            f"({max_in_window(sandbox, 1.0)} arrived), busiest minute {max_in_window(sandbox, 60.0)} arrived"
        )
        assert len(sent) == len(sandbox.store.requests)  # every request the sandbox saw was paced
        if busiest_sent > 10:
            print("\n".join(f"{at:.4f} member {n}: {line}" for at, n, line in busiest_window(procs)))
        assert busiest_sent <= 10  # when the requests left the three processes, across the rebalances
        assert 429 not in statuses
        assert max_in_window(sandbox, 60.0) <= 600
        assert len(sandbox.store.orders) == 60


async def test_sigterm_drains_commits_what_was_delivered_and_restart_finishes(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: exit 0 within the grace period; every delivered event is under the committed
    offsets (nothing delivered will be sent again); a restart delivers the rest."""
    stream = make_stream(400, 400, seed=13)
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    placed = await produce(kafka_bootstrap, topic_name, stream.events)
    where = {
        (k.decode(), v and __import__("json").loads(v)["order"]["updated_at"]): p
        for (k, v), p in zip(stream.events, placed, strict=True)
    }
    async with Sandbox(api_key="test-key", rate_per_minute=1_200) as sandbox:
        env = connector_env(kafka_bootstrap, topic_name, sandbox.url, SINK__RATE_LIMIT_PER_SECOND=20,
                            KAFKA__MAX_POLL_RECORDS=20, KAFKA__MAX_UNRESOLVED_EVENTS=40,
                            SHUTDOWN_GRACE_SECONDS=15)  # fmt: skip
        first = ConnectorProcess(env, tmp_path / "first.log").start()
        try:
            await wait_until(lambda: len(sandbox.store.requests) >= 100, timeout=60)
            first.terminate()
            started = time.monotonic()
            assert await asyncio.to_thread(first.wait, 25) == 0
            took = time.monotonic() - started
        finally:
            first.stop()
        assert took < 15
        committed = await committed_offsets(kafka_bootstrap, f"{topic_name}-group", topic_name)
        delivered = [where[(r.external_id, r.updated_at)] for r in written(sandbox)]
        assert delivered
        assert all(offset < committed.get(partition, 0) for partition, offset in delivered)
        calls_before = len(sandbox.store.requests)

        second = ConnectorProcess(env, tmp_path / "second.log").start()
        try:
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=120)
            second.terminate()
            assert await asyncio.to_thread(second.wait, 25) == 0
        finally:
            second.stop()
        assert sandbox.holds(stream.latest), "judged again once the process stopped"
        print(
            f"\nSIGTERM: drained in {took:.1f}s; {calls_before} calls before, "
            f"{len(sandbox.store.requests) - calls_before} after restart; duplicates {duplicate_calls(sandbox)}"
        )
        assert duplicate_calls(sandbox) == 0


async def test_second_signal_exits_at_once(kafka_bootstrap: str, topic_name: str, tmp_path: Path) -> None:
    """A second SIGTERM during the drain exits immediately, non-zero, committing nothing more."""
    stream = make_stream(200, 200, seed=21)
    await create_topics(kafka_bootstrap, {topic_name: 1, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, stream.events)
    async with Sandbox(api_key="test-key", rate_per_minute=60, burst=1) as sandbox:
        env = connector_env(kafka_bootstrap, topic_name, sandbox.url, SINK__RATE_LIMIT_PER_SECOND=1,
                            SHUTDOWN_GRACE_SECONDS=60)  # fmt: skip
        proc = ConnectorProcess(env, tmp_path / "p.log").start()
        try:
            await wait_until(lambda: len(sandbox.store.requests) >= 1, timeout=60)
            proc.terminate()
            await asyncio.to_thread(wait_for_log, proc, "draining", 10)
            started = time.monotonic()
            proc.terminate()
            code = await asyncio.to_thread(proc.wait, 10)
        finally:
            proc.stop()
        assert code == 128 + 15
        assert time.monotonic() - started < 5
