"""A rolling upgrade and a rollback on the real broker (issue 20): the previous release and this one
in one consumer group, members replaced one at a time, then the reverse.

The previous release is the commit named in ``previous_release.txt``, installed into a virtualenv of
its own by ``scripts/previous-release`` (``scripts/test`` builds it beforehand; this test skips, with
the script's reason, only when it cannot be built). Each member is a real ``connector run`` process.

The scenario, in one run per mode (one shop, or six shops routed by ``shop``) and direction
(``up-and-back``, from the previous release; ``UPGRADE_DIRECTIONS=up-and-back,back-and-up`` adds
the run that starts from this one):

- three members of the release it starts from, in one group, on six partitions; a steady stream of
  order events (several versions an order, duplicates, some deletes); the vendor (the sandbox)
  applies 5% of writes late: after the member's call timed out, within ``kafka.settle_seconds`` of it
  being sent;
- *up*: one shop's API is down (503) until it is parked (many shops; one shop: down for 6 s), then
  each member of the previous release in turn is replaced by one of this release: stopped (SIGTERM)
  then its replacement started, or, for the second, its replacement started first (the Deployment's
  ``maxSurge: 1``), the group settling after each; with many shops, the parked shop stays down
  through the mixed group (members of both releases park its events and take over partitions that
  name it parked) and recovers once the last member of the previous release is gone, so this release
  replays what both wrote; the group converges (every event committed, every order at its newest
  state);
- *back*: the same with the releases swapped and another shop parked, except that, rolling back to
  the previous release with many shops, the parked shop recovers and the roll starts once no
  partition's commit names a parked shop.

No shop comes back from parking while a member of the previous release is in the group, as the
README's Upgrading section asks: the previous release ends a replay after one empty read of a
parking partition, and a read right after a seek may come back empty, so a member of it that replays
can leave a parked event unsent (its defect, fixed in this release; CI caught it twice, once each
way, when the test let a shop recover in a mixed group).

The verdict comes after quiescence (every member stopped, every late write landed), from the
sandbox's log of the writes it applied: every order at its newest state, nothing dead-lettered,
every member exited 0, and no order ever written an older version after a newer one (by its
``updated_at``; a delete is its order's last event). A failure names the phase and the membership
change during which a write went backwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from connector.metadata import decode as read_metadata
from connector.samples import envelope, order_body
from connector.sandbox import Faults, Sandbox, Write
from tests.helpers import committed_offsets, create_topics, end_offsets, read_topic
from tests.procs import ConnectorProcess, connector_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE = ROOT / "scripts" / "previous-release"
MEMBERS = 3
PARTITIONS = 6
LATE_RATE = 0.05
LATE_SECONDS = 3.0  # a late write lands this long after it arrived: the member gave up after 2 s
SETTINGS = {  # names both releases know: an unknown setting is an error
    "SINK__TIMEOUT_SECONDS": 2,
    "SINK__SETTLE_SECONDS": 5,  # > LATE_SECONDS, with room for a loaded machine
    "SINK__PROBE_INTERVAL_SECONDS": 0.5,
    "SINK__BACKOFF_CAP_SECONDS": 2,
    "SINK__CIRCUIT_MIN_CALLS": 5,
    "SINK__CIRCUIT_WINDOW": 10,
    "SINK__RATE_LIMIT_PER_SECOND": 20,
    "KAFKA__REBALANCE_TIMEOUT_MS": 20000,
    "SHUTDOWN_GRACE_SECONDS": 10,
}
# "up-and-back" starts from the previous release (the default); "back-and-up" from this one.
DIRECTIONS = os.environ.get("UPGRADE_DIRECTIONS", "up-and-back").split(",")
MANY_SHOPS = {"TENANTS__ROUTE": "field:shop", "TENANTS__PARK_AFTER_SECONDS": 2, "TENANTS__RELOAD_SECONDS": 1}


@dataclass(frozen=True)
class Release:
    """How to start a member of one release."""

    name: str
    argv: list[str]


@pytest.fixture(scope="session")
def releases() -> dict[str, Release]:
    """``old``: the previous release's virtualenv (built now unless cached); ``new``: this checkout.
    Both run with ``python -P`` from the test's folder, so that neither imports a ``connector``
    package from the working directory."""
    built = subprocess.run(
        ["bash", str(PREVIOUS_RELEASE), "build"], capture_output=True, text=True, check=False, timeout=900
    )
    if built.returncode != 0:
        reason = (built.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the previous release could not be built (scripts/previous-release build: {reason})")
    python = built.stdout.strip().splitlines()[-1]
    commit = subprocess.run(
        ["bash", str(PREVIOUS_RELEASE), "commit"], capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "old": Release(f"previous release {commit}", [python, "-P", "-m", "connector", "run"]),
        "new": Release(
            f"this release ({head or 'working tree'})", [sys.executable, "-P", "-m", "connector", "run"]
        ),
    }


# -- the events ----------------------------------------------------------------------------------
class Orders:
    """A stream of order events over ``per_shop`` orders of each shop (``None``: one shop, events
    without ``shop``): new versions, duplicates (sent again as is) and deletes, each delete its
    order's last event (an ``order.deleted`` envelope naming the shop; with one shop, a tombstone)."""

    def __init__(self, shops: list[str] | None, per_shop: int, seed: int) -> None:
        self._rng = random.Random(seed)
        self.shops = shops
        self._names = shops or [""]
        self._live = {s: [f"{s or 'order'}-{i:03d}" for i in range(per_shop)] for s in self._names}
        self._version: dict[str, int] = {}
        self._last: dict[str, bytes] = {}
        self._turn = 0
        self.latest: dict[str, dict[str, dict[str, Any] | None]] = {
            s: {} for s in self._names
        }  # None: deleted

    def batch(self, size: int) -> list[tuple[bytes, bytes | None]]:
        """The next ``size`` events, the shops in turn."""
        return [self._next() for _ in range(size)]

    def _next(self) -> tuple[bytes, bytes | None]:
        shop = self._names[self._turn % len(self._names)]
        self._turn += 1
        live = self._live[shop]
        ext = self._rng.choice(live)
        roll = self._rng.random()
        if ext in self._last and roll < 0.05:
            return ext.encode(), self._last[ext]
        version = self._version.get(ext, 0) + 1
        self._version[ext] = version
        if version > 2 and roll < 0.07 and len(live) > 4:
            live.remove(ext)
            self.latest[shop][ext] = None
            if self.shops is None:
                return ext.encode(), None
            updated = order_body(ext, version)["updated_at"]
            gone = {"event_id": f"{ext}:{version}", "event_type": "order.deleted", "occurred_at": updated,
                    "order": {"external_id": ext, "updated_at": updated}, "shop": shop}  # fmt: skip
            return ext.encode(), json.dumps(gone).encode()
        body = order_body(ext, version)
        value = json.loads(envelope(body, version, "order.created" if version == 1 else "order.updated"))
        if self.shops is not None:
            value["shop"] = shop
        self._last[ext] = json.dumps(value).encode()
        self.latest[shop][ext] = body
        return ext.encode(), self._last[ext]


