"""Issue 20's many-shop acceptance scenario on the real broker, judged from the vendor's side.

    .venv/bin/python -m bench.fleet [--seconds 180] [--runs 2] [--set NAME=VALUE ...]

A real Kafka (KRaft, the project's launcher ``connector.localkafka``; ``TEST_KAFKA_BOOTSTRAP_SERVERS``
uses one already running), the sandbox in a process of its own with one Loop account per shop (5
requests a second each, a bucket of one second), six shops in a tenants file routed by the envelope's
``shop`` field, and two ``connector run`` processes in one group on six partitions (the parking,
pace and dead-letter topics created as the README says). A steady producer sends order events for
``--seconds`` (several versions an order, each with its ``updated_at``, a few duplicates, some
deletes: a delete is its order's last event), while:

- shop ``a``'s API is down (503) for 60 s (at most a third of the run), from 10% of the run;
- shop ``b``'s key is wrong in the tenants file from the start (401), and rotated to the right one
  in the file at 55% of the run (read again without a restart);
- shop ``c``'s key also serves another client (``bench.run.other_client``, a process of its own)
  spending half its budget evenly for as long as events are produced; ``c`` gets more events than
  what the other client leaves can carry, so that its share of it means something;
- at 40% of the run one member is killed with SIGKILL and a replacement started at once, as a
  Deployment would.

Then the producer stops, the group converges (every order at its newest state, every partition
committed to its log end), every member is stopped (SIGTERM), and once no request is still being
answered the verdict is taken from the sandbox's write log (``GET /t/{shop}/_sandbox/writes``), its
request log and the dead-letter topic:

- every order at its newest state, or deleted;
- nothing backwards: no order ever written an older ``updated_at`` after a newer one (a delete is the
  newest);
- no dead letter (every event is valid);
- the healthy shops (``d``, ``e``, ``f``): the worst "produced -> its state, or a newer one, written at
  the sandbox" latency of every event within the README's isolation bound,
  ``tenants.park_after_seconds`` + 2 x ``sink.timeout_seconds`` + ``kafka.settle_seconds`` +
  ``delivery.backoff_cap_seconds`` + ``delivery.probe_interval_seconds`` + 10 s (worst and p99 printed);
- 429s: none for a shop whose key no one else uses; for ``c`` at most 3 per 100 accepted calls over
  the first 90 s of the other client and over the whole run. Also printed, not judged: ``c``'s
  accepted calls over what the other client left (5/s x the time, less what it got accepted);
- every member stopped with SIGTERM exits 0.

The members run with the product's defaults (``--set`` overrides any ``CONNECTOR_*`` setting, e.g.
``--set TENANTS__PARK_AFTER_SECONDS=10``); the bound is computed from the effective settings
(``connector config show``). One table per run and a verdict line; exit 1 if a criterion failed in
any run. Run N's events come from seed 20 + N, so runs of one number are comparable. Each run's
members' logs, the sandbox's log, its write and request logs per shop (``sandbox-{shop}.json``),
the events produced (``produced.json``) and a timeline stay in the folder printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.run import KEY, OTHER_PATH, ROOT, broker
from connector.localkafka import free_port
from connector.samples import envelope, order_body
from tests.helpers import committed_offsets, end_offsets, read_topic
from tests.procs import ConnectorProcess, SandboxProcess, connector_env

SHOPS = {
    "a": "API down",
    "b": "wrong key, rotated",
    "c": "key shared",
    "d": "healthy",
    "e": "healthy",
    "f": "healthy",
}
HEALTHY = ("d", "e", "f")
SHARED = "c"
BUDGET = 5.0  # each shop's Loop account: 300 requests a minute
OTHER_RATE = BUDGET / 2  # the other client on c's key: half its budget
EVENTS_PER_SECOND = {"a": 2.5, "b": 2.5, "c": 5.0, "d": 2.5, "e": 2.5, "f": 2.5}
NEW_ORDER_SHARE = {"c": 0.6}  # c: about 3 new orders a second, more than the 2.5/s left to it
NEW_ORDER_DEFAULT = 0.35
DUPLICATE_SHARE = 0.04
DELETE_SHARE = 0.05
PARTITIONS = 6
MEMBERS = 2
MAX_429_SHARE = 0.03
FIRST_WINDOW = 90.0
CONVERGE_TIMEOUT = 600.0
# connector_env's tunings for the tests' short runs: taken out, so that the product's defaults apply
TEST_TUNINGS = (
    "KAFKA__COMMIT_INTERVAL_SECONDS",
    "KAFKA__SESSION_TIMEOUT_MS",
    "KAFKA__HEARTBEAT_INTERVAL_MS",
    "KAFKA__LEASE_SECONDS",
    "SINK__TIMEOUT_SECONDS",
    "SINK__SETTLE_SECONDS",
)


# -- the events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sent:
    """One event produced: its shop and order, where it stands among its order's versions, when."""

    shop: str
    ext: str
    rank: float
    at: float


