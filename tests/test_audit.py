"""The read-back audits, on virtual time, with a real pacer and a vendor of our own: what is read
first, that only spare ticks are used and at most the configured share of them, each drift's class,
which are repaired, and that a repaired order is read again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector._resends import Resent
from connector.audit import Auditor
from connector.config import AuditSettings, Drift
from connector.deliver import Outcome, OutcomeKind
from connector.errors import Forbidden, NotFoundError, ServerError
from connector.fence import Fence
from connector.metrics import Metrics
from connector.pacing import Pacer
from connector.readback import Held, ReadEnded
from connector.structs import OrderChange, Record, TopicPartition
from tests.fakes import LoopClock, Told
from tests.sim.loop import VirtualTimeLoop

START = 1_800_000_000.0
TP = TopicPartition("orders", 0)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


class Shop:
    """The vendor's copy of each order, and a desk of our own (``connector.audit.Desk``): a read is
    answered from the copy 10 ms later; every read and repair asked for is recorded."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, Any]] = {}
        self.reads: list[tuple[float, str, float]] = []  # when, which order, on which tick
        self.asked: list[OrderChange] = []  # repairs
        self.fail: BaseException | None = None
        self.busy: set[str] = set()  # orders with a job: reads and repairs refused
        self.auditor: Auditor | None = None
        self.repaired_on: list[float | None] = []  # each repair's tick (None: it takes its own)
        self.end_repairs = False  # hold each repair, and tell the auditor it was delivered, 10 ms later
        self.refuse_repairs: BaseException | None = None  # or tell it failed with this, 10 ms later
        self.circuit_closed = True
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def idle(self) -> asyncio.Event:
        return self._idle

    @property
    def closed(self) -> bool:
        return self.circuit_closed

    def read(self, change: OrderChange, tick: float) -> bool:
        if change.key in self.busy:
            return False
        self.reads.append((asyncio.get_running_loop().time() - START, change.external_id, tick))
        asyncio.get_running_loop().call_later(0.01, self._answer, change)
        return True

    def _answer(self, change: OrderChange) -> None:
        assert self.auditor is not None
        if self.fail is not None:
            self.auditor.read_ended(ReadEnded(change, None, self.fail))
            return
        order = self.held.get(change.external_id)
        if order is None:
            held = Held(False, None, None)
        else:
            held = Held(True, datetime.fromisoformat(order["updated_at"]), order)
        self.auditor.read_ended(ReadEnded(change, held))

    def repair(self, change: OrderChange, tick: float | None) -> bool:
        if change.key in self.busy:
            return False
        self.asked.append(change)
        self.repaired_on.append(tick)
        if self.refuse_repairs is not None:
            failed = Outcome(OutcomeKind.FAILED, change.key, change, self.refuse_repairs, attempts=1)
            assert self.auditor is not None
            asyncio.get_running_loop().call_later(0.01, self.auditor.repair_ended, failed)
        elif self.end_repairs:
            self.held[change.external_id] = dict(change.body)
            done = Outcome(OutcomeKind.DELIVERED, change.key, change, attempts=1)
            assert self.auditor is not None
            asyncio.get_running_loop().call_later(0.01, self.auditor.repair_ended, done)
        return True


def order(key: str, minutes: int, status: str = "active", offset: int = 0) -> OrderChange:
    at = T0 + timedelta(minutes=minutes)
    body = {"external_id": key, "status": status, "updated_at": at.isoformat()}
    return OrderChange(Record(TP.topic, TP.partition, offset, key.encode(), b"{}"), key, "upsert", body, at)


def pacer(budget: float = 10.0) -> Pacer:
    clock = LoopClock()
    fence = Fence(clock, lease_seconds=float("inf"), settle_seconds=1.0)
    fence.assign(TP, 0.0)
    fence.renew(TP, float("inf"))
    p = Pacer(budget, clock, fence)
    p.set_layout({TP.topic: 1})
    return p