# -- the verdict ---------------------------------------------------------------------------------
@dataclass
class Timeline:
    """What the test did, when (wall clock): a write that went backwards is told with the step it
    happened in."""

    steps: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.steps.append((time.time(), what))

    def at(self, ts: float) -> str:
        during = [what for when, what in self.steps if when <= ts]
        return during[-1] if during else "before the first member started"


def _rank(write: Write) -> float:
    """Where a write stands among its order's versions: a delete is the order's last event."""
    if write.op == "delete":
        return math.inf
    if write.updated_at is None:
        return -math.inf
    return datetime.fromisoformat(write.updated_at).timestamp()


def backwards(shop: str, writes: list[Write], timeline: Timeline) -> list[str]:
    """Every write (in the order the vendor applied them) of an older version of its order than one
    written before it."""
    newest: dict[str, Write] = {}
    found = []
    for write in writes:
        if write.external_id is None:
            continue
        before = newest.get(write.external_id)
        if before is None or _rank(write) >= _rank(before):
            newest[write.external_id] = write
        else:
            found.append(
                f"{shop + '/' if shop else ''}{write.external_id}: {write.op} {write.updated_at} applied at "
                f"{write.ts:.3f} after {before.op} {before.updated_at or ''} (at {before.ts:.3f}), "
                f"during: {timeline.at(write.ts)}"
            )
    return found


