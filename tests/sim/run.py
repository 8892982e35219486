"""Run one schedule: the real pipeline (``connector.app.serve``) in every member, on virtual time,
against the simulated cluster and vendor; then quiesce and check.

Phases: the producer appends the events while the schedule's faults and membership changes play out;
after the last fault (the *horizon*) at least one member runs and the run must converge (every
partition committed to its end) within :data:`LIVENESS_BOUND` seconds; then every member is stopped
(SIGTERM path), every late write lands, and the checker judges the final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tempfile
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import structlog

from connector import logs
from connector.app import Parts, serve
from connector.config import (
    AuditSettings,
    DeliverySettings,
    DlqSettings,
    KafkaSettings,
    MetricsSettings,
    ResyncSettings,
    Settings,
    SinkSettings,
    TenantsSettings,
)
from connector.constants import H_PARKED_FROM, H_TENANT
from connector.metadata import decode
from connector.metrics import Metrics
from connector.resynclog import Request
from connector.resynclog import encode as resync_record
from connector.source import PartitionsCallback
from connector.structs import Record, TopicPartition
from tests.sim.checker import Checker
from tests.sim.cluster import Member, SimCluster
from tests.sim.loop import Deadlock, VirtualTimeLoop
from tests.sim.schedule import EPOCH, TOPIC, Schedule, make_schedule
from tests.sim.vendor import SimVendor

LIVENESS_BOUND = 240.0
"""Seconds after the last fault within which every event must be resolved and committed: session
timeout (10) + lease and settle hold (≤ 5 + 12) + backoff cap (5) + probe interval, with margin for
several of them in a row."""
API_KEY = "sim-key-Secret-7"


class _Clock:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return self._loop.time()


@dataclass
class Result:
    """What one run found."""

    seed: int
    violations: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    description: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


def tenant_key(name: str) -> str:
    """The API key of a simulated shop (a secret: never in logs or dead letters)."""
    return f"{API_KEY}-{name}"


@dataclass
class Shop:
    """One shop as the tenants file names it: its account (``account``, the name its API knows it by),
    its name now, the names it had, and its key."""

    account: str
    name: str
    aliases: list[str] = field(default_factory=list)
    key: str = ""


def write_tenants(shops: list[Shop], budget: float, folder: Path) -> Path:
    """The tenants file of a many-shop schedule: every shop a Loop account at the schedule's budget."""
    path = folder / "tenants.toml"
    lines = []
    for shop in shops:
        lines += [f"[{shop.name}]", 'kind = "loop"', f'base_url = "http://sim/t/{shop.account}"']
        lines += [f'api_key = "{shop.key or tenant_key(shop.account)}"', f"rate_limit_per_second = {budget}"]
        if shop.aliases:
            lines.append("aliases = [" + ", ".join(f'"{a}"' for a in shop.aliases) + "]")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def settings_for(s: Schedule, tenants_path: Path | None = None) -> Settings:
    """The connector settings a schedule runs with."""
    k = s.knobs
    tenants = TenantsSettings()
    if tenants_path is not None:
        tenants = TenantsSettings(
            path=str(tenants_path),
            route="header:shop",
            reload_seconds=2.0,
            park_after_seconds=k.park_after,
            park_max_keys=k.park_max_keys,
            park_replay_events=k.park_replay,
        )
    return Settings(
        tenants=tenants,
        kafka=KafkaSettings(
            topics=[TOPIC],
            commit_interval_seconds=1.0,
            lease_seconds=5.0,
            session_timeout_ms=10_000,
            rebalance_timeout_ms=20_000,
            max_unresolved_events=k.max_unresolved,
            max_held_offsets=k.max_held,
            warmup_records=k.warmup,
            lookahead_records=k.lookahead,
            remember_keys=k.remember_keys,
            settle_seconds=k.settle,
            poll_timeout_ms=1000,  # the simulated fetch returns as soon as there is data
        ),
        dlq=DlqSettings(topic=f"{TOPIC}.dlq", dead_letter_replaced=k.dead_letter_replaced),
        sink=SinkSettings(
            api_key=API_KEY,
            mode=k.mode,
            rate_limit_per_second=k.budget,
            max_in_flight=k.max_in_flight,
            timeout_seconds=k.timeout,
        ),
        delivery=DeliverySettings(
            backoff_base_seconds=0.1,
            backoff_cap_seconds=5.0,
            circuit_window=10,
            circuit_min_calls=5,
            probe_interval_seconds=k.probe_interval,
            max_retry_after_seconds=10.0,
            linger_seconds=k.linger,
            linger_lag_records=k.linger_lag,
        ),
        metrics=MetricsSettings(port=0),
        audit=AuditSettings(enabled=s.audit, min_interval_seconds=2.0),
        resync=ResyncSettings(look_seconds=1.0, batch=20),  # progress written often: resumed often
        shutdown_grace_seconds=10.0,
    )


