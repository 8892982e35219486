"""Many shops in one deployment, on the real broker against a multi-tenant sandbox: each tenant ends
at its own latest state at its own budget, and one tenant's outage or revoked key stops only it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from connector.config import Settings, TenantsSettings
from connector.samples import make_stream
from connector.sandbox import Sandbox
from connector.tenants import listing
from tests.helpers import create_topics, end_offsets, produce, read_topic, running, settings_for, wait_until
from tests.integration.test_invariants import busiest_in
from tests.procs import ConnectorProcess, connector_env, sent_by_tenant, wait_for_log

pytestmark = pytest.mark.integration


def _tenants_file(path: Path, tenants: dict[str, Sandbox], keys: dict[str, str], rate: float) -> None:
    lines = []
    for name, box in tenants.items():
        lines += [f"[{name}]", 'kind = "loop"', f'base_url = "{box.url}"', f'api_key = "{keys[name]}"']
        lines += [f"rate_limit_per_second = {rate}", ""]
    path.write_text("\n".join(lines))
    stat = path.stat()  # a rewrite within the file system's mtime granularity still counts as a change
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _events(
    names: list[str], per_tenant: int, orders: int
) -> tuple[list[tuple[bytes, bytes | None]], dict[str, dict[str, dict[str, object]]]]:
    """Each tenant's stream, its events naming the tenant in ``shop``, interleaved."""
    streams = {n: make_stream(per_tenant, orders, seed=i, prefix=n) for i, n in enumerate(names)}
    events: list[tuple[bytes, bytes | None]] = []
    for i in range(per_tenant):
        for name in names:
            key, value = streams[name].events[i]
            assert value is not None
            events.append((key, json.dumps({**json.loads(value), "shop": name}).encode()))
    return events, {n: s.latest for n, s in streams.items()}


def _with_tenants(settings: Settings, path: Path) -> Settings:
    tenants = TenantsSettings(path=str(path), route="field:shop", reload_seconds=0.3)
    return settings.model_copy(update={"tenants": tenants})


def _busiest_second(box: Sandbox) -> int:
    return max(Counter(int(r.ts) for r in box.store.requests).values(), default=0)


async def test_every_tenant_ends_at_its_latest_state_within_its_budget(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """8 Loop accounts in one topic of 4 partitions, routed by the envelope's ``shop``: each ends at
    the latest state of each of its orders, never above its budget in any second, never a 429; an
    event for a shop not served is dead-lettered with stage ``route``, naming the tenant."""
    names = [f"shop{i}" for i in range(8)]
    keys = {n: f"key-{n}" for n in names}
    boxes = {n: Sandbox(api_key=keys[n], rate_per_minute=600) for n in names}
    events, latest = _events(names, 150, 30)
    ghost = (b"ghost-1", json.dumps({**json.loads(events[0][1] or b"{}"), "shop": "ghost"}).encode())
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, [*events, ghost])
    path = tmp_path / "tenants.toml"
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        _tenants_file(path, boxes, keys, rate=10.0)
        settings = _with_tenants(settings_for(kafka_bootstrap, topic_name, root.url), path)
        async with running(settings):
            await wait_until(lambda: all(boxes[n].holds(latest[n]) for n in names), timeout=90)
            dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1, timeout=30)
        assert root.store.requests == [], "nothing goes to the single-tenant address"
    for name in names:
        box = boxes[name]
        assert box.holds(latest[name])
        assert len(box.store.orders) == 30, f"{name} holds only its own orders"
        assert {r.status for r in box.store.requests} == {200}, f"{name}: no 429 nor error"
        assert _busiest_second(box) <= 10, f"{name} above its budget of 10/s"
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["__connector.stage"] == b"route"
    assert b"tenant 'ghost' is not served" in headers["__connect.errors.exception.message"]