def behind(box: Sandbox, latest: dict[str, dict[str, Any] | None]) -> list[str]:
    """The orders of ``latest`` the sandbox does not hold at their newest state (deleted: absent)."""
    out = []
    for ext, body in sorted(latest.items()):
        held = box.store.get_external(ext)
        if body is None and held is not None:
            out.append(f"{ext} (deleted, held at {held.get('updated_at')})")
        elif body is not None and (held is None or held.get("updated_at") != body["updated_at"]):
            out.append(f"{ext} (held {held and held.get('updated_at')}, newest {body['updated_at']})")
    return out


# -- the group -----------------------------------------------------------------------------------
@dataclass
class Fleet:
    """The members of the group, of either release."""

    env: dict[str, str]
    folder: Path
    releases: dict[str, Release]
    timeline: Timeline
    members: list[tuple[str, ConnectorProcess]] = field(default_factory=list)
    exits: list[tuple[str, int]] = field(default_factory=list)

    def live(self, side: str | None = None) -> list[ConnectorProcess]:
        return [
            p for s, p in self.members if (side is None or s == side) and p.proc and p.proc.poll() is None
        ]

    def describe(self) -> str:
        counts = {s: len(self.live(s)) for s in ("old", "new")}
        return " + ".join(f"{n} x {self.releases[s].name}" for s, n in counts.items() if n)

    def start(self, side: str) -> ConnectorProcess:
        log = self.folder / f"member-{len(self.members)}-{side}.log"
        proc = ConnectorProcess(self.env, log, self.releases[side].argv, cwd=self.folder).start()
        self.members.append((side, proc))
        return proc

    async def stop(self, proc: ConnectorProcess) -> None:
        side = next(s for s, p in self.members if p is proc)
        proc.terminate()
        self.exits.append(
            (f"{proc.log.name} ({self.releases[side].name})", await asyncio.to_thread(proc.wait, 60))
        )

    def check_alive(self) -> None:
        """Fail, with its log's tail, if a member exited that the test did not stop (a release that
        refuses a setting, the other release's commits, or the mixed group)."""
        stopped = {name for name, _ in self.exits}
        for side, proc in self.members:
            code = proc.proc.poll() if proc.proc else None
            if code is not None and not any(name.startswith(proc.log.name) for name in stopped):
                tail = "\n".join(proc.log_lines()[-15:])
                raise AssertionError(f"{proc.log.name} ({self.releases[side].name}) exited {code}:\n{tail}")

    def kill_all(self) -> None:
        for _, proc in self.members:
            proc.stop()


async def settled(admin: AIOKafkaAdminClient, group: str, members: int) -> bool:
    """Whether the group is stable with ``members`` members, each assigned partitions: the
    rebalance after a member left or joined is over."""
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except Exception:
        return False
    for _, _, state, _, _, described, *_ in response.groups:
        return bool(state == "Stable" and len(described) == members and all(len(m[4]) > 8 for m in described))
    return False