class World:
    """The cluster, the vendor, the members and the checker of one run."""

    def __init__(self, schedule: Schedule) -> None:
        self.s = schedule
        self.tampered: list[str] = []  # orders the vendor lost or reverted by itself (audits on)
        self.lost: list[str] = []  # every order the vendor held when it lost them all (a resync's run)
        self.loop = asyncio.get_running_loop()
        self.clock = _Clock(self.loop)
        self._folder = tempfile.TemporaryDirectory(prefix="sim-tenants-")
        self.shops = [Shop(name, name) for name in schedule.tenants]
        folder = Path(self._folder.name)
        path = write_tenants(self.shops, schedule.knobs.budget, folder) if schedule.tenants else None
        self.settings = settings_for(schedule, path)
        self.cluster = SimCluster(
            TOPIC,
            schedule.partitions,
            wall=self.clock.wall,
            session_timeout=10.0,
            rebalance_timeout=20.0,
            max_poll_records=schedule.knobs.fetch_records,
            fetch_seconds=0.05 if schedule.knobs.fetch_records < 100 else 0.0,  # a slow read
            rng=Random(schedule.seed * 7919 + 2),
            fetch_gaps=schedule.knobs.fetch_gaps,
            fetch_bytes=schedule.knobs.fetch_bytes,
        )
        self._partition_of: dict[str, int] = {}
        self._legacy = Random(schedule.seed * 7919 + 3)
        self.vendor = SimVendor(
            rng=Random(schedule.seed * 7919 + 1),
            wall=self.clock.wall,
            budget=schedule.knobs.budget,
            faults=schedule.faults,
            latency=0.02,
            max_life=schedule.knobs.settle,
            epoch_of=lambda m, tp: (
                self.cluster.members[m].epochs.get(tp, -1) if m in self.cluster.members else -1
            ),
            alive=lambda m: m in self.cluster.members and self.cluster.members[m].alive,
        )
        self.checker = Checker(schedule, self.cluster, self.vendor, API_KEY)
        self.cluster.on_commit = self.checker.on_commit
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.stops: dict[str, asyncio.Event] = {}
        self.pipelines: dict[str, Any] = {}
        self.crashes: list[str] = []
        self._next = 0

    def close(self) -> None:
        """Remove the tenants file."""
        self._folder.cleanup()

    # -- members ------------------------------------------------------------------------------
    def start_member(self) -> str:
        name = f"m{self._next}"
        self._next += 1
        stop = asyncio.Event()

        legacy = self._legacy.random() < self.s.knobs.legacy_members

        def source(revoked: PartitionsCallback, assigned: PartitionsCallback) -> Member:
            self.pipelines[name] = getattr(revoked, "__self__", None)
            member = self.cluster.member(name, revoked, assigned)
            member.legacy = legacy
            return member

        parts = Parts(
            clock=self.clock,
            rng=Random(f"{self.s.seed}:{name}"),
            metrics=Metrics(),
            transport=self.vendor.transport(name),
            dead_letters=self.cluster.dead_letters_for(name),
            park_log=self.cluster.park_log_for(name),
            pace_log=self.cluster.pace_log_for(name),
            source=source,
            resync_log=self.cluster.resync_log_for(name) if self.s.resync_at is not None else None,
            source_log=self.cluster.source_log_for(name) if self.s.resync_at is not None else None,
        )
        settings = self.settings
        if self._legacy.random() < self.s.knobs.parking_off:  # this member parks no new shop
            off = settings.tenants.model_copy(update={"park_after_seconds": 0.0})
            settings = settings.model_copy(update={"tenants": off})
        task = self.loop.create_task(serve(settings, stop, parts), name=name)
        task.add_done_callback(lambda t: self._ended(name, t))
        self.tasks[name], self.stops[name] = task, stop
        return name

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            text = "".join(traceback.format_exception(error)).strip().splitlines()
            self.crashes.append(f"{name} crashed: {' | '.join(text[-4:])}")

    def running(self) -> list[str]:
        return [n for n, t in self.tasks.items() if not t.done() and not self.stops[n].is_set()]

    def live(self, index: int) -> str | None:
        names = self.running()
        return names[index % len(names)] if names else None

    async def apply(self, kind: str, index: int, duration: float) -> None:
        if kind == "join":
            self.start_member()
            return
        if kind == "grow":
            self.cluster.add_partitions(index)
            return
        if kind == "grow_park":
            first = len(self.cluster.parked)
            for q in range(first, first + index):
                self.cluster.parked[q] = []
            return
        if kind == "coordinator":
            self.cluster.coordinator_down = True
            self.loop.call_later(duration, setattr, self.cluster, "coordinator_down", False)
            return
        name = self.live(index)
        if name is None:
            return
        member = self.cluster.members.get(name)
        if kind == "leave":
            self.stops[name].set()
        elif kind == "kill" and member is not None:
            self.cluster.kill(member)
            self.tasks[name].cancel()
        elif kind == "cut" and member is not None:
            self.cluster.disconnect(member)
            self.loop.call_later(duration, self.cluster.reconnect, member)

    # -- phases -------------------------------------------------------------------------------
    async def produce(self) -> None:
        for event in self.s.events:
            delay = EPOCH + event.at - self.clock.wall()
            if delay > 0:
                await asyncio.sleep(delay)
            headers = (("shop", event.tenant.encode()),) if event.tenant and not event.shopless else ()
            partition = self.partition_of(event.key)
            record = self.cluster.produce(partition, event.key.encode(), event.value, headers)
            self.checker.produced(event, record)

    def partition_of(self, key: str) -> int:
        """An order's partition: the key's hash over the partitions there were when its first event
        was produced; an order stays on its partition when partitions are added (the producer's
        partitioner would move it, and its events would no longer be ordered)."""
        if key not in self._partition_of:
            count = self.cluster.partition_counts[TOPIC]
            self._partition_of[key] = zlib.crc32(key.encode()) % count
        return self._partition_of[key]

    async def lose_and_resync(self) -> None:
        """The vendor loses every order it holds (a restored backup, a reinstalled app), and the
        operator asks for a resync of every order at once (``connector resync --all``)."""
        assert self.s.resync_at is not None
        await asyncio.sleep(max(0.0, EPOCH + self.s.resync_at - self.clock.wall()))
        held = [key for key, (op, _) in self.vendor.orders.items() if op == "upsert"]
        self.lost = self.vendor.tamper(held, [])
        request = Request(self.settings.kafka.group_id, "r-sim", None, None, 0.2, self.clock.wall())
        self.cluster.resync.write(*resync_record(request))

    async def play(self) -> None:
        for op in self.s.ops:
            delay = EPOCH + op.at - self.clock.wall()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.apply(op.kind, op.member, op.duration)

    async def edit_tenants(self) -> None:
        """What operators do to the tenants file while the faults go on (``Schedule.tenant_ops``)."""
        folder, budget = Path(self._folder.name), self.s.knobs.budget
        for op in self.s.tenant_ops:
            await asyncio.sleep(max(0.0, EPOCH + op.at - self.clock.wall()))
            shop = next(s for s in self.shops if s.account == op.tenant)
            if op.kind == "rotate":  # the old key is revoked now; the new one is written later
                shop.key = f"{tenant_key(shop.account)}-r{int(op.at)}"
                self.vendor.keys[shop.account] = shop.key
                self.loop.call_later(op.delay, write_tenants, list(self.shops), budget, folder)
            elif op.kind == "rename":
                shop.aliases.append(shop.name)
                shop.name = f"{shop.name}-r"
                write_tenants(self.shops, budget, folder)
            elif op.kind == "empty":  # a half-written file: refused, the shops stay as they were
                (folder / "tenants.toml").write_text("")
                self.loop.call_later(op.delay, write_tenants, list(self.shops), budget, folder)
            elif op.kind == "add" and all(s.account != f"extra-{op.tenant}" for s in self.shops):
                self.shops.append(Shop(f"extra-{op.tenant}", f"extra-{op.tenant}"))
                write_tenants(self.shops, budget, folder)

    async def dlq_faults(self) -> None:
        for start, end in self.s.dlq_down:
            await asyncio.sleep(max(0.0, EPOCH + start - self.clock.wall()))
            self.cluster.dlq_refusing = True
            await asyncio.sleep(max(0.0, EPOCH + end - self.clock.wall()))
            self.cluster.dlq_refusing = False

    def converged(self) -> bool:
        """Every partition committed to its end, and nothing parked from it still to replay."""
        return not self.pending()

    def pending(self) -> str:
        parts = []
        for tp, log in sorted(self.cluster.logs.items()):
            done, metadata = self.cluster.committed.get(tp, (0, ""))
            if done < len(log):
                parts.append(f"{tp}: committed {done} of {len(log)}")
            meta = decode(metadata).meta
            q = meta.park_partition
            if q is None:  # 0.1.0 did not record it: its index in the layout, modulo
                q = tp.partition % len(self.cluster.parked)
            parked = self.cluster.parked.get(q, [])
            for tenant, start in meta.replay_starts.items():
                names = self.names_of(tenant)
                if start < len(parked) and any(_parked_for(r, tp, names) for r in parked[start:]):
                    parts.append(f"{tp}: {tenant} parked, replayed to {start} of {len(parked)}")
        return "; ".join(parts)

    def parked_now(self, key: str) -> bool:
        """Whether ``key``'s shop is parked on its partition, as the partition's last commit says."""
        produced = self.checker.by_key.get(key)
        if not produced:
            return False
        tp, tenant = produced[0].record.tp, produced[0].event.tenant
        _, metadata = self.cluster.committed.get(tp, (0, ""))
        return bool(self.names_of(tenant) & set(decode(metadata).meta.parked))

    def names_of(self, tenant: str) -> set[str]:
        """Every name the shop called ``tenant`` (now or before) went by."""
        for shop in self.shops:
            names = {shop.name, shop.account, *shop.aliases}
            if tenant in names:
                return names
        return {tenant}