def rank_of(updated_at: str | None, deleted: bool) -> float:
    """Where a state stands among its order's versions: a delete is its order's last."""
    if deleted:
        return math.inf
    if updated_at is None:
        return -math.inf
    return datetime.fromisoformat(updated_at).timestamp()


def behind(latest: dict[str, str | None], held: dict[str, dict[str, Any]]) -> list[str]:
    """The orders of ``latest`` (external id -> newest ``updated_at``, None: deleted) that ``held``
    (what the sandbox holds, by external id) does not hold at that state."""
    out = []
    for ext, newest in sorted(latest.items()):
        have = held.get(ext)
        if newest is None and have is not None:
            out.append(f"{ext} deleted, held at {have.get('updated_at')}")
        elif newest is not None and (have is None or have.get("updated_at") != newest):
            out.append(f"{ext} held {have and have.get('updated_at')}, newest {newest}")
    return out


class Orders:
    """Each shop's stream: new orders, new versions of recent ones, duplicates and deletes;
    ``latest[shop][ext]`` is the newest ``updated_at`` produced (None: deleted)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._count = dict.fromkeys(SHOPS, 0)
        self._live: dict[str, list[str]] = {s: [] for s in SHOPS}
        self._version: dict[str, int] = {}
        self._last: dict[str, bytes] = {}
        self._due = dict.fromkeys(SHOPS, 0.0)
        self.latest: dict[str, dict[str, str | None]] = {s: {} for s in SHOPS}
        self.sent: list[Sent] = []

    def batch(self, seconds: float) -> list[tuple[str, bytes, bytes]]:
        """The events of the next ``seconds`` of every shop: ``(shop, key, value)``."""
        out = []
        for shop, rate in EVENTS_PER_SECOND.items():
            self._due[shop] += rate * seconds
            while self._due[shop] >= 1.0:
                self._due[shop] -= 1.0
                out.append(self._next(shop))
        self._rng.shuffle(out)
        return out

    def _next(self, shop: str) -> tuple[str, bytes, bytes]:
        live, roll = self._live[shop], self._rng.random()
        if not live or roll < NEW_ORDER_SHARE.get(shop, NEW_ORDER_DEFAULT):
            self._count[shop] += 1
            ext = f"{shop}-{self._count[shop]:05d}"
            live.append(ext)
        else:  # mostly an order changed lately, sometimes any order still there
            recent = live[-20:] if self._rng.random() < 0.7 else live
            ext = self._rng.choice(recent)
            roll = self._rng.random()
            if roll < DUPLICATE_SHARE:
                return shop, ext.encode(), self._last[ext]
            if roll < DUPLICATE_SHARE + DELETE_SHARE and self._version[ext] >= 2:
                live.remove(ext)
                version = self._version[ext] + 1
                self._version[ext] = version
                updated = order_body(ext, version)["updated_at"]
                self.latest[shop][ext] = None
                gone = {"event_id": f"{ext}:{version}", "event_type": "order.deleted", "occurred_at": updated,
                        "order": {"external_id": ext, "updated_at": updated}, "shop": shop}  # fmt: skip
                return shop, ext.encode(), json.dumps(gone).encode()
        version = self._version.get(ext, 0) + 1
        self._version[ext] = version
        body = order_body(ext, version)
        value = json.loads(envelope(body, version, "order.created" if version == 1 else "order.updated"))
        value["shop"] = shop
        self._last[ext] = json.dumps(value).encode()
        self.latest[shop][ext] = body["updated_at"]
        return shop, ext.encode(), self._last[ext]

    def rank(self, value: bytes) -> float:
        event = json.loads(value)
        return rank_of(event["order"]["updated_at"], event["event_type"] == "order.deleted")


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Timeline:
    """What the run did, when (wall clock), written to ``timeline.txt`` as it goes."""

    path: Path
    t0: float = 0.0
    steps: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        now = time.time()
        self.steps.append((now, what))
        rel = f"{now - self.t0:7.1f} s" if self.t0 else "   start "
        line = f"{rel}  {what}"
        print(f"    {line}", flush=True)
        with self.path.open("a") as out:
            out.write(f"{now:.3f} {line}\n")

    def at(self, ts: float) -> str:
        during = [what for when, what in self.steps if when <= ts]
        return during[-1] if during else "before the first step"


@dataclass
class Shop:
    """What the sandbox saw of one shop, fetched once every member stopped."""

    name: str
    writes: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    orders: dict[str, dict[str, Any]]


@dataclass
class Outcome:
    """A run's figures and verdict."""

    table: list[str]
    criteria: list[tuple[str, bool, str]]
    folder: Path

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.criteria)


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """What a member started with ``env`` runs with (``connector config show``)."""
    shown = subprocess.run(
        [sys.executable, "-m", "connector", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(shown.stdout))


def bound_of(settings: dict[str, Any]) -> float:
    """The README's isolation bound (its "Guarantees", 11)."""
    sink, delivery, tenants = settings["sink"], settings["delivery"], settings["tenants"]
    return float(
        tenants["park_after_seconds"]
        + 2 * sink["timeout_seconds"]
        + settings["kafka"]["settle_seconds"]
        + delivery["backoff_cap_seconds"]
        + delivery["probe_interval_seconds"]
        + 10
    )


def tenants_file(path: Path, url: str, keys: dict[str, str]) -> None:
    """Write the tenants file in one step (a rename), its mtime moved on so a reload sees it."""
    lines = []
    for shop in SHOPS:
        lines += [f"[{shop}]", 'kind = "loop"', f'base_url = "{url}/t/{shop}"', f'api_key = "{keys[shop]}"',
                  f"rate_limit_per_second = {BUDGET:g}", ""]  # fmt: skip
    staged = path.with_suffix(".staged")
    staged.write_text("\n".join(lines))
    if path.exists():
        was = path.stat().st_mtime_ns
        os.utime(staged, ns=(was, max(time.time_ns(), was + 1_000_000_000)))
    staged.replace(path)


async def create_topics(bootstrap: str, topic: str) -> None:
    """The source, the dead-letter, parking (unlimited retention) and pace (compacted) topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        unlimited = {"retention.ms": "-1", "retention.bytes": "-1"}
        await admin.create_topics([
            NewTopic(topic, PARTITIONS, 1),
            NewTopic(f"{topic}.dlq", 1, 1),
            NewTopic(f"{topic}.parked", PARTITIONS, 1, topic_configs=unlimited),
            NewTopic(f"{topic}.pace", 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ])  # fmt: skip
    finally:
        await admin.close()


async def group_stable(admin: AIOKafkaAdminClient, group: str, members: int) -> bool:
    """Whether the group is stable with ``members`` members, each assigned partitions."""
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except Exception:
        return False
    for _, _, state, _, _, described, *_ in response.groups:
        return bool(state == "Stable" and len(described) == members and all(len(m[4]) > 8 for m in described))
    return False


class Run:
    """One run of the scenario."""

    def __init__(self, bootstrap: str, seconds: float, number: int, overrides: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.seconds = seconds
        self.topic = f"fleet-{time.time_ns()}"
        self.folder = Path(tempfile.gettempdir()) / f"bench-fleet-{os.getpid()}-run{number}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeline = Timeline(self.folder / "timeline.txt")
        self.orders = Orders(seed=20 + number)
        self.overrides = overrides
        self.keys = {shop: f"key-{shop}" for shop in SHOPS}
        self.keys[SHARED] = KEY  # bench.run.other_client spends KEY
        self.members: list[ConnectorProcess] = []
        self.killed: list[ConnectorProcess] = []
        self.exits: dict[str, int] = {}
        self.unasked: list[str] = []
        self.env: dict[str, str] = {}
        self.settings: dict[str, Any] = {}
        self.other_window = (0.0, 0.0)
        self.converged_after: float | None = None
        self.committed = False

    # -- the members --
    def start_member(self) -> ConnectorProcess:
        log = self.folder / f"member-{len(self.members)}.log"
        proc = ConnectorProcess({**self.env, "CONNECTOR_METRICS__PORT": str(free_port())}, log).start()
        self.members.append(proc)
        return proc

    def live(self) -> list[ConnectorProcess]:
        return [p for p in self.members if p.proc is not None and p.proc.poll() is None]

    def check_alive(self) -> None:
        """Note, once, a member that exited without being asked to."""
        for proc in self.members:
            code = proc.proc.poll() if proc.proc else None
            name = proc.log.name
            if (
                code is not None
                and proc not in self.killed
                and name not in self.exits
                and name not in self.unasked
            ):
                self.unasked.append(name)
                self.timeline.note(f"{name} exited {code} unasked; its log's tail: {proc.log_lines()[-3:]}")

    # -- the sandbox --
    async def fault(self, url: str, shop: str, **values: object) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            (await client.post(f"{url}/t/{shop}/_sandbox/faults", json=values)).raise_for_status()

    async def fetch(self, url: str, shop: str, what: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.get(f"{url}/t/{shop}/_sandbox/{what}")
            response.raise_for_status()
            return list(response.json()[what])

    async def still_behind(self, url: str) -> list[str]:
        """The orders not held at their newest state (deleted: absent)."""
        out = []
        for shop in SHOPS:
            orders = await self.fetch(url, shop, "orders")
            out += behind(
                self.orders.latest[shop], {o["external_id"]: o for o in orders if o.get("external_id")}
            )
        return out

    # -- the scenario --
    async def produce(self, producer: AIOKafkaProducer) -> None:
        """Events every half second for ``seconds``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = 0
        while loop.time() - start < self.seconds:
            step += 1
            for shop, key, value in self.orders.batch(0.5):
                self.orders.sent.append(Sent(shop, key.decode(), self.orders.rank(value), time.time()))
                await producer.send(self.topic, value=value, key=key)
            await producer.flush()
            await asyncio.sleep(max(0.0, start + step * 0.5 - loop.time()))

    async def faults(self, url: str) -> None:
        """The schedule of faults, from the first event produced."""
        outage = min(60.0, self.seconds / 3)
        plan: list[tuple[float, str]] = [
            (0.10 * self.seconds, "outage"),
            (0.10 * self.seconds + outage, "outage over"),
            (0.40 * self.seconds, "kill"),
            (0.55 * self.seconds, "rotate"),
        ]
        for at, what in sorted(plan):
            await asyncio.sleep(max(0.0, self.timeline.t0 + at - time.time()))
            self.check_alive()
            if what == "outage":
                await self.fault(url, "a", outage_seconds=outage)
                self.timeline.note(f"shop a down (503) for {outage:.0f} s")
            elif what == "outage over":
                self.timeline.note("shop a's outage over")
            elif what == "kill":
                victim = self.live()[0]
                self.killed.append(victim)
                await asyncio.to_thread(victim.kill9)
                self.timeline.note(f"{victim.log.name} killed (SIGKILL)")
                replacement = self.start_member()
                self.timeline.note(f"{replacement.log.name} started in its place")
            else:
                tenants_file(self.folder / "tenants.toml", url, self.keys)
                self.timeline.note("shop b's key rotated in the tenants file")

    async def wait(self, what: str, predicate: Any, timeout: float, interval: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = await predicate()
            if result is True or result == []:
                return True
            if time.monotonic() > deadline:
                missing = f": {len(result)} missing, e.g. {result[:5]}" if isinstance(result, list) else ""
                self.timeline.note(f"{what}: not reached within {timeout:.0f} s{missing}")
                return False
            await asyncio.sleep(interval)

    async def scenario(self) -> dict[str, Shop]:
        await create_topics(self.bootstrap, self.topic)
        tenants = {shop: {"api_key": self.keys[shop], "rate_per_minute": BUDGET * 60} for shop in SHOPS}
        with SandboxProcess(self.folder / "sandbox.log", api_key="not-a-tenant", tenants=tenants) as box:
            url = box.url
            tenants_file(self.folder / "tenants.toml", url, {**self.keys, "b": "a-key-long-revoked"})
            env = connector_env(self.bootstrap, self.topic, url, LOG_LEVEL="INFO",
                                TENANTS__PATH=str(self.folder / "tenants.toml"), TENANTS__ROUTE="field:shop",
                                SINK__RATE_LIMIT_PER_SECOND=BUDGET)  # fmt: skip
            for name in TEST_TUNINGS:
                env.pop(f"CONNECTOR_{name}")
            env.update({f"CONNECTOR_{k}": v for k, v in self.overrides.items()})
            self.env = env
            self.settings = await asyncio.to_thread(effective_settings, env)
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, enable_idempotence=True, linger_ms=5
            )
            await admin.start()
            await producer.start()
            other: subprocess.Popen[bytes] | None = None
            try:
                for _ in range(MEMBERS):
                    self.start_member()
                self.timeline.note(f"{MEMBERS} members started, shop b's key wrong in the tenants file")
                group = env["CONNECTOR_KAFKA__GROUP_ID"]
                await self.wait("the group stable", lambda: group_stable(admin, group, MEMBERS), 120, 0.5)
                other = start_other(url, self.seconds)
                self.timeline.t0 = time.time()
                self.timeline.note(f"producing for {self.seconds:.0f} s; another client on shop c's key "
                                   f"at {OTHER_RATE:g}/s")  # fmt: skip
                await asyncio.gather(self.produce(producer), self.faults(url))
                done = time.time()
                self.timeline.note(f"producing stopped: {len(self.orders.sent)} events")
                await asyncio.to_thread(other.wait, 60)
                self.timeline.note("the other client stopped")
                if await self.wait(
                    "every order at its newest state", lambda: self.still_behind(url), CONVERGE_TIMEOUT
                ):
                    self.converged_after = time.time() - done
                    self.timeline.note(
                        f"every order at its newest state ({self.converged_after:.0f} s after)"
                    )
                ends = await end_offsets(self.bootstrap, self.topic)

                async def committed() -> bool:
                    have = await committed_offsets(self.bootstrap, group, self.topic)
                    return all(have.get(p, 0) >= end for p, end in ends.items())

                self.committed = await self.wait("every partition committed to its end", committed, 120, 1.0)
                if self.committed:
                    self.timeline.note("every partition committed to its log end")
                live = self.live()
                for proc in live:
                    proc.terminate()
                grace = float(self.settings["shutdown_grace_seconds"]) + 60
                for proc in live:
                    try:
                        self.exits[proc.log.name] = await asyncio.to_thread(proc.wait, grace)
                    except subprocess.TimeoutExpired:
                        self.exits[proc.log.name] = -999
                self.timeline.note(f"every member stopped (SIGTERM): exits {self.exits}")
                await self.quiet(url)
                self.timeline.note("no request still being answered: quiescent")
                shops = {
                    shop: Shop(
                        shop,
                        await self.fetch(url, shop, "writes"),
                        await self.fetch(url, shop, "requests"),
                        {
                            o["external_id"]: o
                            for o in await self.fetch(url, shop, "orders")
                            if o.get("external_id")
                        },
                    )
                    for shop in SHOPS
                }
                self.keep(shops)
                return shops
            finally:
                for proc in self.members:
                    proc.stop()
                if other is not None and other.poll() is None:
                    other.kill()
                    other.wait(10)
                await producer.stop()
                await admin.close()

    def keep(self, shops: dict[str, Shop]) -> None:
        """The sandbox's logs and what was produced, as JSON in the run's folder, for a closer look."""
        for name, shop in shops.items():
            (self.folder / f"sandbox-{name}.json").write_text(
                json.dumps({"writes": shop.writes, "requests": shop.requests})
            )
        produced = [
            [s.shop, s.ext, s.rank if math.isfinite(s.rank) else "delete", s.at] for s in self.orders.sent
        ]
        (self.folder / "produced.json").write_text(json.dumps({"t0": self.timeline.t0, "events": produced}))

    async def quiet(self, url: str) -> None:
        """Wait (at most ``kafka.settle_seconds``) until the sandbox answered every request it got: a
        write still being applied lands before the verdict."""
        deadline = time.monotonic() + float(self.settings["kafka"]["settle_seconds"])
        while time.monotonic() < deadline:
            pending = [r for shop in SHOPS for r in await self.fetch(url, shop, "requests") if not r["done"]]
            if not pending:
                return
            await asyncio.sleep(0.5)

    # -- the verdict --
    async def judge(self, shops: dict[str, Shop]) -> Outcome:
        bound = bound_of(self.settings)
        criteria: list[tuple[str, bool, str]] = []
        table: list[str] = []
        sent_by: dict[tuple[str, str], list[Sent]] = {}
        for s in self.orders.sent:
            sent_by.setdefault((s.shop, s.ext), []).append(s)

        behind_all, backwards_all = [], []
        latencies: dict[str, list[float]] = {}
        slowest: dict[str, tuple[float, Sent]] = {}
        header = (f"{'shop':<4} {'role':<19} {'events':>6} {'orders':>6} {'calls':>6} {'ok':>6} {'429':>4} "
                  f"{'other':>6}  {'latency p50 / p99 / worst':>26}  {'behind':>6} {'backwards':>9}")  # fmt: skip
        table.append(header)
        for name, shop in shops.items():
            late = behind(self.orders.latest[name], shop.orders)
            backwards = self._backwards(name, shop)
            behind_all += late
            backwards_all += backwards
            timed = self._latencies(name, shop, sent_by)
            lat = [t for t, _ in timed]
            latencies[name] = lat
            if timed:
                slowest[name] = timed[-1]
            ours = [r for r in shop.requests if OTHER_PATH not in r["path"]]
            theirs = [r for r in shop.requests if OTHER_PATH in r["path"]]
            statuses = Counter(r["status"] for r in ours)
            events = sum(1 for s in self.orders.sent if s.shop == name)
            table.append(
                f"{name:<4} {SHOPS[name]:<19} {events:>6} {len(self.orders.latest[name]):>6} {len(ours):>6} "
                f"{statuses[200]:>6} {statuses[429]:>4} {len(theirs):>6}  {_latency(lat):>26}  "
                f"{len(late):>6} {len(backwards):>9}"
            )
        criteria.append(("every order at its newest state (or deleted)", not behind_all,
                         f"{len(behind_all)} behind, e.g. {behind_all[:3]}" if behind_all else "all"))  # fmt: skip
        criteria.append(("nothing moved backwards", not backwards_all,
                         "; ".join(backwards_all[:3]) if backwards_all else "no older after newer"))  # fmt: skip
        dead = await self._dead_letters()
        criteria.append(("no dead letter", not dead, f"{len(dead)}: {dead[:3]}" if dead else "DLQ empty"))
        worst = {s: max(latencies[s], default=math.inf) for s in HEALTHY}
        criteria.append((
            f"healthy shops within the bound ({bound:.0f} s)",
            all(w <= bound for w in worst.values()),
            ", ".join(f"{s} worst {w:.1f} s p99 {_pct(latencies[s], 0.99):.1f} s" for s, w in worst.items()),
        ))  # fmt: skip
        limited = {
            n: sum(1 for r in s.requests if OTHER_PATH not in r["path"] and r["status"] == 429)
            for n, s in shops.items()
        }
        alone = {n: c for n, c in limited.items() if n != SHARED}
        criteria.append(("no 429 where no other client shares the key", not any(alone.values()),
                         ", ".join(f"{n} {c}" for n, c in alone.items())))  # fmt: skip
        shared, shared_note = self._shared(shops[SHARED])
        criteria.append((f"shop c: at most {MAX_429_SHARE:.0%} 429s per accepted call (first "
                         f"{FIRST_WINDOW:.0f} s of the other client, and the whole run)",
                         shared[0] <= MAX_429_SHARE and shared[1] <= MAX_429_SHARE, shared_note))  # fmt: skip
        stopped = {k: v for k, v in self.exits.items()}
        criteria.append(("every member stopped with SIGTERM exits 0 (none exits unasked)",
                         all(c == 0 for c in stopped.values()) and not self.unasked,
                         f"exits {stopped}; killed {[p.log.name for p in self.killed]}; "
                         f"unasked {self.unasked}"))  # fmt: skip
        parked = sum((await end_offsets(self.bootstrap, f"{self.topic}.parked")).values())
        converged = (
            f"{self.converged_after:.0f} s" if self.converged_after is not None else "not within the timeout"
        )
        table.append(
            f"events {len(self.orders.sent)}, orders {sum(len(v) for v in self.orders.latest.values())} "
            f"({sum(v is None for o in self.orders.latest.values() for v in o.values())} deleted); "
            f"records parked {parked}; converged {converged} after producing stopped; committed to the end: "
            f"{'yes' if self.committed else 'no'}"
        )
        table.append(f"shop c: {shared_note}")
        for name in HEALTHY:
            if name in slowest:
                took, event = slowest[name]
                table.append(
                    f"slowest of {name}: {event.ext} produced at +{event.at - self.timeline.t0:.1f} s (during: "
                    f"{self.timeline.at(event.at)}), its state written {took:.1f} s later"
                )
        table += [f"from the members' logs: {line}" for line in self.digest()]
        return Outcome(table, criteria, self.folder)

    def digest(self) -> list[str]:
        """When shops' circuits opened, shops were parked and unparked, and keys changed, per member
        (from their logs; times from the first event produced)."""
        wanted = {"api_outage", "tenant_parked", "tenant_unparked", "tenant_changed", "api_recovered"}
        seen: dict[tuple[str, str, str], list[float]] = {}
        for proc in self.members:
            for line in proc.log_lines():
                if not line.startswith("{"):
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") not in wanted:
                    continue
                when = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
                key = (str(entry.get("tenant", "")), str(entry["event"]), proc.log.name.removesuffix(".log"))
                seen.setdefault(key, []).append(when - self.timeline.t0)
        out = []
        for (tenant, event, member), times in sorted(seen.items(), key=lambda kv: (kv[0][0], min(kv[1]))):
            shown = ", ".join(f"+{t:.1f}" for t in sorted(times)[:6]) + (" ..." if len(times) > 6 else "")
            out.append(f"{tenant} {event} {member}: {len(times)} x at {shown} s")
        return out

    def _backwards(self, name: str, shop: Shop) -> list[str]:
        newest: dict[str, dict[str, Any]] = {}
        found = []
        for write in shop.writes:
            ext = write["external_id"]
            if ext is None:
                continue
            rank = rank_of(write["updated_at"], write["op"] == "delete")
            before = newest.get(ext)
            if before is None or rank >= rank_of(before["updated_at"], before["op"] == "delete"):
                newest[ext] = write
            else:
                found.append(f"{ext}: {write['op']} {write['updated_at']} at +{write['ts'] - self.timeline.t0:.1f} s "
                             f"after {before['op']} {before['updated_at']} (at +{before['ts'] - self.timeline.t0:.1f} s), "
                             f"during: {self.timeline.at(write['ts'])}")  # fmt: skip
        return found

    def _latencies(
        self, name: str, shop: Shop, sent_by: dict[tuple[str, str], list[Sent]]
    ) -> list[tuple[float, Sent]]:
        """For every event of the shop: from when it was produced to when its state, or a newer one of
        its order, was applied at the sandbox (a delete answered 404 counts: the order is absent);
        infinite if never."""
        reached: dict[str, list[tuple[float, float]]] = {}
        for w in shop.writes:
            if w["external_id"] is not None:
                reached.setdefault(w["external_id"], []).append(
                    (w["ts"], rank_of(w["updated_at"], w["op"] == "delete"))
                )
        for r in shop.requests:
            if r["method"] == "DELETE" and r["status"] == 404 and r["external_id"]:
                reached.setdefault(r["external_id"], []).append((r["done"] or r["ts"], math.inf))
        out = []
        for (s, ext), events in sent_by.items():
            if s != name:
                continue
            states = sorted(reached.get(ext, []))
            for event in events:
                when = next((ts for ts, rank in states if rank >= event.rank), math.inf)
                out.append((max(0.0, when - event.at), event))
        return sorted(out, key=lambda pair: pair[0])

    async def _dead_letters(self) -> list[str]:
        total = sum((await end_offsets(self.bootstrap, f"{self.topic}.dlq")).values())
        if not total:
            return []
        records = await read_topic(self.bootstrap, f"{self.topic}.dlq", expect=total, timeout=30)
        out = []
        for record in records:
            headers = {k: v.decode(errors="replace") for k, v in record.headers}
            out.append(f"{record.key!r} stage {headers.get('__connector.stage')} tenant "
                       f"{headers.get('__connector.tenant')}: {headers.get('__connect.errors.exception.message')}")  # fmt: skip
        return out

    def _shared(self, shop: Shop) -> tuple[tuple[float, float], str]:
        ours = [r for r in shop.requests if OTHER_PATH not in r["path"]]
        theirs = [r for r in shop.requests if OTHER_PATH in r["path"]]
        if not theirs:
            return (math.inf, math.inf), "the other client sent nothing"
        t0, t1 = min(r["ts"] for r in theirs), max(r["ts"] for r in theirs)

        def window(start: float, end: float) -> tuple[int, int, int]:
            mine = [r for r in ours if start <= r["ts"] < end]
            other_ok = sum(1 for r in theirs if start <= r["ts"] < end and r["status"] == 200)
            return (
                sum(1 for r in mine if r["status"] == 200),
                sum(1 for r in mine if r["status"] == 429),
                other_ok,
            )

        first_end = t0 + min(FIRST_WINDOW, t1 - t0)
        ok1, lim1, oth1 = window(t0, first_end)
        okf, _, othf = window(t0, t1)
        other_refused = sum(1 for r in theirs if r["status"] == 429)
        ok_all = sum(1 for r in ours if r["status"] == 200)
        lim_all = sum(1 for r in ours if r["status"] == 429)
        first, whole = lim1 / max(1, ok1), lim_all / max(1, ok_all)
        left1 = ok1 / max(1.0, BUDGET * (first_end - t0) - oth1)
        leftf = okf / max(1.0, BUDGET * (t1 - t0) - othf)
        note = (f"429 per accepted: first {first_end - t0:.0f} s of the other client {first:.1%} ({lim1}/{ok1}), "
                f"whole run {whole:.1%} ({lim_all}/{ok_all}); of what the other client left: first "
                f"{first_end - t0:.0f} s {left1:.0%}, all {t1 - t0:.0f} s {leftf:.0%} (it got {othf} "
                f"accepted at {othf / max(1.0, t1 - t0):.2f}/s of {len(theirs)} sent, {other_refused} x 429)")  # fmt: skip
        return (first, whole), note


def start_other(url: str, seconds: float) -> subprocess.Popen[bytes]:
    """The other client on shop c's key, in a process of its own, as another integration would be."""
    return subprocess.Popen(
        [sys.executable, "-c", _OTHER, f"{url}/t/{SHARED}", str(OTHER_RATE), str(seconds)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


_OTHER = """
import asyncio, sys
from bench.run import other_client
asyncio.run(other_client(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
"""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(len(values) * q))]


def _latency(values: list[float]) -> str:
    if not values:
        return "-"
    return " / ".join(f"{_pct(values, q):.1f}" if q < 1 else f"{values[-1]:.1f} s" for q in (0.5, 0.99, 1.0))


def conditions() -> str:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return f"nproc {cores}; uptime: {uptime}"


def code() -> str:
    """The commit the members run, and whether ``connector/`` differs from it."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "connector"], capture_output=True,
                           text=True, check=False).stdout.strip()  # fmt: skip
    return f"code {head or 'unknown'}{' + uncommitted changes under connector/' if dirty else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="how long events are produced")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a connector setting without the CONNECTOR_ prefix, e.g. TENANTS__PARK_AFTER_SECONDS=10")  # fmt: skip
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    with broker() as bootstrap:
        outcomes = []
        for number in range(1, args.runs + 1):
            print(f"run {number} of {args.runs}: {code()}; {conditions()}", flush=True)
            run = Run(bootstrap, args.seconds, number, overrides)
            shops = asyncio.run(run.scenario())
            outcome = asyncio.run(run.judge(shops))
            outcomes.append(outcome)
            s = run.settings
            print(f"\nrun {number}: {MEMBERS} members, {PARTITIONS} partitions, {len(SHOPS)} Loop shops at "
                  f"{BUDGET:g}/s; park_after {s['tenants']['park_after_seconds']:g} s, timeout "
                  f"{s['sink']['timeout_seconds']:g} s, settle {s['kafka']['settle_seconds']:g} s, backoff cap "
                  f"{s['delivery']['backoff_cap_seconds']:g} s, probe {s['delivery']['probe_interval_seconds']:g} s, "
                  f"session {s['kafka']['session_timeout_ms'] / 1000:g} s, lease {s['kafka']['lease_seconds']:g} s: "
                  f"bound {bound_of(s):.0f} s; after it: {code()}; {conditions()}")  # fmt: skip
            for line in outcome.table:
                print(f"  {line}")
            for what, ok, detail in outcome.criteria:
                print(f"  [{'pass' if ok else 'FAIL'}] {what}: {detail}")
            failed = [what for what, ok, _ in outcome.criteria if not ok]
            print(f"verdict run {number}: {'PASS' if outcome.passed else 'FAIL: ' + '; '.join(failed)} "
                  f"(logs and timeline: {outcome.folder})\n", flush=True)  # fmt: skip
    sys.exit(0 if outcomes and all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    main()