async def wait_for(what: str, predicate: Any, timeout: float, interval: float = 0.5) -> None:
    """Poll ``predicate`` (async, returning a falsy value while waiting, or a list of what is still
    missing, empty when done) until done; fail saying ``what`` and what was still missing."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        done = result == [] if isinstance(result, list) else bool(result)
        if done:
            return
        if time.monotonic() > deadline:
            missing = f": {len(result)} missing, e.g. {result[:5]}" if isinstance(result, list) else ""
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s{missing}")
        await asyncio.sleep(interval)


def _tenants_file(path: Path, boxes: dict[str, Sandbox]) -> None:
    lines = []
    for name, box in boxes.items():
        lines += [f"[{name}]", 'kind = "loop"', f'base_url = "{box.url}"', f'api_key = "{box.api_key}"',
                  "rate_limit_per_second = 20", ""]  # fmt: skip
    path.write_text("\n".join(lines))


@dataclass
class Run:
    """One test run: the broker, the sandboxes, the group and the stream."""

    bootstrap: str
    topic: str
    boxes: dict[str, Sandbox]
    orders: Orders
    fleet: Fleet
    admin: AIOKafkaAdminClient
    producer: AIOKafkaProducer
    timeline: Timeline
    parked: list[tuple[str, int]] = field(default_factory=list)

    @property
    def group(self) -> str:
        return f"{self.topic}-group"

    async def settle(self, step: str, members: int = MEMBERS) -> None:
        async def done() -> bool:
            self.fleet.check_alive()
            return await settled(self.admin, self.group, members)

        await wait_for(f"{step}: the group settling with {members} members", done, timeout=90)

    async def feed(self) -> None:
        """A batch of events every half second, until cancelled."""
        size = 6 if self.orders.shops else 4
        while True:
            for key, value in self.orders.batch(size):
                await self.producer.send(self.topic, value=value, key=key)
            await self.producer.flush()
            await asyncio.sleep(0.5)

    async def parked_records(self) -> int:
        return sum((await end_offsets(self.bootstrap, f"{self.topic}.parked")).values())

    async def roll(self, phase: str, frm: str, to: str, down: str) -> None:
        """Replace every member of ``frm`` by one of ``to``, one at a time, while events keep coming
        and shop ``down`` is down (with one shop: for 6 s; with many: parked, until the roll to this
        release is over, or, rolling back, until before the roll)."""
        feeding = asyncio.create_task(self.feed())
        try:
            await asyncio.sleep(3)
            box = self.boxes[down]
            before = await self.parked_records()
            if self.orders.shops:
                self.timeline.note(f"{phase}: shop {down} down, {self.fleet.describe()}")
                box.faults.outage_until = time.time() + 3600
                await wait_for(f"{phase}: shop {down} parked by {self.fleet.describe()}",
                               lambda: self._parked_more(before), timeout=60)  # fmt: skip
            else:
                self.timeline.note(f"{phase}: the shop down for 6 s, {self.fleet.describe()}")
                box.faults.outage_until = time.time() + 6
            if self.orders.shops and to == "old":
                # As the README's Upgrading section says: roll back to the previous release once no
                # shop is parked (its replay ends after one empty read of a parking partition, and a
                # read right after a seek may come back empty: it can leave a parked event unsent).
                box.faults.outage_until = 0.0
                self.timeline.note(f"{phase}: shop {down} back before rolling back, {self.fleet.describe()}")
                await wait_for(f"{phase}: no shop parked in any commit ({self.fleet.describe()})",
                               self._parked_in_commits, timeout=120)  # fmt: skip
            for n, proc in enumerate(self.fleet.live(frm)):
                step = f"{phase}, member {n + 1} of {MEMBERS}"
                if n % 2 == 0:  # stopped, then its replacement started
                    self.timeline.note(f"{step}: stopping it, {self.fleet.describe()}")
                    await self.fleet.stop(proc)
                    self.fleet.start(to)
                else:  # its replacement first (deploy/kubernetes: maxSurge 1, maxUnavailable 0)
                    self.timeline.note(f"{step}: starting its replacement, {self.fleet.describe()}")
                    self.fleet.start(to)
                    await self.settle(f"{step}, its replacement joined", MEMBERS + 1)
                    self.timeline.note(f"{step}: stopping it, {self.fleet.describe()}")
                    await self.fleet.stop(proc)
                await self.settle(f"{step} replaced")
                self.timeline.note(f"{phase}: member {n + 1} of {MEMBERS} replaced, {self.fleet.describe()}")
                await asyncio.sleep(2)
                if n == MEMBERS - 1 and self.orders.shops and to == "new":
                    # Not before: a member of the previous release replaying it could leave a
                    # parked event unsent (the module's docstring).
                    box.faults.outage_until = 0.0
                    self.timeline.note(f"{phase}: shop {down} back, {self.fleet.describe()}")
            if self.orders.shops:
                self.parked.append((phase, await self.parked_records() - before))
        finally:
            feeding.cancel()
            with suppress(asyncio.CancelledError):
                await feeding
        await self.producer.flush()
        self.timeline.note(f"{phase}: converging, {self.fleet.describe()}")
        await wait_for(f"{phase}: every order at its newest state ({self.fleet.describe()})",
                       self._behind, timeout=180)  # fmt: skip
        ends = await end_offsets(self.bootstrap, self.topic)
        await wait_for(f"{phase}: every event committed", lambda: self._committed(ends), timeout=60)

    async def _parked_in_commits(self) -> list[str]:
        """The partitions whose last commit names a parked shop or a replay to run (none: nothing
        is parked, as ``connector tenants`` would show)."""
        offsets = await self.admin.list_consumer_group_offsets(self.group)
        out = []
        for tp, committed in offsets.items():
            meta = read_metadata(committed.metadata).meta
            if tp.topic == self.topic and (meta.parked or meta.replay_starts):
                out.append(f"{tp.partition}: parked {list(meta.parked)}, replay {meta.replay_starts}")
        return out

    async def _parked_more(self, before: int) -> bool:
        return await self.parked_records() > before

    async def _behind(self) -> list[str]:
        self.fleet.check_alive()
        return [
            f"{s}/{o}" if s else o
            for s, box in self.boxes.items()
            for o in behind(box, self.orders.latest[s])
        ]

    async def _committed(self, ends: dict[int, int]) -> bool:
        done = await committed_offsets(self.bootstrap, self.group, self.topic)
        return all(done.get(p, 0) >= end for p, end in ends.items())


def _sandboxes(mode: str) -> tuple[Sandbox, dict[str, Sandbox]]:
    def box(key: str, seed: int) -> Sandbox:
        faults = Faults(late_rate=LATE_RATE, late_seconds=LATE_SECONDS)
        return Sandbox(api_key=key, rate_per_minute=6000, seed=seed, faults=faults)

    if mode == "one-shop":
        root = box("test-key", 1)
        return root, {"": root}
    shops = {f"s{i}": box(f"key-s{i}", i) for i in range(6)}
    return Sandbox(api_key="not-a-tenant", tenants=shops), shops


@pytest.fixture
def procs_cleanup() -> Iterator[list[Fleet]]:
    fleets: list[Fleet] = []
    yield fleets
    for fleet in fleets:
        fleet.kill_all()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("mode", ["one-shop", "many-shops"])
async def test_rolling_upgrade_and_rollback_lose_nothing_and_never_go_backwards(
    mode: str,
    direction: str,
    kafka_bootstrap: str,
    topic_name: str,
    tmp_path: Path,
    releases: dict[str, Release],
    procs_cleanup: list[Fleet],
) -> None:
    """Three members of one release replaced one at a time by the other while a shop is down (and
    parked, with many shops) and 5% of writes land late; then the reverse. After quiescence: every
    order at its newest state, nothing dead-lettered, nothing ever moved backwards, every exit 0."""
    start, other = ("old", "new") if direction == "up-and-back" else ("new", "old")
    root, boxes = _sandboxes(mode)
    await create_topics(
        kafka_bootstrap, {topic_name: PARTITIONS, f"{topic_name}.dlq": 1, f"{topic_name}.parked": PARTITIONS}
    )
    timeline = Timeline()
    orders = Orders(
        sorted(boxes) if mode == "many-shops" else None, per_shop=15 if mode == "many-shops" else 40, seed=20
    )
    async with root:
        settings: dict[str, Any] = dict(SETTINGS)
        if mode == "many-shops":
            _tenants_file(tmp_path / "tenants.toml", boxes)
            settings |= {**MANY_SHOPS, "TENANTS__PATH": str(tmp_path / "tenants.toml")}
        env = connector_env(kafka_bootstrap, topic_name, root.url, **settings)
        env.pop("PYTHONPATH", None)
        fleet = Fleet(env, tmp_path, releases, timeline)
        procs_cleanup.append(fleet)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, linger_ms=5)
        await admin.start()
        await producer.start()
        try:
            run = Run(kafka_bootstrap, topic_name, boxes, orders, fleet, admin, producer, timeline)
            for _ in range(MEMBERS):
                fleet.start(start)
            await run.settle("start")
            timeline.note(f"start: {fleet.describe()}")
            shops = sorted(boxes)
            first, second = direction.split("-and-")
            await run.roll(first, start, other, down=shops[0])
            await run.roll(second, other, start, down=shops[1 % len(shops)])
            timeline.note("stopping every member")
            await asyncio.gather(*(fleet.stop(p) for p in fleet.live()))
        finally:
            await producer.stop()
            await admin.close()
        await asyncio.sleep(LATE_SECONDS + 1.0)  # every late write has landed
        timeline.note("quiescent")
    # The verdict.
    assert all(code == 0 for _, code in fleet.exits), f"exit codes: {fleet.exits}"
    late: list[str] = []
    for shop, box in boxes.items():
        assert not behind(box, orders.latest[shop]), (
            f"{shop}: orders not at their newest state once quiescent"
        )
        late += backwards(shop, box.store.writes, timeline)
    diagnosis = ""
    if late:  # what it takes to tell why: when each step happened, and (many shops) what was parked
        diagnosis = "\ntimeline:\n" + "\n".join(f"  {when:.3f} {what}" for when, what in timeline.steps)
        if mode == "many-shops":
            parked = sum((await end_offsets(kafka_bootstrap, f"{topic_name}.parked")).values())
            records = await read_topic(kafka_bootstrap, f"{topic_name}.parked", expect=parked, timeout=15)
            keys = sorted({bytes(r.key or b"").decode(errors="replace") for r in records})
            diagnosis = f"\nparked per phase {run.parked}; orders on the parking topic: {keys}{diagnosis}"
    assert not late, (
        f"{len(late)} writes of an older version after a newer one:\n" + "\n".join(late[:20]) + diagnosis
    )
    dead = await end_offsets(kafka_bootstrap, f"{topic_name}.dlq")
    assert sum(dead.values()) == 0, "nothing dead-lettered"
    requests = [r for box in boxes.values() for r in box.store.requests]
    landed_late = [r for r in requests if r.done - r.ts >= LATE_SECONDS]
    assert landed_late, "some writes landed late (after the member's call timed out)"
    if mode == "many-shops":
        assert all(n > 0 for _, n in run.parked), f"a shop was parked in each phase: {run.parked}"
    deleted = sum(body is None for latest in orders.latest.values() for body in latest.values())
    print(f"\n{mode}: {len(requests)} requests, {len(landed_late)} landed late, "
          f"{sum(len(b.store.writes) for b in boxes.values())} writes, {deleted} orders deleted, parked {run.parked}, "
          f"exits {[c for _, c in fleet.exits]}; took {timeline.steps[-1][0] - timeline.steps[0][0]:.0f}s")  # fmt: skip
    if os.environ.get("UPGRADE_TIMELINE"):
        for when, what in timeline.steps:
            print(f"  {when:.3f} {what}")