def _parked_for(record: Record, tp: TopicPartition, names: set[str]) -> bool:
    """Whether a parking record was parked from ``tp`` for a shop of one of ``names``."""
    headers = dict(record.headers)
    where = headers.get(H_PARKED_FROM, b"").decode().rsplit("/", 1)[0]
    return where == f"{tp.topic}/{tp.partition}" and headers.get(H_TENANT, b"").decode() in names


def _where(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended: its chain of awaited coroutines."""
    chain, coro = [], task.get_coro()
    while coro is not None and len(chain) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(chain)


async def _run(s: Schedule) -> Result:
    world = World(s)
    result = Result(s.seed, description=s.describe())
    world.cluster.start()
    for _ in range(s.members):
        world.start_member()
    background = [
        world.loop.create_task(world.produce()),
        world.loop.create_task(world.play()),
        world.loop.create_task(world.dlq_faults()),
        world.loop.create_task(world.edit_tenants()),
    ]
    if s.resync_at is not None:
        background.append(world.loop.create_task(world.lose_and_resync()))
    try:
        await asyncio.sleep(s.horizon)
        await asyncio.gather(*background)
        if not world.running():
            world.start_member()  # the autoscaler brings one back
        deadline = world.clock.wall() + LIVENESS_BOUND
        while not world.converged() and world.clock.wall() < deadline:
            await asyncio.sleep(1.0)
        if not world.converged():
            world.checker.fail(
                f"not converged {LIVENESS_BOUND:g}s after the last fault: {world.pending()}; running "
                f"{world.running()}"
            )
        result.stats["converged_after_s"] = round(world.clock.wall() - EPOCH - s.horizon, 1)
        world.checker.check_members(
            {n: world.pipelines[n] for n in world.running() if world.pipelines.get(n)}
        )
        if s.audit:
            await _drift(world)
        if s.resync_at is not None:
            await _resynced(world)
        for name in world.running():
            world.stops[name].set()
        stopping = [t for t in world.tasks.values() if not t.done()]
        if stopping:
            _, late = await asyncio.wait(stopping, timeout=60)
            for task in late:
                where = _where(task)
                world.checker.fail(f"{task.get_name()} did not stop within 60s of SIGTERM (at {where})")
                task.cancel()
        await world.vendor.settle()
        world.checker.final()
        world.checker.check_circuits(
            {n: p for n, p in world.pipelines.items() if p is not None},
            world.settings.delivery.max_retry_after_seconds,
        )
    finally:
        for task in [*background, *world.tasks.values()]:
            task.cancel()
        await asyncio.gather(*background, *world.tasks.values(), return_exceptions=True)
        await world.cluster.close()
        world.close()
    for text in world.crashes:
        world.checker.fail(text)
    result.violations = world.checker.violations
    v = world.vendor
    result.stats.update(
        requests=v.stats.requests,
        timeouts=v.stats.timeouts,
        writes=len(v.writes),
        statuses=dict(sorted(v.stats.statuses.items())),
        rebalances=world.cluster.rebalances,
        expulsions=world.cluster.expulsions,
        dead_letters=len(world.cluster.dead_letters),
        parked=len(world.cluster.park_appends),
        commits=len(world.cluster.commits),
        tampered=len(world.tampered),
        lost=len(world.lost),
        virtual_s=round(world.clock.wall() - EPOCH, 1),
    )
    trace = [(round(w.at, 6), w.key, w.op, w.state, w.member) for w in v.writes]
    trace += [(round(c.at, 6), str(c.tp), c.offset, c.member) for c in world.cluster.commits]  # type: ignore[misc]
    result.digest = hashlib.blake2b(repr(trace).encode(), digest_size=8).hexdigest()
    return result


AUDIT_BOUND = 120.0
"""Virtual seconds within which a drift at the vendor is found and repaired once every fault is over:
the audits' bound (max(``audit.min_interval_seconds``, kept orders x (1 / min(share x budget, reads a
second) + 1 / spare ticks a second))) for the schedules' few dozen orders at their smallest budget,
5/s: about 50 x (0.4 + 0.2) = 30 s, plus a repair's settle time and margin."""


