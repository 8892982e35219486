"""Random schedules, drawn from a seed: the topology, the settings, the events, and the faults.

Everything is a pure function of the seed, so a failing run is replayed exactly by its seed.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random

from tests.sim.vendor import Fault

TOPIC = "orders"
EPOCH = 1_800_000_000.0  # virtual wall clock at the start of every run (2027-01-15)


@dataclass
class Event:
    """One record the producer appends at ``at``."""

    at: float
    key: str
    kind: str  # valid | invalid (never decodes) | poison (the vendor rejects it)
    value: bytes | None
    op: str = "upsert"  # upsert | delete
    state: str | None = None
    updated_at: float | None = None
    tenant: str = ""  # many tenants: the shop it is for (a ``shop`` header)
    shopless: bool = False  # a delete naming no shop (no header): routed by its key's last shop


@dataclass
class Op:
    """A change at ``at``: join | leave (SIGTERM) | kill (kill -9) | cut (from the broker), grow
    (``member`` partitions added to the topic: every member rejoins, new orders spread over them all),
    coordinator (commits fail for ``duration`` seconds while fetches go on), or grow_park (``member``
    partitions added to the parking topic: members started later see them)."""

    at: float
    kind: str
    member: int = 0
    duration: float = 0.0


@dataclass
class TenantOp:
    """An operator's change of the tenants file at ``at`` (many shops): ``rotate`` (the vendor starts
    refusing the shop's key at ``at``; the new key is written ``delay`` seconds later), ``rename``
    (the shop gets a new name, its old one kept as an alias), ``empty`` (the file is emptied for
    ``delay`` seconds: the reload must be refused), ``add`` (a shop with no events is added)."""

    at: float
    kind: str
    tenant: str
    delay: float = 0.0


@dataclass
class Knobs:
    """The connector settings of this schedule."""

    budget: float
    max_in_flight: int
    timeout: float
    settle: float
    mode: str
    max_unresolved: int
    remember_keys: int
    probe_interval: float
    dead_letter_replaced: bool
    linger: float = 0.0
    linger_lag: int = 5_000
    fetch_records: int = 100  # records a fetch returns at most (small: a slow read, lagging the log)
    park_after: float = 30.0  # many tenants: tenants.park_after_seconds (0: parking off)
    park_max_keys: int = 2_000
    park_replay: int = 1_000
    # Kafka as unkind as the real one (drawn from a stream of their own, see _unkind):
    warmup: int = 10_000  # kafka.warmup_records: small, the warm-up misses what a commit held back
    fetch_gaps: float = 0.0  # chance that a fetch right after a seek returns nothing, or part of it
    fetch_bytes: int = 0  # bytes a fetch returns per partition at most (0: no cap; one record always)
    lookahead: int = 10_000  # kafka.lookahead_records: small, a member often reaches its horizon
    legacy_members: float = 0.0  # chance that a member started speaks the previous release's metadata
    parking_off: float = 0.0  # many shops: chance that a member started runs with park_after_seconds 0

    @property
    def max_held(self) -> int:
        """The held-offsets bound: the same as the unresolved one, the tightest it can be (held
        offsets include every unresolved one), so every schedule drawn before the two were
        separate runs as it did."""
        return self.max_unresolved


@dataclass
class Schedule:
    """Everything one run does."""

    seed: int
    partitions: int
    members: int
    knobs: Knobs
    events: list[Event] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    dlq_down: list[tuple[float, float]] = field(default_factory=list)
    horizon: float = 0.0  # when the last fault ends (relative seconds)
    tenants: list[str] = field(default_factory=list)  # many tenants (empty: the single-shop mode)
    tenant_ops: list[TenantOp] = field(default_factory=list)  # operators editing the tenants file
    audit: bool = False  # the read-back audits on (reads and repairs on spare ticks)
    resync_at: float | None = None  # the vendor loses every order then, and a resync is asked

    def partition_of(self, key: str) -> int:
        """The partition a key is produced to (as a producer's key hash would)."""
        return zlib.crc32(key.encode()) % self.partitions

    def describe(self) -> str:
        """One line: what kind of run this is."""
        kinds = sorted({f.kind for f in self.faults})
        ops = sorted({o.kind for o in self.ops})
        k = self.knobs
        return (
            f"seed={self.seed} partitions={self.partitions} members={self.members} "
            f"events={len(self.events)} budget={k.budget:g}/s in_flight={k.max_in_flight} "
            f"timeout={k.timeout:g}s settle={k.settle:g}s linger={k.linger:g}s@{k.linger_lag} mode={k.mode} "
            f"warmup={k.warmup} lookahead={k.lookahead} fetch_gaps={k.fetch_gaps:g} fetch_bytes={k.fetch_bytes} "
            f"legacy={k.legacy_members:g} parking_off={k.parking_off:g} "
            f"faults={','.join(kinds) or '-'} "
            f"ops={','.join(ops) or '-'} dlq_down={len(self.dlq_down)} horizon={self.horizon:.0f}s"
            + (" audit=1" if self.audit else "")
            + (f" resync@{self.resync_at:.0f}s" if self.resync_at is not None else "")
            + (
                f" debezium_rows={len(rows)}"
                if (rows := {e.key for e in self.events if e.key.startswith("dbz-")})
                else ""
            )
            + (
                f" tenants={len(self.tenants)} park_after={k.park_after:g}s park_max_keys={k.park_max_keys} "
                f"park_replay={k.park_replay} tenant_faults="
                + ",".join(f"{f.kind}@{f.tenant or '*'}" for f in self.faults)
                + " tenant_ops="
                + (",".join(f"{o.kind}@{o.tenant}" for o in self.tenant_ops) or "-")
                if self.tenants
                else ""
            )
        )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _body(key: str, state: str, updated_at: float | None) -> dict[str, object]:
    body: dict[str, object] = {"external_id": key, "name": f"#{key}", "tags": [state]}
    if updated_at is not None:
        body["updated_at"] = _iso(updated_at)
    return body


def _envelope(event_type: str, order: dict[str, object], at: float) -> bytes:
    return json.dumps(
        {"event_id": f"e{at}", "event_type": event_type, "occurred_at": _iso(at), "order": order}
    ).encode()


def make_schedule(
    seed: int,
    scale: float = 1.0,
    tenants: bool = False,
    debezium: bool = False,
    audit: bool = False,
    resync: bool = False,
) -> Schedule:
    """The schedule of ``seed``; ``scale`` > 1 makes longer runs with more events (soak). With
    ``tenants``, the same schedule served as several shops (see :func:`_as_tenants`); with
    ``debezium``, the same schedule with orders whose events come from Debezium besides (see
    :func:`_debezium`): a schedule without it is the one it always was. With ``audit``, the same
    schedule with the read-back audits on (off otherwise, so that the pinned seeds keep their runs).
    With ``resync``, the vendor loses every order it holds at a time drawn among the faults, and a
    resync of every order is asked then."""
    s = _schedule(seed, scale)
    s.audit = audit
    if resync:
        s.resync_at = Random(seed * 3_571 + 17).uniform(0.3, 0.6) * s.horizon
    if tenants:
        _as_tenants(s, Random(seed * 104_729 + 31), scale)
    _unkind(s, Random(seed * 15_485_863 + 29))
    if debezium:
        _debezium(s, Random(seed * 2_654_435 + 61))
    return s


def _debezium(s: Schedule, rng: Random) -> None:
    """Orders whose events come as Debezium writes them at its defaults, once the
    mapping stage has rewritten them as the connector's own envelope (what the pipeline reads): a row
    updated a few times (ordered by ``source.ts_ms``), deleted (the delete ordered at its commit time;
    at PostgreSQL's default replica identity its row holds the key only: no ``updated_at``, and no shop
    to route by), its tombstone (no shop either), then, after a restart of Kafka Connect, a suffix of
    all that sent again byte for byte; sometimes with ``REPLICA IDENTITY FULL`` (the delete keeps the
    row's time and shop), without tombstones, or the row inserted again later. Drawn from a stream of
    their own, on orders of their own, after every other draw."""
    span = max(5.0, s.horizon * 0.7)
    rows = rng.randint(1, 3)
    for i in range(rows):
        key = f"dbz-{s.seed % 1000}-{i}"
        tenant = rng.choice(s.tenants) if s.tenants else ""
        full, tombstones = rng.random() < 0.3, rng.random() < 0.85
        t = rng.uniform(0, span * 0.6)
        sequence: list[Event] = []
        for n in range(rng.randint(1, 3)):
            t += rng.uniform(0.05, 3.0)
            state = f"{key}-v{n}"
            value = _envelope("order.updated", _body(key, state, EPOCH + t), EPOCH + t)
            sequence.append(Event(t, key, "valid", value, "upsert", state, EPOCH + t, tenant))
        t += rng.uniform(0.05, 3.0)
        # The mapping stage writes a delete as its key alone, at the later of the row's updated_at
        # and the change's commit time (``to_native``): the same at either replica identity, which
        # decides only whether the row names its shop.
        deleted_at = EPOCH + t
        value = _envelope("order.deleted", {"external_id": key}, deleted_at)
        sequence.append(Event(t, key, "valid", value, "delete", None, deleted_at, tenant, shopless=not full))
        if tombstones:
            t += rng.uniform(0.0, 0.2)
            sequence.append(Event(t, key, "valid", None, "delete", None, None, tenant, shopless=True))
        t += rng.uniform(1.0, span * 0.3)  # Kafka Connect restarts: it sends again from its last flush
        again = []
        for e in sequence[rng.randrange(len(sequence)) :]:
            t += rng.uniform(0.0, 0.5)
            again.append(Event(t, e.key, e.kind, e.value, e.op, e.state, e.updated_at, e.tenant, e.shopless))
        sequence += again
        if rng.random() < 0.2:  # the row is inserted again, after all that
            t += rng.uniform(0.5, 5.0)
            state = f"{key}-again"
            value = _envelope("order.created", _body(key, state, EPOCH + t), EPOCH + t)
            sequence.append(Event(t, key, "valid", value, "upsert", state, EPOCH + t, tenant))
        s.events += sequence
        s.horizon = max(s.horizon, t + 1.0)
    s.events.sort(key=lambda e: e.at)
    if s.knobs.remember_keys < 100_000:  # the bound is every order's key: theirs too
        s.knobs.remember_keys += rows


def _unkind(s: Schedule, rng: Random) -> None:
    """Kafka as it really behaves, in some schedules: a warm-up shorter than what a commit held back,
    fetches after a seek that return nothing or part of what is there (a fetch slower than its wait),
    fetches capped by size, and partitions added to the topic while running."""
    k = s.knobs
    k.warmup = rng.choice((10_000, 10_000, 3, 20))
    k.fetch_gaps = rng.choice((0.0, 0.0, 0.3, 0.7))
    k.fetch_bytes = rng.choice((0, 0, 300, 2_000))
    k.lookahead = rng.choice((10_000, 10_000, 10_000, 4, 12))
    k.legacy_members = rng.choice((0.0, 0.0, 0.0, 0.5))
    k.parking_off = rng.choice((0.0, 0.0, 0.0, 0.5)) if s.tenants else 0.0
    if rng.random() < 0.15:
        s.ops.append(Op(rng.uniform(0, s.horizon), "grow", rng.randint(1, 2)))
    for _ in range(rng.choice((0, 0, 1, 3))):  # the group coordinator moves: commits fail for a while
        s.ops.append(Op(rng.uniform(0, s.horizon), "coordinator", 0, rng.uniform(1.0, 8.0)))
    if s.tenants and rng.random() < 0.15:  # the parking topic grown, as the README allows
        s.ops.append(Op(rng.uniform(0, s.horizon), "grow_park", rng.randint(1, 3)))
    s.ops.sort(key=lambda o: o.at)


def _as_tenants(s: Schedule, rng: Random, scale: float) -> None:
    """Many shops, each order belonging to one, routed by a ``shop`` header; most faults hit one shop
    only, and often one shop's API is down (or its key refused) for long enough to be parked."""
    s.tenants = [f"shop{i}" for i in range(rng.randint(2, 4))]
    keys = sorted({e.key for e in s.events}, key=lambda k: int(k.rsplit("-", 1)[1]))
    owner = {key: s.tenants[i % len(s.tenants)] for i, key in enumerate(keys)}
    for event in s.events:
        event.tenant = owner[event.key]
    for fault in s.faults:
        fault.tenant = rng.choice([*s.tenants, *s.tenants, ""])
    if rng.random() < 0.7:
        start = rng.uniform(0, max(1.0, s.horizon * 0.5))
        kind = rng.choice(("outage", "outage", "auth", "refused"))
        length = rng.uniform(20, 90) * scale
        s.faults.append(Fault(kind, EPOCH + start, EPOCH + start + length, tenant=rng.choice(s.tenants)))
        s.horizon = max(s.horizon, start + length)
    _tenant_ops(s, Random(s.seed * 31_337 + 7))
    k = s.knobs
    k.park_after = rng.choice((1.0, 3.0, 8.0))
    k.park_max_keys = rng.choice((2, 1_000))
    k.park_replay = rng.choice((1, 2, 50))
    k.linger = 0.0  # a linger delays a healthy shop on purpose: the isolation bound leaves it out
    _hog(s, Random(s.seed * 7_919 + 29), scale)


def _hog(s: Schedule, rng: Random, scale: float) -> None:
    """Sometimes another client takes nearly all of one shop's key for a few seconds while the shop
    has a backlog: nearly every call of the shop draws a 429 (drawn from a stream of its own, so
    every schedule drawn before it existed is unchanged when it does not happen)."""
    if rng.random() >= 0.35:
        return
    down = {f.tenant for f in s.faults if f.tenant and f.kind != "stranger"}
    shops = [t for t in s.tenants if t not in down] or s.tenants
    shop = rng.choice(shops)
    start = rng.uniform(0, max(1.0, s.horizon * 0.5))
    length = rng.uniform(5, 20) * scale
    s.faults.append(
        Fault("stranger", EPOCH + start, EPOCH + start + length, rng.uniform(0.9, 0.98), tenant=shop)
    )
    base = len({e.key for e in s.events})
    for j in range(rng.randint(10, int(30 * scale))):
        key = f"ord-{s.seed % 1000}-{base + 1000 + j}"
        at = start + rng.uniform(0, 1.0)
        updated_at = EPOCH + at - 50
        value = _envelope("order.updated", _body(key, f"h{j}", updated_at), EPOCH + at)
        s.events.append(Event(at, key, "valid", value, "upsert", f"h{j}", updated_at, tenant=shop))
    s.events.sort(key=lambda e: e.at)
    s.horizon = max(s.horizon, start + length)
    # Stale events are recognised while every order's mark is remembered (see _schedule).
    s.knobs.remember_keys = max(s.knobs.remember_keys, len({e.key for e in s.events}))


def _tenant_ops(s: Schedule, rng: Random) -> None:
    """Operators editing the tenants file while faults go on, in some schedules."""
    if rng.random() < 0.6:
        return
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("rotate", "rotate", "rename", "empty", "add"))
        at = rng.uniform(0, max(1.0, s.horizon))
        delay = rng.uniform(1.0, 20.0)
        tenant = rng.choice(s.tenants)
        if kind == "rename" and any(o.kind == "rename" and o.tenant == tenant for o in s.tenant_ops):
            continue
        s.tenant_ops.append(TenantOp(at, kind, tenant, delay))
        s.horizon = max(s.horizon, at + delay)
    s.tenant_ops.sort(key=lambda o: o.at)