def on_virtual_time(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        runner.run(scenario())


def audit(shop: Shop, metrics: Metrics, the_pacer: Pacer | None = None, **settings: Any) -> Auditor:
    a = Auditor(
        the_pacer or pacer(), metrics, AuditSettings(**{"enabled": True, **settings}), clock=LoopClock()
    )
    a.connect(shop)
    shop.auditor = a
    return a


@contextlib.asynccontextmanager
async def live_traffic(p: Pacer, callers: int = 3) -> AsyncIterator[None]:
    """Live traffic that wants every tick of ``p``: ``callers`` requests always waiting for one."""

    async def caller() -> None:
        while True:
            await p.acquire()

    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()


def reads_of(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("connector_audit_reads_total", {"result": result}) or 0.0


def test_each_drift_is_found_classed_and_only_missing_and_older_repaired_by_default() -> None:
    """Five delivered orders: one held as sent, one lost, one reverted to an older version, one
    edited in the vendor's admin, one written newer by someone else. Each is read once on a spare
    tick; the lost and the reverted are sent again (their last delivered change), the edit and the
    newer one are reported, not overwritten."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        sent = {k: order(k, 10) for k in ("same", "lost", "reverted", "edited", "newer")}
        shop.held = {k: dict(c.body) for k, c in sent.items() if k != "lost"}
        shop.held["reverted"] = dict(order("reverted", 5).body)
        shop.held["edited"]["status"] = "cancelled"
        shop.held["newer"] = dict(order("newer", 20).body)
        async with audit(shop, metrics) as a:
            for change in sent.values():
                a.delivered(change, ambiguous=False)
            await asyncio.sleep(10)
        assert sorted(k for _, k, _ in shop.reads) == sorted(sent)
        ticks = [tick for _, _, tick in shop.reads]
        assert len(set(ticks)) == len(ticks), "every read on a tick of its own"
        assert [c.external_id for c in shop.asked] == ["lost", "reverted"]
        assert shop.asked[0] is not sent["lost"]
        assert shop.asked[0].body == sent["lost"].body
        assert shop.asked[0].record.value is None, "the record's bytes are not kept"

    on_virtual_time(scenario)
    for result, n in (("in_sync", 1), ("missing", 1), ("older", 1), ("differs", 1), ("ahead", 1)):
        assert reads_of(metrics, result) == n, result


def test_differs_is_repaired_when_asked_and_ahead_never_can_be() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        sent = order("edited", 10)
        shop.held = {"edited": dict(sent.body, status="cancelled")}
        async with audit(shop, metrics, repair=["differs"]) as a:
            a.delivered(sent, ambiguous=False)
            await asyncio.sleep(5)
        assert [c.external_id for c in shop.asked] == ["edited"]

    on_virtual_time(scenario)
    with pytest.raises(ValueError, match="never repaired"):
        AuditSettings(repair=["ahead"])  # type: ignore[list-item]


def test_ambiguous_deliveries_are_read_first_then_fresh_ones_then_the_sweep() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        changes = [order(f"o{i}", 10) for i in range(4)]
        shop.held = {c.external_id: dict(c.body) for c in changes}
        async with audit(shop, metrics, share=0.1, min_interval_seconds=5.0) as a:
            for i, change in enumerate(changes):
                a.delivered(change, ambiguous=i == 3)
            await asyncio.sleep(12)
        order_read = [k for _, k, _ in shop.reads]
        assert order_read[:4] == ["o3", "o0", "o1", "o2"]
        assert order_read[4:8] == ["o3", "o0", "o1", "o2"], "the sweep: least recently read first"

    on_virtual_time(scenario)


def test_reads_take_at_most_their_share_and_no_order_is_read_again_within_the_interval() -> None:
    """200 orders, budget 10/s, share 0.2: about 2 reads a second, never more; each order read again
    no sooner than min_interval_seconds."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        changes = [order(f"o{i}", 10) for i in range(200)]
        shop.held = {c.external_id: dict(c.body) for c in changes}
        async with audit(shop, metrics, share=0.2, min_interval_seconds=5.0) as a:
            for change in changes:
                a.delivered(change, ambiguous=False)
            await asyncio.sleep(60)

    on_virtual_time(scenario)
    times = [t for t, _, _ in shop.reads]
    assert 100 <= len(times) <= 121
    assert max(sum(1 for t in times if s <= t < s + 1) for s in range(60)) <= 3
    last: dict[str, float] = {}
    for t, k, _ in shop.reads:
        assert k not in last or t - last[k] >= 5.0
        last[k] = t


def test_no_read_without_a_spare_tick() -> None:
    """Live traffic takes every tick: nothing is read back."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        p = pacer()
        async with live_traffic(p), audit(shop, metrics, p) as a:
            a.delivered(order("o", 10), ambiguous=False)
            await asyncio.sleep(20)

    on_virtual_time(scenario)
    assert shop.reads == []


def test_a_repaired_order_is_read_again_and_a_revoked_partitions_orders_are_forgotten() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        lost = order("lost", 10)
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            a.delivered(lost, ambiguous=False)
            await asyncio.sleep(2)
            assert [c.external_id for c in shop.asked] == ["lost"]
            shop.held["lost"] = dict(lost.body)
            a.repair_ended(Outcome(OutcomeKind.DELIVERED, lost.key, shop.asked[0]))
            await asyncio.sleep(2)
            assert [k for _, k, _ in shop.reads] == ["lost", "lost"]
            assert a.kept == 1
            a.forget({TP})
            assert a.kept == 0

    on_virtual_time(scenario)
    repaired = metrics.registry.get_sample_value(
        "connector_audit_repairs_total", {"drift": "missing", "outcome": "delivered"}
    )
    assert repaired == 1
    assert reads_of(metrics, "in_sync") == 1


def test_failed_reads_are_counted_and_slow_the_audit_down() -> None:
    shop, metrics = Shop(), Metrics()
    shop.fail = ServerError("503", status=503)

    async def scenario() -> None:
        changes = [order(f"o{i}", 10) for i in range(50)]
        async with audit(shop, metrics, min_interval_seconds=0.0) as a:
            for change in changes:
                a.delivered(change, ambiguous=False)
            await asyncio.sleep(60)

    on_virtual_time(scenario)
    assert 4 <= len(shop.reads) <= 8  # backing off 2, 4, 8, 16, 32 s
    assert reads_of(metrics, "failed") == len(shop.reads)
    assert shop.asked == []


def test_off_reads_nothing() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        async with audit(shop, metrics, enabled=False) as a:
            a.delivered(order("o", 10), ambiguous=False)
            await asyncio.sleep(10)
            assert a.kept == 0

    on_virtual_time(scenario)
    assert shop.reads == []
    assert Drift.MISSING in AuditSettings().repair
    assert Drift.DIFFERS not in AuditSettings().repair


def test_an_order_delivered_again_before_it_was_read_is_read_once_at_its_newest() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        newest = order("o", 20, offset=1)
        shop.held = {"o": dict(newest.body)}
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            a.delivered(order("o", 10), ambiguous=False)
            a.delivered(newest, ambiguous=False)
            await asyncio.sleep(5)

    on_virtual_time(scenario)
    assert [k for _, k, _ in shop.reads] == ["o"]
    assert reads_of(metrics, "in_sync") == 1


def test_an_order_with_a_job_is_not_read_and_one_that_failed_for_good_is_forgotten() -> None:
    """An order being written is not read beside it (one request per order at a time); an order whose
    live change failed for good may hold that change (an attempt may have landed): it is neither read
    nor repaired until delivered again."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            shop.busy.add("busy")
            a.delivered(order("busy", 10), ambiguous=False)
            a.delivered(order("failed", 10), ambiguous=False)
            a.unsure("failed")
            await asyncio.sleep(5)
            assert a.kept == 1

    on_virtual_time(scenario)
    assert shop.reads == []
    assert shop.asked == []


def test_a_lasting_edit_is_logged_once_and_counted_at_every_read() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        sent = order("edited", 10)
        shop.held = {"edited": dict(sent.body, status="cancelled")}
        async with audit(shop, metrics, min_interval_seconds=2.0) as a:
            a.delivered(sent, ambiguous=False)
            await asyncio.sleep(9)

    with capture_logs() as logs:
        on_virtual_time(scenario)
    warned = [e for e in logs if e["event"] == "audit_drift" and e["log_level"] == "warning"]
    assert len(warned) == 1
    assert warned[0]["fields"] == ["status"]
    assert reads_of(metrics, "differs") >= 3


def test_reads_are_capped_per_second_whatever_the_budget_leaves() -> None:
    """An unthrottled budget (1,000/s, none of it used) is no reason to read without end."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        changes = [order(f"o{i}", 10) for i in range(500)]
        shop.held = {c.external_id: dict(c.body) for c in changes}
        async with audit(shop, metrics, pacer(1000.0), max_reads_per_second=10.0) as a:
            for change in changes:
                a.delivered(change, ambiguous=False)
            await asyncio.sleep(20)

    on_virtual_time(scenario)
    assert 180 <= len(shop.reads) <= 201


def test_what_waits_to_be_read_stays_bounded_when_nothing_can_be_read() -> None:
    """Deliveries faster than reads (no spare tick at all): the orders kept and those waiting to be
    read stay within audit.remember_orders, whatever is delivered."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        p = pacer()
        async with live_traffic(p), audit(shop, metrics, p, remember_orders=50) as a:
            for i in range(5_000):
                a.delivered(order(f"o{i % 80}", 10 + i), ambiguous=i % 7 == 0)
            assert a.kept == 50
            assert a.waiting <= 2 * (2 * 50 + 1)  # each of the two queues
            await asyncio.sleep(2)

    on_virtual_time(scenario)
    assert shop.reads == []


def test_no_read_while_the_shop_has_live_work_in_hand() -> None:
    """A shop with a live change in hand will use its ticks (and, on a member that cannot keep up,
    the CPU they need): nothing is read until it has none."""
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        shop.held = {"o": dict(order("o", 10).body)}
        shop.idle.clear()
        async with audit(shop, metrics) as a:
            a.delivered(order("o", 10), ambiguous=False)
            await asyncio.sleep(10)
            assert shop.reads == []
            shop.idle.set()
            await asyncio.sleep(2)
            assert [k for _, k, _ in shop.reads] == ["o"]

    on_virtual_time(scenario)


def test_a_resync_is_sent_on_spare_ticks_with_the_audits_off_each_change_once() -> None:
    shop, metrics, told = Shop(), Metrics(), Told(share=0.5)
    shop.end_repairs = True

    async def scenario() -> None:
        async with audit(shop, metrics, enabled=False) as a:
            for n in range(5):
                a.resend(order(f"o{n}", 10), told)
            await asyncio.sleep(3)
            assert sorted(told.ends) == [(f"o{n}", Resent.SENT) for n in range(5)]
            assert None not in shop.repaired_on, "spare ticks: nobody else wanted them"
            assert shop.reads == [], "the audits are off: nothing read"
            assert a.resends == 0

    on_virtual_time(scenario)


def test_a_resync_progresses_at_its_floor_when_live_traffic_wants_every_tick() -> None:
    shop, metrics, told = Shop(), Metrics(), Told(share=0.5)
    shop.end_repairs = True
    the_pacer = pacer(10.0)

    async def scenario() -> None:
        shop.idle.clear()  # live work in hand all along
        async with live_traffic(the_pacer, callers=1), audit(shop, metrics, the_pacer, enabled=False) as a:
            for n in range(100):
                a.resend(order(f"o{n}", 10), told)
            await asyncio.sleep(10)
        floor = [t for t in shop.repaired_on if t is None]
        assert 40 <= len(floor) <= 51, f"half of 10/s for 10 s: {len(floor)}"

    on_virtual_time(scenario)


def test_a_live_change_skips_a_resend_in_line() -> None:
    shop, metrics, told = Shop(), Metrics(), Told(share=0.5)

    async def scenario() -> None:
        async with audit(shop, metrics, enabled=False) as a:
            a.resend(order("o", 10), told)
            a.unsure("o")  # a live change of it is handed to the deliverer
            await asyncio.sleep(2)
            assert told.ends == [("o", Resent.SKIPPED)]
            assert shop.asked == []

    on_virtual_time(scenario)


def test_a_shop_closed_with_resends_in_line_tells_them_skipped() -> None:
    """Removed from the tenants and closed: a resync waiting for them would otherwise wait until its
    partition moved."""
    shop, metrics, told = Shop(), Metrics(), Told(share=0.5)
    shop.busy = {"o"}  # its order has a job: the resend waits in line

    async def scenario() -> None:
        async with audit(shop, metrics, enabled=False) as a:
            a.resend(order("o", 10), told)
            await asyncio.sleep(2)
            assert told.ends == []
        assert told.ends == [("o", Resent.SKIPPED)]

    on_virtual_time(scenario)


def test_an_order_the_audit_repaired_since_the_resync_was_asked_is_not_resent() -> None:
    """Both find a lost order: one call for it. A repair before the resync was asked, or of an older
    state than the resync's, does not count."""
    shop, metrics = Shop(), Metrics()
    shop.end_repairs = True

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            a.delivered(order("lost", 10), ambiguous=False)
            await asyncio.sleep(1)
            assert [c.external_id for c in shop.asked] == ["lost"], "found missing, repaired"
            repaired_at = asyncio.get_running_loop().time()
            before, after = Told(asked_at=repaired_at - 5), Told(asked_at=repaired_at + 1)
            a.resend(order("lost", 10), before)
            assert before.ends == [("lost", Resent.SKIPPED)]
            await asyncio.sleep(2)
            a.resend(order("lost", 10), after)
            a.resend(order("newer", 20), before)
            await asyncio.sleep(2)
            assert after.ends == [("lost", Resent.SENT)], "repaired before it was asked"
            assert before.ends[1:] == [("newer", Resent.SENT)]
            assert [c.external_id for c in shop.asked] == ["lost", "lost", "newer"]

    on_virtual_time(scenario)


def test_a_resend_in_line_is_skipped_once_the_audit_repaired_its_order() -> None:
    shop, metrics = Shop(), Metrics()
    shop.end_repairs = True

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            a.delivered(order("lost", 10), ambiguous=False)
            await asyncio.sleep(0.05)  # read, found missing: the repair waits for the next turn
            assert shop.asked == []
            told = Told(asked_at=asyncio.get_running_loop().time())
            a.resend(order("lost", 10), told)
            await asyncio.sleep(2)
            assert [c.external_id for c in shop.asked] == ["lost"], "one call"
            assert told.ends == [("lost", Resent.SKIPPED)]

    on_virtual_time(scenario)


def test_a_delivery_whose_request_left_before_the_resync_was_asked_does_not_count() -> None:
    """It may have landed before the vendor lost everything, though it was answered after."""
    shop, metrics = Shop(), Metrics()
    shop.end_repairs = True

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            now = asyncio.get_running_loop().time()
            shop.held["late"] = dict(order("late", 10).body)
            a.delivered(order("late", 10), ambiguous=False, sent_at=now - 0.5)
            a.delivered(order("after", 10), ambiguous=False, sent_at=now + 0.1)
            told = Told(asked_at=now)
            a.resend(order("late", 10), told)
            a.resend(order("after", 10), told)
            await asyncio.sleep(2)
            assert sorted(told.ends) == [("after", Resent.SKIPPED), ("late", Resent.SENT)]

    on_virtual_time(scenario)


def test_a_repair_the_vendor_refuses_for_good_is_not_sent_again_for_that_state() -> None:
    """Shoplazza cannot be sent an order its store lost (404): reading and repairing it every
    interval would spend two calls each time for nothing. The drift is still read and counted."""
    shop, metrics = Shop(), Metrics()
    shop.refuse_repairs = NotFoundError("PUT /orders/o-1 answered 404", status=404)

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1.0) as a:
            a.delivered(order("lost", 10), ambiguous=False)
            await asyncio.sleep(10)
            assert len(shop.asked) == 1
            assert len(shop.reads) >= 3
            shop.refuse_repairs = None
            shop.end_repairs = True
            a.delivered(order("lost", 20), ambiguous=False)  # a newer state: repaired again if lost
            await asyncio.sleep(2)
            assert len(shop.asked) == 2

    on_virtual_time(scenario)
    assert reads_of(metrics, "missing") >= 3


def test_a_lower_limit_drops_the_least_recently_read_orders_at_once() -> None:
    shop, metrics = Shop(), Metrics()

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1000.0) as a:
            for n in range(5):
                shop.held[f"o{n}"] = dict(order(f"o{n}", 10).body)
                a.delivered(order(f"o{n}", 10), ambiguous=False)
            await asyncio.sleep(2)
            assert a.kept == 5
            a.set_limit(2)
            assert (a.kept, a.limit) == (2, 2)
            a.delivered(order("o9", 10), ambiguous=False)
            assert a.kept == 2

    on_virtual_time(scenario)


def test_a_repair_refused_for_a_missing_scope_is_tried_again_later() -> None:
    """A second 403 is about a scope the operator may grant: not the order's fault, so the drift is
    repaired again at a later read (only a 4xx of the order itself stops it)."""
    shop, metrics = Shop(), Metrics()
    shop.refuse_repairs = Forbidden("PUT /orders answered 403 again", status=403)

    async def scenario() -> None:
        async with audit(shop, metrics, min_interval_seconds=1.0) as a:
            a.delivered(order("lost", 10), ambiguous=False)
            await asyncio.sleep(10)
            assert len(shop.asked) >= 2

    on_virtual_time(scenario)