async def _drift(world: World) -> None:
    """The vendor, by itself, loses some orders and reverts some to an older version; the members'
    audits must find every one they delivered and send its newest state again within
    :data:`AUDIT_BOUND` (the audits' repair is on for missing and older by default)."""

    def epoch(member: str, tp: TopicPartition) -> int | None:
        m = world.cluster.members.get(member)
        if m is None or member not in world.running() or world.cluster.epochs.get(tp) != m.epochs.get(tp):
            return None
        return m.epochs.get(tp)

    keys = world.checker.auditable(epoch)
    Random(world.s.seed * 7_477 + 3).shuffle(keys)
    done = world.vendor.tamper(keys[:2], keys[2:4])
    world.tampered = done
    at = dict(world.cluster.epochs)
    deadline = world.clock.wall() + AUDIT_BOUND
    while world.clock.wall() < deadline and not all(world.checker.holds_newest(k) for k in done):
        await asyncio.sleep(1.0)
    for key in done:
        tp = TopicPartition(TOPIC, world.partition_of(key))
        if world.cluster.epochs.get(tp) != at.get(tp):
            if not world.checker.holds_newest(key):  # assigned again meanwhile: its audit forgot it
                world.vendor.untamper(key)  # (not covered: the README), and it is not the writes' fault
            continue
        if not world.checker.holds_newest(key):
            world.checker.fail(f"a drift at the vendor not repaired within {AUDIT_BOUND:g}s: {key}")