async def test_one_tenant_down_and_another_revoked_stop_only_themselves(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """During a backlog for four shops, one shop's API is down (503) and another's key is refused
    (401): the two healthy shops reach their latest state while both are still failing; once the
    outage ends and the new key is written to the tenants file (read again without a restart), the
    failing shops catch up. Nothing is dead-lettered and nothing is lost."""
    names = ["down", "revoked", "ok1", "ok2"]
    keys = {n: f"key-{n}" for n in names}
    boxes = {n: Sandbox(api_key=keys[n], rate_per_minute=1200) for n in names}
    boxes["down"].faults.outage_status = 503
    boxes["down"].faults.outage_until = time.time() + 3600
    events, latest = _events(names, 200, 40)
    await create_topics(kafka_bootstrap, {topic_name: 3, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    path = tmp_path / "tenants.toml"
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        _tenants_file(path, boxes, {**keys, "revoked": "an-old-key"}, rate=20.0)
        settings = _with_tenants(
            settings_for(kafka_bootstrap, topic_name, root.url, probe_interval_seconds=0.5), path
        )
        async with running(settings):
            await wait_until(
                lambda: boxes["ok1"].holds(latest["ok1"]) and boxes["ok2"].holds(latest["ok2"]), 60
            )
            assert not boxes["down"].store.orders, "the shop that is down holds nothing yet"
            assert not boxes["revoked"].store.orders, "the shop whose key is refused holds nothing yet"
            assert {r.status for r in boxes["revoked"].store.requests} == {401}
            boxes["down"].faults.outage_until = 0.0
            _tenants_file(path, boxes, keys, rate=20.0)
            await wait_until(lambda: all(boxes[n].holds(latest[n]) for n in names), timeout=60)
    dlq = await end_offsets(kafka_bootstrap, f"{topic_name}.dlq")
    assert sum(dlq.values()) == 0, "nothing dead-lettered for the failing shops"
    for name in ("ok1", "ok2"):
        assert {r.status for r in boxes[name].store.requests} == {200}


async def test_two_hundred_tenants_on_three_processes_each_end_exact_within_budget(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """200 Loop accounts at 5 requests a second each, 3 connector processes on 6 partitions, a mixed
    backlog (8 orders a tenant, several events an order, duplicates): once every member has stopped,
    each tenant holds the latest state of each of its orders, and no tenant's busiest second, as its
    requests left the members, is above its budget; no 429 anywhere."""
    names = [f"t{i:03d}" for i in range(200)]
    keys = {n: f"key-{n}" for n in names}
    boxes = {n: Sandbox(api_key=keys[n], rate_per_minute=300) for n in names}
    events, latest = _events(names, 30, 8)
    await create_topics(kafka_bootstrap, {topic_name: 6, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, events)
    path = tmp_path / "tenants.toml"
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        _tenants_file(path, boxes, keys, rate=5.0)
        env = connector_env(kafka_bootstrap, topic_name, root.url, TENANTS__PATH=str(path), LOG_LEVEL="DEBUG")
        procs = [ConnectorProcess(env, tmp_path / f"member-{n}.log").start() for n in range(3)]
        try:
            for proc in procs:
                await asyncio.to_thread(wait_for_log, proc, "partitions_assigned", 60)
            await wait_until(lambda: all(boxes[n].holds(latest[n]) for n in names), timeout=240, interval=0.5)
            for proc in procs:
                proc.terminate()
            for proc in procs:
                assert await asyncio.to_thread(proc.wait, 40) == 0
        finally:
            for proc in procs:
                proc.stop()
        sent = sent_by_tenant(procs)
    for name in names:
        box = boxes[name]
        assert box.holds(latest[name]), f"{name}: judged again once every member stopped"
        assert len(box.store.orders) == 8
        assert {r.status for r in box.store.requests} == {200}, f"{name}: no 429 nor error"
        assert len(sent.get(name, [])) == len(box.store.requests), f"{name}: every request paced"
        assert busiest_in(sent[name], 1.0) <= 5, f"{name}: above its budget of 5/s"
    assert root.store.requests == []


async def test_a_tenant_that_cannot_be_served_is_parked_and_holds_back_no_one(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """A backlog for four shops, then a steady trickle for 60 s during which one shop's API is down
    (503) and another's key is refused (401). The read-ahead bound (60 events) is smaller than what
    the two failing shops hold, so without parking reading would pause for every shop. Parked after
    ``tenants.park_after_seconds`` (3 s): the healthy shops stay in sync (their oldest unsynced event
    never older than 10 s, sampled every second of the trickle), every partition's commit reaches its
    log end while both still fail, and every healthy request stays within budget. Once the outage
    ends and the key is rotated, the parked shops are replayed and catch up. Judged after the
    connector stopped: every shop at its latest state, nothing dead-lettered, nothing lost."""
    names = ["down", "revoked", "ok1", "ok2"]
    keys = {n: f"key-{n}" for n in names}
    boxes = {n: Sandbox(api_key=keys[n], rate_per_minute=1200) for n in names}
    boxes["down"].faults.outage_status = 503
    boxes["down"].faults.outage_until = time.time() + 3600
    streams = {n: make_stream(260, 40, seed=i, prefix=n) for i, n in enumerate(names)}

    def shop_events(lo: int, hi: int) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for i in range(lo, hi):
            for name in names:
                key, value = streams[name].events[i]
                assert value is not None
                out.append((key, json.dumps({**json.loads(value), "shop": name}).encode()))
        return out

    latest = {n: s.latest for n, s in streams.items()}
    parked_topic = f"{topic_name}.parked"
    await create_topics(kafka_bootstrap, {topic_name: 3, f"{topic_name}.dlq": 1, parked_topic: 3})
    await produce(kafka_bootstrap, topic_name, shop_events(0, 200))
    path = tmp_path / "tenants.toml"
    ages: list[float] = []
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        _tenants_file(path, boxes, {**keys, "revoked": "an-old-key"}, rate=20.0)
        settings = _with_tenants(
            settings_for(
                kafka_bootstrap,
                topic_name,
                root.url,
                kafka={"max_unresolved_events": 60},
                probe_interval_seconds=0.5,
            ),
            path,
        )
        settings.tenants.park_after_seconds = 3.0
        async with running(settings) as metrics:
            for second in range(60):
                await produce(kafka_bootstrap, topic_name, shop_events(200 + second, 201 + second))
                await asyncio.sleep(1.0)
                if second >= 10:  # the backlog's own age is behind us
                    ages.extend(
                        metrics.tenants.tenant_oldest_unsynced.labels(n)._value.get() for n in ("ok1", "ok2")
                    )
            await wait_until(
                lambda: boxes["ok1"].holds(latest["ok1"]) and boxes["ok2"].holds(latest["ok2"]), 20
            )
            end = await end_offsets(kafka_bootstrap, topic_name)
            group = settings.kafka.group_id
            await wait_until(
                lambda: _committed_to(kafka_bootstrap, group, topic_name, end), timeout=20, interval=0.3
            )
            assert metrics.tenants.tenant_parked.labels("down")._value.get() == 1
            assert metrics.tenants.tenant_parked.labels("revoked")._value.get() == 1
            url = f"http://127.0.0.1:{settings.metrics.port}"
            rows, note = await asyncio.to_thread(listing, settings, url)  # `connector tenants`
            shown = {str(r["tenant"]): (r["parked"], r["circuit"]) for r in rows}
            assert "configuration only" not in note, "connector tenants reads the member's live state"
            assert shown["down"][0] is True
            assert shown["revoked"][0] is True
            assert shown["down"][1] in ("open", "half_open")
            assert shown["ok1"] == (False, "closed")
            assert shown["ok2"] == (False, "closed")
            assert not boxes["down"].store.orders, "the shop that is down holds nothing yet"
            assert not boxes["revoked"].store.orders, "the shop whose key is refused holds nothing yet"
            boxes["down"].faults.outage_until = 0.0
            _tenants_file(path, boxes, keys, rate=20.0)
            await wait_until(lambda: all(boxes[n].holds(latest[n]) for n in names), timeout=90)
    for name in names:
        assert boxes[name].holds(latest[name]), f"{name}: judged again once the connector stopped"
    dlq = await end_offsets(kafka_bootstrap, f"{topic_name}.dlq")
    assert sum(dlq.values()) == 0, "nothing dead-lettered for the failing shops"
    parked = await end_offsets(kafka_bootstrap, parked_topic)
    assert sum(parked.values()) >= 2 * 40, "the failing shops' orders went through the parking topic"
    assert max(ages) <= 10.0, f"a healthy shop's oldest unsynced event reached {max(ages):.1f}s"
    for name in ("ok1", "ok2"):
        assert {r.status for r in boxes[name].store.requests} == {200}
        assert _busiest_second(boxes[name]) <= 21, f"{name} above its budget of 20/s (1 of jitter)"


async def _committed_to(bootstrap: str, group: str, topic: str, end: dict[int, int]) -> bool:
    from tests.helpers import committed_offsets

    try:
        done = await committed_offsets(bootstrap, group, topic)
    except Exception:
        return False
    return all(done.get(p, -1) >= offset for p, offset in end.items())


async def test_parked_shops_survive_kill_9_and_a_rebalance(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """Two connector processes, four shops, one shop's API down: once it is parked, one process is
    killed with SIGKILL (parked events appended, some not yet committed past) and a third joins. The
    healthy shops reach their latest state while the shop is still down; after it recovers, it is
    replayed from the parking topic by whichever member owns each partition. Judged once every member
    stopped: every shop at its latest state, nothing dead-lettered, no 429, both exits 0."""
    names = ["down", "ok1", "ok2", "ok3"]
    keys = {n: f"key-{n}" for n in names}
    boxes = {n: Sandbox(api_key=keys[n], rate_per_minute=1200) for n in names}
    boxes["down"].faults.outage_status = 503
    boxes["down"].faults.outage_until = time.time() + 3600
    events, latest = _events(names, 120, 30)
    parked_topic = f"{topic_name}.parked"
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1, parked_topic: 4})
    path = tmp_path / "tenants.toml"
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        _tenants_file(path, boxes, keys, rate=20.0)
        env = connector_env(
            kafka_bootstrap,
            topic_name,
            root.url,
            TENANTS__PATH=str(path),
            TENANTS__PARK_AFTER_SECONDS=2,
            SINK__PROBE_INTERVAL_SECONDS=0.5,
        )
        procs = [ConnectorProcess(env, tmp_path / f"member-{n}.log") for n in range(3)]
        try:
            for proc in procs[:2]:
                proc.start()
            for proc in procs[:2]:
                await asyncio.to_thread(wait_for_log, proc, "partitions_assigned", 60)
            await produce(kafka_bootstrap, topic_name, events[: len(events) // 2])
            await asyncio.to_thread(wait_for_log, procs[0], "tenant_parked", 60)
            await produce(kafka_bootstrap, topic_name, events[len(events) // 2 :])
            await asyncio.sleep(1.0)
            await asyncio.to_thread(procs[0].kill9)
            procs[2].start()
            await wait_until(lambda: all(boxes[n].holds(latest[n]) for n in names[1:]), timeout=90)
            assert not boxes["down"].store.orders, "the shop that is down holds nothing yet"
            boxes["down"].faults.outage_until = 0.0
            await wait_until(lambda: boxes["down"].holds(latest["down"]), timeout=120, interval=0.5)
            for proc in procs[1:]:
                proc.terminate()
            for proc in procs[1:]:
                assert await asyncio.to_thread(proc.wait, 40) == 0
        finally:
            for proc in procs:
                proc.stop()
    for name in names:
        assert boxes[name].holds(latest[name]), f"{name}: judged again once every member stopped"
        assert 429 not in {r.status for r in boxes[name].store.requests}
    dlq = await end_offsets(kafka_bootstrap, f"{topic_name}.dlq")
    assert sum(dlq.values()) == 0, "nothing dead-lettered for the shop that was down"
    parked = await end_offsets(kafka_bootstrap, parked_topic)
    assert sum(parked.values()) > 0, "the shop that was down went through the parking topic"


async def test_a_shop_renamed_while_parked_keeps_what_it_parked_across_a_restart(
    kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    """A shop whose API is down is parked as ``down``, then renamed ``down-eu`` (``aliases =
    ["down"]``) in one edit while still parked; the member that parked it goes on serving it, and
    events naming the new name follow the old ones to the parking topic. That member is stopped (its
    commits say ``down`` is parked) and a new one, which only knows ``down-eu``, takes over: it reads
    the shop parked under its new name, and once the API is back the shop holds the latest state of
    every order. Nothing is dead-lettered; both exits 0."""
    names = ["down", "ok"]
    keys = {n: f"key-{n}" for n in names}
    boxes = {n: Sandbox(api_key=keys[n], rate_per_minute=1200) for n in names}
    boxes["down"].faults.outage_status = 503
    boxes["down"].faults.outage_until = time.time() + 3600
    events, latest = _events(names, 80, 20)
    half = len(events) // 2
    renamed = [
        (key, value.replace(b'"shop": "down"', b'"shop": "down-eu"') if value else value)
        for key, value in events[half:]
    ]
    assert sum(b'"down-eu"' in (v or b"") for _, v in renamed) == 40
    parked_topic = f"{topic_name}.parked"
    await create_topics(kafka_bootstrap, {topic_name: 2, f"{topic_name}.dlq": 1, parked_topic: 2})
    path = tmp_path / "tenants.toml"
    async with Sandbox(api_key="not-a-tenant", tenants=boxes) as root:
        _tenants_file(path, boxes, keys, rate=20.0)
        env = connector_env(
            kafka_bootstrap,
            topic_name,
            root.url,
            TENANTS__PATH=str(path),
            TENANTS__PARK_AFTER_SECONDS=2,
            TENANTS__RELOAD_SECONDS=0.3,
            SINK__PROBE_INTERVAL_SECONDS=0.5,
        )
        first = ConnectorProcess(env, tmp_path / "first.log")
        second = ConnectorProcess(env, tmp_path / "second.log")
        try:
            first.start()
            await asyncio.to_thread(wait_for_log, first, "partitions_assigned", 60)
            await produce(kafka_bootstrap, topic_name, events[:half])
            await asyncio.to_thread(wait_for_log, first, "tenant_parked", 60)
            lines = [
                "[down-eu]", 'kind = "loop"', f'base_url = "{boxes["down"].url}"', 'api_key = "key-down"',
                'aliases = ["down"]', "rate_limit_per_second = 20",
                "[ok]", 'kind = "loop"', f'base_url = "{boxes["ok"].url}"', 'api_key = "key-ok"',
                "rate_limit_per_second = 20",
            ]  # fmt: skip
            path.write_text("\n".join(lines) + "\n")
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            await asyncio.to_thread(wait_for_log, first, "tenant_renamed", 30)
            await produce(kafka_bootstrap, topic_name, renamed)
            await wait_until(lambda: boxes["ok"].holds(latest["ok"]), timeout=60)
            await asyncio.sleep(2.0)  # the parked shop's new events reach the parking topic
            first.terminate()
            assert await asyncio.to_thread(first.wait, 40) == 0
            second.start()
            await asyncio.to_thread(wait_for_log, second, "partition_parked_tenants", 60)
            assert not boxes["down"].store.orders, "the shop that is down holds nothing yet"
            boxes["down"].faults.outage_until = 0.0
            await wait_until(lambda: boxes["down"].holds(latest["down"]), timeout=90, interval=0.5)
            second.terminate()
            assert await asyncio.to_thread(second.wait, 40) == 0
        finally:
            first.stop()
            second.stop()
    parked_as = [json.loads(line) for line in second.log_lines() if "partition_parked_tenants" in line]
    assert parked_as, "the new member read the shop as parked"
    assert all(entry["tenants"] == ["down-eu"] for entry in parked_as), parked_as
    dlq = await end_offsets(kafka_bootstrap, f"{topic_name}.dlq")
    assert sum(dlq.values()) == 0, "nothing dead-lettered: the rename kept what was parked"
    parked = await end_offsets(kafka_bootstrap, parked_topic)
    assert sum(parked.values()) >= 20, "the shop's orders went through the parking topic"