def _schedule(seed: int, scale: float) -> Schedule:
    rng = Random(seed)
    knobs = Knobs(
        budget=rng.choice((2.0, 5.0, 5.0, 10.0, 20.0)),
        max_in_flight=rng.choice((1, 2, 4, 8)),
        timeout=rng.choice((1.0, 2.0, 4.0)),
        settle=0.0,
        mode=rng.choice(("upsert", "upsert", "upsert", "create_update")),
        max_unresolved=rng.choice((8, 50, 1000)),
        remember_keys=100_000,
        probe_interval=rng.choice((1.0, 3.0)),
        dead_letter_replaced=rng.random() < 0.15,
    )
    knobs.settle = knobs.timeout * rng.choice((1.5, 2.0, 3.0))
    # Drawn from a stream of their own, so that every schedule drawn before they existed is unchanged.
    own = Random(seed * 7_919 + 17)
    knobs.linger, knobs.linger_lag = own.choice((0.0, 2.0, 10.0, 60.0)), own.choice((1, 3, 5_000))
    knobs.fetch_records = own.choice((100, 100, 3))
    s = Schedule(seed, partitions=rng.randint(1, 4), members=rng.randint(1, 3), knobs=knobs)
    produce_for = rng.uniform(5, 40) * scale
    keys = [f"ord-{seed % 1000}-{i}" for i in range(rng.randint(2, int(12 * scale)))]
    # Stale events are recognised while their order's last delivered version is remembered: the
    # bound is the number of keys here (eviction itself is unit-tested).
    knobs.remember_keys = rng.choice((len(keys), 100_000))
    timed = {k: rng.random() < 0.7 for k in keys}
    states: dict[str, list[str]] = {k: [] for k in keys}
    stamp: dict[str, float] = {}
    last: dict[str, Event] = {}
    n_events = rng.randint(10, int(80 * scale))
    t = 0.0
    for i in range(n_events):
        t += rng.expovariate(n_events / produce_for) if rng.random() < 0.7 else 0.0  # bursts
        key = rng.choice(keys)
        roll = rng.random()
        at = EPOCH + t
        if roll < 0.06:
            s.events.append(
                Event(t, key, "invalid", b'{"event_type": "order.updated", "order": {"tags": 1}}')
            )
            continue
        if roll < 0.08:
            s.events.append(Event(t, key, "invalid", b"\xff not json"))
            continue
        if roll < 0.18 and key in last:
            e = last[key]
            s.events.append(Event(t, key, e.kind, e.value, e.op, e.state, e.updated_at))
            continue
        updated_at = None
        if timed[key]:
            updated_at = stamp.get(key, at - 100) + rng.uniform(0.001, 2.0)
            if roll < 0.25 and key in stamp:  # arrives late: older than what was already sent
                updated_at = stamp[key] - rng.uniform(0.001, 5.0)
            stamp[key] = max(stamp.get(key, 0.0), updated_at)
        if roll < 0.31:
            if timed[key] or rng.random() < 0.5:
                order: dict[str, object] = {"external_id": key}
                if updated_at is not None:
                    order["updated_at"] = _iso(updated_at)
                value: bytes | None = _envelope("order.deleted", order, at)
            else:
                value, updated_at = None, None  # a tombstone: ordered by offset only
            last[key] = Event(t, key, "valid", value, "delete", None, updated_at)
            s.events.append(last[key])
            continue
        kind = "valid"
        if roll < 0.34:
            state, kind = f"poison-{i}", "poison"
        elif roll < 0.44 and states[key] and not timed[key]:
            state = rng.choice(states[key])  # a revert: a payload seen before, byte for byte
        else:
            state = f"s{i}"
        if kind == "valid":
            states[key].append(state)
        value = _envelope("order.updated", _body(key, state, updated_at), at)
        last[key] = Event(t, key, kind, value, "upsert", state, updated_at)
        s.events.append(last[key])
    horizon = produce_for + rng.uniform(0, 20) * scale
    for _ in range(rng.randint(0, int(4 * scale))):
        start = rng.uniform(0, horizon)
        kind = rng.choice(
            ("outage", "refused", "auth", "endpoint", "errors", "errors", "slow", "stranger", "forbid_delete")
        )
        length = rng.uniform(2, 40)
        level = rng.uniform(0.2, 0.7)
        retry_after = rng.choice((None, None, 1.0, 3.0)) if kind == "stranger" else None
        if kind == "forbid_delete" and rng.random() < 0.5:
            length = float("inf")  # the key never gets the scope: every delete is refused for good
        s.faults.append(Fault(kind, EPOCH + start, EPOCH + start + length, level, retry_after))
    for _ in range(rng.randint(0, int(4 * scale))):
        at = rng.uniform(0, horizon)
        kind = rng.choice(("join", "join", "leave", "kill", "kill", "cut"))
        s.ops.append(Op(at, kind, rng.randrange(8), rng.uniform(1, 25) if kind == "cut" else 0.0))
    s.ops.sort(key=lambda o: o.at)
    if rng.random() < 0.2:
        start = rng.uniform(0, horizon)
        s.dlq_down.append((start, start + rng.uniform(1, 30)))
    ends = (
        [f.end - EPOCH for f in s.faults if f.end != float("inf")]
        + [o.at + o.duration for o in s.ops]
        + [e for _, e in s.dlq_down]
    )
    s.horizon = max([horizon, *ends])
    return s