RESYNC_BOUND = 120.0
"""Virtual seconds after the group converged within which every order the vendor lost is back at its
newest state: the schedules' few dozen orders at their floor share (0.2 of 5/s at the least: one a
second), plus the resync topic's look and a settle time."""


async def _resynced(world: World) -> None:
    """Every order the vendor lost is back where the final check wants it (its newest state, or as
    that check accepts: its newest refused and dead-lettered, ...) within :data:`RESYNC_BOUND` of
    convergence: sent again by the resync, or by the live traffic with a newer state."""
    deadline = world.clock.wall() + RESYNC_BOUND
    while world.clock.wall() < deadline and world.checker.behind(world.lost):
        await asyncio.sleep(1.0)
    for key in world.checker.behind(world.lost):
        if world.parked_now(key) or world.checker.stranger_spent(key):
            # Its shop is still parked there (its resync waits: the README), or a stranger spends
            # its key (429s cut its pace, and the resync goes at its floor of what is left).
            world.vendor.untamper(key)  # judged by the final check as it would have been
            continue
        world.checker.fail(f"an order the vendor lost not resynced within {RESYNC_BOUND:g}s: {key}")


def _virtual_time(_logger: Any, _name: str, event: Any) -> Any:
    """Log lines carry the virtual time since the start of the run (``t``)."""
    with contextlib.suppress(RuntimeError):
        event["t"] = round(asyncio.get_running_loop().time() - EPOCH, 3)
    return event


def run(
    seed: int,
    scale: float = 1.0,
    log_level: str = "ERROR",
    tenants: bool = False,
    debezium: bool = False,
    audit: bool = False,
    resync: bool = False,
) -> Result:
    """Run the schedule of ``seed`` on a fresh virtual-time loop (``tenants``: as many shops;
    ``debezium``: with orders whose events come from Debezium, re-sent after a restart, besides;
    ``audit``: with the read-back audits on; ``resync``: the vendor loses everything mid-run and a
    resync is asked)."""
    schedule = make_schedule(seed, scale, tenants, debezium, audit, resync)
    buffer = io.StringIO()
    logs.configure(log_level, stream=buffer)
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[_virtual_time, *processors])
    try:
        with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(EPOCH)) as runner:
            result = runner.run(_run(schedule))
    except Deadlock as exc:
        result = Result(seed, [f"deadlock: {exc}"], description=schedule.describe())
    finally:
        logs.configure("INFO")
    if API_KEY in buffer.getvalue():
        result.violations.append("an API key appears in the logs")
    result.stats["log"] = buffer.getvalue()
    return result
