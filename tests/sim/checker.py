"""The invariants (the README's "Guarantees", by their numbers there), checked on one simulated run.

Online, as things happen: every commit is checked against what the vendor and the dead-letter topic
held at that moment (no committed offset passes an event that is not resolved). After quiescence (every
member stopped, every late write landed): the vendor's final state, the order and concurrency of
writes per order, the budget in every one-second window, the dead letters, memory bounds and secrets.
Every check names what it saw, so a failing seed explains itself.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from connector.constants import H_PARKED_FROM
from connector.metadata import decode
from connector.structs import Record, TopicPartition, Version
from tests.sim.cluster import CommitEvent, SimCluster
from tests.sim.schedule import Event, Schedule
from tests.sim.vendor import SimVendor, Write


@dataclass
class Produced:
    """An event as it landed in the log."""

    event: Event
    record: Record

    @property
    def version(self) -> Version:
        return Version(self.event.updated_at, self.record.tp, self.record.offset)

    @property
    def where(self) -> str:
        return f"{self.record.tp}@{self.record.offset}"

    def describe(self) -> str:
        e = self.event
        stamp = f" updated_at={e.updated_at:.3f}" if e.updated_at is not None else ""
        return f"{self.where} {e.key} {e.kind} {e.op} {e.state}{stamp}"


class Checker:
    """Collects violations of one run."""

    def __init__(self, schedule: Schedule, cluster: SimCluster, vendor: SimVendor, secret: str) -> None:
        self.schedule = schedule
        self.cluster = cluster
        self.vendor = vendor
        self.secret = secret
        self.violations: list[str] = []
        self.logs: dict[TopicPartition, list[Produced]] = defaultdict(list)
        self.by_key: dict[str, list[Produced]] = defaultdict(list)
        self._checked: dict[TopicPartition, int] = {}
        self._applied: dict[tuple[TopicPartition, int], float] = {}
        self._writes_seen = 0

    def fail(self, text: str) -> None:
        """Record a violation (the first few hundred)."""
        if len(self.violations) < 200:
            self.violations.append(text)

    def produced(self, event: Event, record: Record) -> None:
        """The producer appended ``event`` as ``record``."""
        p = Produced(event, record)
        self.logs[record.tp].append(p)
        if event.kind != "invalid":
            self.by_key[event.key].append(p)

    # -- helpers ------------------------------------------------------------------------------
    def _sync_writes(self) -> None:
        writes = self.vendor.writes
        for w in writes[self._writes_seen :]:
            if w.event is not None:
                self._applied.setdefault(w.event, w.at)
        self._writes_seen = len(writes)

    def _dead_lettered(self, p: Produced, by: float) -> bool:
        tp, off = p.record.tp, p.record.offset
        for d in self.cluster.dead_letters:
            if d.at > by:
                break
            h = dict(d.headers)
            if (
                h.get("__connect.errors.topic") == tp.topic.encode()
                and h.get("__connect.errors.partition") == str(tp.partition).encode()
                and h.get("__connect.errors.offset") == str(off).encode()
            ):
                return True
        return False

    def _payload_dead_lettered(self, p: Produced, by: float) -> bool:
        """Whether an event of ``p``'s order with the same payload was dead-lettered by ``by``."""
        return any(_same_payload(p, q) and self._dead_lettered(q, by) for q in self.by_key[p.event.key])

    def _vendor_state_at(self, key: str, at: float) -> tuple[str, str | None] | None:
        state = None
        for w in self.vendor.writes:
            if w.at > at:
                break
            if w.key == key:
                state = (w.op, w.state)
        return state

    def _rejected(self, p: Produced) -> bool:
        """Whether the vendor refuses ``p`` for good: a poison event, or a delete while deletes are
        forbidden (a 403 for that operation only)."""
        if p.event.kind == "poison":
            return True
        forbidden = any(
            f.kind == "forbid_delete" and f.tenant in ("", p.event.tenant) for f in self.schedule.faults
        )
        return forbidden and p.event.op == "delete"

    @staticmethod
    def _same_state(p: Produced, state: tuple[str, str | None] | None) -> bool:
        if p.event.op == "delete":
            return state is None or state[0] == "delete"
        return state == ("upsert", p.event.state)

    # -- online: commits ----------------------------------------------------------------------
    def on_commit(self, c: CommitEvent) -> None:
        """No committed offset passes an event that is not resolved (guarantees 1, 2)."""
        start = self._checked.get(c.tp, 0)
        if c.offset <= start:
            self._checked[c.tp] = max(start, 0)
            return
        self._sync_writes()
        log = self.logs[c.tp]
        for p in log[start : c.offset]:
            if not self._covered(p, c):
                self.fail(
                    f"t={c.at - _epoch():.3f} {c.member} committed {c.tp}@{c.offset} past unresolved "
                    f"{p.describe()}"
                )
        self._checked[c.tp] = c.offset

    def _parked(self, p: Produced, by: float, member: str) -> bool:
        """Whether ``member`` had ``p`` acknowledged on the parking topic by ``by``."""
        where = f"{p.record.tp.topic}/{p.record.tp.partition}/{p.record.offset}".encode()
        for a in self.cluster.park_appends:
            if a.at > by:
                break
            if a.member == member and dict(a.record.headers).get(H_PARKED_FROM) == where:
                return True
        return False

    def _covered(self, p: Produced, c: CommitEvent) -> bool:
        if self._dead_lettered(p, c.at):
            return True
        if self.schedule.tenants and any(
            _same_payload(p, q) and self._parked(q, c.at, c.member) for q in self.by_key[p.event.key]
        ):
            return True  # on the parking topic (or identical to one there): replayed from there
        if p.event.kind == "invalid":
            return False
        if self._rejected(p) and self._payload_dead_lettered(p, c.at):
            return True  # skipped as identical to an event the vendor refused, dead-lettered
        for q in self.by_key[p.event.key]:
            if q.version.older_than(p.version):
                continue
            if q.record.tp == c.tp and q.record.offset >= c.offset:
                return True  # not committed: read again by the partition's next owner
            applied = self._applied.get((q.record.tp, q.record.offset))
            if applied is not None and applied <= c.at:
                return True
            if self.schedule.tenants and self._parked(q, c.at, c.member):
                return True  # replaced by a newer event now on the parking topic
            if q is not p and self._rejected(q) and self._dead_lettered(q, c.at):
                return True  # replaced by a newer event the vendor refused, itself dead-lettered
            if q is not p and self._same_state(q, self._vendor_state_at(q.event.key, c.at)):
                return True  # replaced by a newer event, itself skipped as what the vendor holds
        return self._same_state(p, self._vendor_state_at(p.event.key, c.at))  # skipped as identical

    # -- after quiescence ---------------------------------------------------------------------
    def newest(self, key: str, unroutable: bool = False) -> Produced | None:
        """The event of ``key`` that must win: latest by ``updated_at``, else by offset. An event with
        the payload of the newest so far is that state again: the state stands for both
        (``Version.joined``), so a tombstone after a delete keeps the delete's time, and an update sent
        again after both (Debezium after a restart) is older, not the newest. Leaves out a delete
        naming no shop that could not be routed (:meth:`_unroutable`), unless ``unroutable``: a
        member that could not route it dead-letters it, and the next owner of its partition, having
        re-read its order's last event, may route it and deliver it too."""
        best: Produced | None = None
        stands: Version | None = None
        for p in sorted(self.by_key[key], key=lambda q: (q.record.tp, q.record.offset)):
            if not unroutable and self._unroutable(p):
                continue
            if best is None or stands is None:
                best, stands = p, p.version
            elif p.version.older_than(stands):
                continue
            elif _same_payload(p, best):
                stands = stands.joined(p.version)
            else:
                best, stands = p, p.version
        return best

    def _unroutable(self, p: Produced) -> bool:
        """Whether ``p`` is a delete naming no shop (many shops) that was dead-lettered, stage route,
        where that is the documented bound: its key's last shop is re-learnt only as far as the
        warm-up re-reads (``kafka.warmup_records``), short in some schedules."""
        if not p.event.shopless or self.schedule.knobs.warmup >= 10_000:
            return False
        end = self.cluster.dead_letters[-1].at if self.cluster.dead_letters else float("inf")
        return self._dead_lettered(p, end) and self._stage(p) == "route"

    def _stage(self, p: Produced) -> str:
        for d in self.cluster.dead_letters:
            h = dict(d.headers)
            if (
                h.get("__connect.errors.offset") == str(p.record.offset).encode()
                and h.get("__connect.errors.partition") == str(p.record.partition).encode()
            ):
                return h.get("__connector.stage", b"").decode()
        return ""

    def holds_newest(self, key: str) -> bool:
        """Whether the vendor holds ``key``'s newest state now."""
        want = self.newest(key)
        return want is not None and self._same_state(want, self.vendor.orders.get(key))

    def auditable(self, epoch: Callable[[str, TopicPartition], int | None]) -> list[str]:
        """The orders whose read-back audit a drift at the vendor must be found by: the vendor holds
        their newest state (an update, none of the order's events dead-lettered), last written by a
        member in the assignment of the partition it still has (``epoch``: a running member's
        current epoch of a partition, None when it does not own it): that member delivered it, so its
        audit keeps it. A previous owner's deliveries are not known to the member that owns the
        partition now (the README: what the audits do not cover). Not those of a shop whose key a
        stranger spends: its pace is cut, and the audits wait for spare ticks."""
        self._sync_writes()
        last: dict[str, Write] = {}
        for write in self.vendor.writes:
            last[write.key] = write
        end = float("inf")
        found = []
        for key in sorted(self.by_key):
            want = self.newest(key)
            w = last.get(key)
            if want is None or w is None or w.event is None or want.event.op == "delete":
                continue
            if self._rejected(want) or any(self._dead_lettered(p, end) for p in self.by_key[key]):
                continue
            if any(
                f.kind == "stranger" and f.tenant in ("", want.event.tenant) for f in self.schedule.faults
            ):
                continue  # 429s cut its pace: no spare tick for minutes (the audits' bound needs them)
            if self.holds_newest(key) and epoch(w.member, w.event[0]) == w.epoch:
                found.append(key)
        return found

    def stranger_spent(self, key: str) -> bool:
        """Whether someone else spends the key of ``key``'s shop (its pace is cut by 429s)."""
        tenant = self.by_key[key][0].event.tenant if self.by_key.get(key) else ""
        return any(f.kind == "stranger" and f.tenant in ("", tenant) for f in self.schedule.faults)

    def behind(self, keys: list[str]) -> list[str]:
        """Those of ``keys`` whose copy at the vendor the final check would not accept now (a
        resync's run waits for none to be left)."""
        self._sync_writes()
        end = self.cluster.dead_letters[-1].at if self.cluster.dead_letters else float("inf")
        return [key for key in sorted(keys) if key in self.by_key and self._judge(key, end) is not None]

    def _judge(self, key: str, end: float) -> str | None:
        """What is wrong with the vendor's copy of ``key`` (None: nothing)."""
        want = self.newest(key)
        assert want is not None
        held = self.vendor.orders.get(key)
        if self._rejected(want) and self._payload_dead_lettered(want, end):
            return None  # the vendor refused the newest state: it is on the dead-letter topic
        if want.event.kind == "poison":
            return f"newest event is rejected by the vendor but not dead-lettered: {want.describe()}"
        if self._same_state(want, held) or self._late_and_forgotten(want, held):
            return None
        routed = self.newest(key, unroutable=True)  # one that could not be routed by one member
        if routed is not None and self._same_state(routed, held):  # may be by a later owner
            return None
        return f"vendor holds {held} for {key}, newest is {want.describe()}"

    def final(self) -> None:
        """Every check that needs the run to be over."""
        self._sync_writes()
        end = self.cluster.dead_letters[-1].at if self.cluster.dead_letters else float("inf")
        for key in sorted(self.by_key):
            wrong = self._judge(key, end)
            if wrong is not None:
                self.fail(wrong)
        for _, log in sorted(self.logs.items()):
            for p in log:
                dead = self._dead_lettered(p, end)
                if p.event.kind == "invalid" and not dead:
                    self.fail(f"invalid event not dead-lettered: {p.describe()}")
                if p.event.kind == "valid" and dead and not self._rejected(p) and not self._unroutable(p):
                    self.fail(f"valid event dead-lettered: {p.describe()}: {self._reason(p)}")
        self._check_writes()
        self._check_horizon()
        self._check_budget()
        if self.schedule.tenants and not self.schedule.knobs.parking_off:
            self._check_isolation()  # a member with parking off lets a failing shop hold others back
        orders = [text for key, text in self.vendor.overlaps if key in self.by_key]  # not the read probe
        for text in orders[:5]:
            self.fail(f"two requests for one order at once: {text}")
        for d in self.cluster.dead_letters:
            if any(self.secret.encode() in v for _, v in d.headers):
                self.fail("the API key appears in a dead-letter header")

    def isolation_bound(self, tp: TopicPartition) -> float:
        """Seconds within which a healthy shop's event is committed while another shop fails: the
        failing shop is parked after ``park_after`` (plus its calls in flight, a timeout), a shop that
        is slow but served may hold the partition for a settle time, a backoff and a probe, and the
        partition's own orders take their budget."""
        k = self.schedule.knobs
        keys = {p.event.key for p in self.logs[tp]}
        return (
            k.park_after + 2 * k.timeout + k.settle + 5.0 + k.probe_interval + 10.0 + 2 * len(keys) / k.budget
        )

    def _check_isolation(self) -> None:
        """Many shops (guarantee 11): an event of a shop whose API never failed is committed
        within :meth:`isolation_bound` of being produced, whatever the other shops' APIs do, unless
        something every shop shares was disrupted meanwhile (a member joining, leaving, dying or cut
        off; the dead-letter topic down; a fault of every shop's API)."""
        s, k = self.schedule, self.schedule.knobs
        failing = {f.tenant for f in s.faults if f.tenant} | {
            o.tenant for o in s.tenant_ops if o.kind == "rotate"
        }
        shared = [(o.at, o.at + o.duration + 30.0 + k.settle) for o in s.ops]
        shared += [(a, b + 10.0) for a, b in s.dlq_down]
        shared += [(f.start - _epoch(), f.end - _epoch() + k.settle + 10.0) for f in s.faults if not f.tenant]
        first_commit: dict[TopicPartition, list[CommitEvent]] = defaultdict(list)
        for c in self.cluster.commits:
            first_commit[c.tp].append(c)
        for tp, log in sorted(self.logs.items()):
            bound = self.isolation_bound(tp)
            for p in log:
                t = p.event.at
                if p.event.tenant in failing or any(a < t + bound and b > t - 1.0 for a, b in shared):
                    continue
                done = next((c.at for c in first_commit[tp] if c.offset > p.record.offset), float("inf"))
                if done > _epoch() + t + bound:
                    when = "never" if done == float("inf") else f"at t={done - _epoch():.3f}"
                    self.fail(
                        f"isolation: {p.describe()} of healthy {p.event.tenant}, produced t={t:.3f}, "
                        f"committed {when}, bound {bound:.0f}s (failing: {', '.join(sorted(failing))})"
                    )
                    return

    def _reason(self, p: Produced) -> str:
        for d in self.cluster.dead_letters:
            h = dict(d.headers)
            if (
                h.get("__connect.errors.offset") == str(p.record.offset).encode()
                and h.get("__connect.errors.partition") == str(p.record.partition).encode()
            ):
                return h.get("__connect.errors.exception.message", b"").decode()[:200]
        return "?"

    def _check_writes(self) -> None:
        """Per order: writes of an older partition owner never land after a newer owner's, and within
        one owner an older state is never applied after a newer one (late writes included). A delete
        after a newer delete is the same state, deleted (the connector joins their versions, and may
        send either): many-shop seed 4,678 sends a parked delete after a newer delete of its order.
        So is an upsert with the same payload and ``updated_at`` as the newer one (an identical event
        earlier in the log): a resync sends its order's newest record up to where it read, and the
        live traffic skips a later identical one (many-shop seed 144 with a resync)."""
        events = {(p.record.tp, p.record.offset): p for ps in self.by_key.values() for p in ps}
        last: dict[str, tuple[Write, Produced | None]] = {}
        for w in self.vendor.writes:
            p = events.get(w.event) if w.event else None
            prev = last.get(w.key)
            if prev is not None:
                pw, pp = prev
                if w.epoch < pw.epoch:
                    self.fail(
                        f"t={w.at - _epoch():.3f} {w.key}: a write of epoch {w.epoch} ({w.member}, sent "
                        f"t={w.sent_at - _epoch():.3f}) landed after one of epoch {pw.epoch} ({pw.member})"
                    )
                elif (
                    p is not None
                    and pp is not None
                    and p.version.older_than(pp.version)
                    and not (p.event.op == "delete" and pp.event.op == "delete")
                    and not (_same_payload(p, pp) and p.version.updated_at == pp.version.updated_at)
                    and not self._late(p, pp)
                    and not (w.epoch > pw.epoch and self.cluster.members[pw.member].legacy)
                ):
                    self.fail(
                        f"t={w.at - _epoch():.3f} {w.key}: {p.describe()} applied after newer "
                        f"{pp.describe()} (epoch {w.epoch}, {w.member}, sent t={w.sent_at - _epoch():.3f})"
                    )
            last[w.key] = (w, p)

    def _late(self, p: Produced, newer: Produced) -> bool:
        """Whether ``p`` arrived late: after ``newer`` in its partition, with an older version. Such
        an event is recognised as stale only while ``newer`` is remembered (README: within
        ``kafka.warmup_records`` before the committed offset, after a rebalance); the schedules with
        a short warm-up (``Knobs.warmup``) are where it may be forgotten."""
        return (
            self.schedule.knobs.warmup < 10_000
            and p.record.tp == newer.record.tp
            and p.record.offset > newer.record.offset
            and p.version.older_than(newer.version)
        )

    def _late_and_forgotten(self, want: Produced, held: tuple[str, str | None] | None) -> bool:
        """Whether the vendor holds the state of an event that arrived late after ``want``."""
        return any(self._late(p, want) and self._same_state(p, held) for p in self.by_key[want.event.key])

    def _check_horizon(self) -> None:
        """Whatever a member sends for a partition lies before ``kafka.lookahead_records`` past the read
        position its last commit of it announced (``read_to``): how far its successor reads ahead
        before sending, so that no older state follows one this member sent (``docs/design.md``,
        "Partitions")."""
        ahead = self.schedule.knobs.lookahead
        announced: dict[tuple[str, TopicPartition], list[tuple[float, int]]] = defaultdict(list)
        for c in self.cluster.commits:
            read_to = decode(c.metadata).meta.read_to
            if read_to is not None and not self.cluster.members[c.member].legacy:
                announced[(c.member, c.tp)].append((c.at, read_to))
        for w in self.vendor.writes:
            if w.event is None:
                continue
            tp, offset = w.event
            before = [r for at, r in announced[(w.member, tp)] if at <= w.sent_at]
            if before and offset >= before[-1] + ahead:
                self.fail(
                    f"t={w.sent_at - _epoch():.3f} {w.member} sent {tp}@{offset} past its horizon: its last "
                    f"commit announced read_to={before[-1]}, lookahead {ahead}"
                )
                return

    def _check_budget(self) -> None:
        """Requests sent (every HTTP request, lookups included) in any one-second window ≤ budget,
        per shop (each has its own)."""
        budget = self.schedule.knobs.budget
        windows: dict[str, deque[float]] = defaultdict(deque)
        worst, worst_at, worst_tenant = 0, 0.0, ""
        for at, _, tenant in self.vendor.sends:
            window = windows[tenant]
            window.append(at)
            while window[0] <= at - 1.0 + 1e-6:
                window.popleft()
            if len(window) > worst:
                worst, worst_at, worst_tenant = len(window), at, tenant
        if worst > budget:
            shop = f" for {worst_tenant}" if worst_tenant else ""
            self.fail(
                f"{worst} requests{shop} in the second ending t={worst_at - _epoch():.3f}, budget {budget:g}"
            )

    def check_circuits(self, pipelines: dict[str, object], max_retry_after: float) -> None:
        """429s are a pacing signal only (guarantees 4 and 5): a shop whose only fault was
        another client on its key (asking for no wait above ``max_retry_after``) never had its outage
        circuit opened, on any member, so it was never parked for it either."""
        faults = self.schedule.faults
        rotated = {o.tenant for o in self.schedule.tenant_ops if o.kind == "rotate"}  # 401s meanwhile
        for tenant in self.schedule.tenants or [""]:
            own = [f for f in faults if f.tenant in ("", tenant)]
            if not own or any(f.kind != "stranger" or (f.retry_after or 0.0) > max_retry_after for f in own):
                continue
            if tenant in rotated:
                continue
            for name, pipeline in sorted(pipelines.items()):
                served = pipeline.tenancy.served().get(tenant)  # type: ignore[attr-defined]
                circuit = served.deliverer.circuit if served is not None else None
                if circuit is not None and (circuit.closures or circuit.is_open):
                    shop = f"shop {tenant}" if tenant else "the shop"
                    self.fail(
                        f"{shop} had only another client on its key, yet {name} opened its circuit "
                        f"({circuit.reason or 'closed again since'})"
                    )
                    return

    def check_members(self, pipelines: dict[str, object]) -> None:
        """Memory: per-key state bounded by its setting, read-ahead by its bound."""
        k = self.schedule.knobs
        for name, pipeline in sorted(pipelines.items()):
            remembered = pipeline.coalescer.remembered  # type: ignore[attr-defined]
            held = pipeline.assignment.held  # type: ignore[attr-defined]
            unresolved = pipeline.assignment.unresolved  # type: ignore[attr-defined]
            if remembered > k.remember_keys:
                self.fail(f"{name} remembers {remembered} keys, bound {k.remember_keys}")
            if unresolved > k.max_unresolved + self.cluster.max_poll_records:
                self.fail(f"{name} has {unresolved} unresolved events, bound {k.max_unresolved}")
            if held > k.max_held + self.cluster.max_poll_records:
                self.fail(f"{name} holds {held} offsets, bound {k.max_held}")


def _same_payload(p: Produced, q: Produced) -> bool:
    """Whether two events carry the same order body (every delete is the same)."""
    a, b = p.event, q.event
    if a.op == "delete" or b.op == "delete":
        return a.op == b.op
    return (a.state, a.updated_at) == (b.state, b.updated_at)


def _epoch() -> float:
    from tests.sim.schedule import EPOCH

    return EPOCH
