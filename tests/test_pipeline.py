"""The pipeline of one member, composed as ``connector run`` composes it (``app.serve``), on virtual
time, with every part around it simulated: the Kafka cluster of the simulation (``tests/sim/cluster.py``:
the partition's log, the group, commits with metadata, the dead-letter and pace topics) and a vendor
client of our own. Records go in; what becomes of each shows as what the vendor accepted, what the
dead-letter topic holds and the offsets the member commits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from random import Random
from types import TracebackType
from typing import Any, Self

from connector.app import Parts, serve
from connector.coalesce import Resolution
from connector.config import (
    DeliverySettings,
    DlqSettings,
    KafkaSettings,
    MetricsSettings,
    Settings,
    SinkSettings,
)
from connector.constants import H_STAGE
from connector.metadata import CommitMeta
from connector.metadata import decode as read_metadata
from connector.metadata import encode as encode_metadata
from connector.metrics import Metrics
from connector.pipeline import Pipeline
from connector.source import PartitionsCallback
from connector.structs import Record, TopicPartition
from tests.fakes import LoopClock, Vendor
from tests.sim.cluster import Member, SimCluster
from tests.sim.loop import VirtualTimeLoop

START = 1_800_000_000.0
TOPIC = "orders"
TP = TopicPartition(TOPIC, 0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def settings_for(grace: float = 10.0, **kafka: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            topics=[TOPIC],
            commit_interval_seconds=1.0,
            lease_seconds=5.0,
            settle_seconds=1.0,
            poll_timeout_ms=1000,
            **kafka,
        ),
        dlq=DlqSettings(topic=f"{TOPIC}.dlq"),
        sink=SinkSettings(
            api_key="k",
            rate_limit_per_second=50.0,
            timeout_seconds=1.0,
        ),
        delivery=DeliverySettings(linger_seconds=0.0),
        metrics=MetricsSettings(port=0),
        shutdown_grace_seconds=grace,
    )


class OneMember:
    """One member serving partition ``TP`` of the simulated cluster, until :meth:`stop`."""

    def __init__(self, settings: Settings, max_poll_records: int = 100, fetch_seconds: float = 0.0) -> None:
        self.clock = LoopClock()
        self.settings = settings
        self.cluster = SimCluster(
            TOPIC,
            1,
            wall=self.clock.wall,
            session_timeout=10.0,
            rebalance_timeout=20.0,
            max_poll_records=max_poll_records,
            fetch_seconds=fetch_seconds,
        )
        self.vendor = Vendor()
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[Pipeline] | None = None

    async def __aenter__(self) -> Self:
        self.cluster.start()

        def source(revoked: PartitionsCallback, assigned: PartitionsCallback) -> Member:
            return self.cluster.member("m0", revoked, assigned)

        parts = Parts(
            clock=self.clock,
            rng=Random(1),
            metrics=self.metrics,
            sink=self.vendor,
            dead_letters=self.cluster.dead_letters_for("m0"),
            pace_log=self.cluster.pace_log_for("m0"),
            source=source,
        )
        self._task = asyncio.create_task(serve(self.settings, self._stop, parts))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await asyncio.gather(*(t for t in [self._task] if t is not None), return_exceptions=True)
        await self.cluster.close()

    async def stop(self) -> Pipeline:
        """SIGTERM: drain, commit, leave; the pipeline as it ended."""
        assert self._task is not None
        self._stop.set()
        return await self._task

    def produce(self, order: str, second: int, **fields: Any) -> Record:
        body = {"external_id": order, "updated_at": (T0 + timedelta(seconds=second)).isoformat(), **fields}
        return self.cluster.produce(0, order.encode(), json.dumps(body).encode())

    async def until(self, condition: Callable[[], object], within: float = 60.0) -> None:
        """Wait (virtual time) until ``condition`` holds; fail after ``within`` seconds."""
        deadline = self.clock.monotonic() + within
        while not condition():
            assert self._task is not None
            if self._task.done():
                self._task.result()  # raises what ended it
                raise AssertionError("the member stopped")
            if self.clock.monotonic() > deadline:
                raise AssertionError(f"not within {within}s")
            await asyncio.sleep(0.05)

    def paused(self) -> set[TopicPartition]:
        """The partitions the member's consumer does not fetch from."""
        member = self.cluster.members.get("m0")
        return set(member.paused) if member is not None else set()

    def committed(self) -> int:
        return self.cluster.committed.get(TP, (0, ""))[0]

    def dead_letters(self) -> list[tuple[bytes | None, str]]:
        return [(e.key, dict(e.headers)[H_STAGE].decode()) for e in self.cluster.dead_letters]

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def resolved(self, why: Resolution) -> float:
        return self.sample("connector_events_resolved_total", resolution=why)


def simulate(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` on virtual time: sleeping costs nothing."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(START)) as runner:
        runner.run(scenario())


def test_every_record_read_is_resolved_and_committed_and_only_an_orders_newest_event_is_sent() -> None:
    """Four events of three orders, read in one batch: A1's older event is replaced by its newer one
    before anything is sent (A1 costs one call), every offset is resolved, and the member commits the
    partition's end, announcing how far it read."""

    async def scenario() -> None:
        async with OneMember(settings_for()) as m:
            m.produce("A1", 1, status="active")
            m.produce("B1", 1, status="active")
            m.produce("A1", 2, status="archived")
            m.produce("C1", 1, status="active")
            await m.until(lambda: m.committed() == 4)
            assert sorted(m.vendor.sent()) == [("A1", "archived"), ("B1", "active"), ("C1", "active")]
            assert m.resolved(Resolution.REPLACED) == 1
            assert m.resolved(Resolution.DELIVERED) == 3
            assert m.sample("connector_events_consumed_total") == 4
            pipeline = await m.stop()
            assert pipeline.assignment.committed() == {TP: 4}
            assert read_metadata(m.cluster.committed[TP][1]).meta.read_to == 4
            assert m.dead_letters() == []

    simulate(scenario)


def test_while_an_orders_change_is_in_flight_only_the_newest_of_the_events_after_it_is_sent_next() -> None:
    async def scenario() -> None:
        async with OneMember(settings_for()) as m:
            m.vendor.gate.clear()
            m.produce("A1", 1, status="active")
            await m.until(lambda: m.vendor.calls == 1)
            m.produce("A1", 2, status="cancelled", cancelled_at=T0.isoformat())
            m.produce("A1", 3, status="archived")
            await m.until(lambda: m.sample("connector_events_consumed_total") == 3)
            m.vendor.gate.set()
            await m.until(lambda: m.committed() == 3)
            assert m.vendor.sent() == [("A1", "active"), ("A1", "archived")]
            assert m.resolved(Resolution.REPLACED) == 1

    simulate(scenario)


def test_a_poison_record_is_dead_lettered_without_holding_the_others_back() -> None:
    """An unreadable record and an order the vendor model refuses are dead-lettered (stages decode and
    validate) while the orders around them are delivered; the commit waits only for the dead-letter
    topic to acknowledge them (it refuses writes for a while), never passing them unresolved."""

    async def scenario() -> None:
        async with OneMember(settings_for()) as m:
            m.cluster.dlq_refusing = True
            m.produce("A1", 1, status="active")
            m.cluster.produce(0, b"X1", b"{not json")
            m.produce("B1", 1, status="shipped")
            m.produce("C1", 1, status="active")
            await m.until(lambda: len(m.vendor.applied) == 2)
            await asyncio.sleep(5.0)
            assert m.committed() == 1, "not past the unreadable record while its dead letter is refused"
            assert m.dead_letters() == []
            m.cluster.dlq_refusing = False
            await m.until(lambda: m.committed() == 4)
            assert sorted(m.vendor.sent()) == [("A1", "active"), ("C1", "active")]
            assert sorted(m.dead_letters()) == [(b"B1", "validate"), (b"X1", "decode")]
            assert m.sample("connector_events_dead_lettered_total", stage="decode") == 1
            assert m.sample("connector_dead_letter_write_failures_total") > 0

    simulate(scenario)


def test_an_event_older_than_or_identical_to_what_was_delivered_is_not_sent() -> None:
    async def scenario() -> None:
        async with OneMember(settings_for()) as m:
            m.produce("A1", 5, status="active")
            await m.until(lambda: m.committed() == 1)
            m.produce("A1", 3, status="archived")  # older: stale
            m.produce("A1", 5, status="active")  # the same state again: identical
            await m.until(lambda: m.committed() == 3)
            assert m.vendor.sent() == [("A1", "active")]
            assert (m.resolved(Resolution.STALE), m.resolved(Resolution.IDENTICAL)) == (1, 1)

    simulate(scenario)


def test_reading_pauses_at_the_read_ahead_bound_and_resumes_once_half_of_it_is_resolved() -> None:
    """``kafka.max_unresolved_events = 4``, the vendor answering nothing: reading stops once four
    events are unresolved (fetches of two records), and goes on once the vendor answers."""

    async def scenario() -> None:
        async with OneMember(settings_for(max_unresolved_events=4), max_poll_records=2) as m:
            m.vendor.gate.clear()
            for i in range(10):
                m.produce(f"O{i}", 1, status="active")
            await m.until(lambda: TP in m.paused())
            await asyncio.sleep(5.0)
            assert m.sample("connector_events_consumed_total") == 4
            assert m.sample("connector_unresolved_events") == 4
            assert TP in m.paused(), "still paused: nothing was resolved"
            m.vendor.gate.set()
            await m.until(lambda: m.committed() == 10)
            assert len(m.vendor.applied) == 10
            assert TP not in m.paused()

    simulate(scenario)


def test_on_stop_what_was_read_is_delivered_within_the_grace_and_what_is_not_stays_uncommitted() -> None:
    """SIGTERM with two orders in hand: A1 is answered within ``shutdown_grace_seconds`` and committed
    past; B1's call is still unanswered when the grace ends: it is cancelled, and the last commit stops
    at it (its next owner reads it again)."""

    async def scenario() -> None:
        async with OneMember(settings_for(grace=3.0)) as m:
            m.vendor.gate.clear()
            m.vendor.hang.add("B1")
            m.produce("A1", 1, status="active")
            m.produce("B1", 1, status="active")
            await m.until(lambda: m.vendor.calls == 2)
            stopping = asyncio.create_task(m.stop())
            await asyncio.sleep(1.0)
            m.vendor.gate.set()
            pipeline = await stopping
            assert m.vendor.sent() == [("A1", "active")]
            assert pipeline.assignment.committed() == {TP: 1}
            assert m.committed() == 1

    simulate(scenario)


def test_a_new_owner_remembers_what_was_resolved_before_its_commit_so_a_late_older_event_is_stale() -> None:
    """The previous owner committed offset 2: A1 as of second 5 lies below it (resolved, perhaps
    delivered). Re-read first (the warm-up), it is remembered: A1 as of second 3, late, is stale."""

    async def scenario() -> None:
        async with OneMember(settings_for()) as m:
            m.produce("A1", 5, status="active")
            m.produce("B1", 1, status="active")
            m.produce("A1", 3, status="archived")  # 2: late
            m.produce("C1", 1, status="active")
            m.cluster.committed[TP] = (2, encode_metadata(CommitMeta(settle_by=START - 60, read_to=2)))
            await m.until(lambda: m.committed() == 4)
            assert m.vendor.sent() == [("C1", "active")]
            assert m.resolved(Resolution.STALE) == 1

    simulate(scenario)


def test_a_new_owner_sends_no_older_state_of_an_order_than_one_its_predecessor_may_have_sent() -> None:
    """The previous owner committed offset 2 having read to offset 4: it may have sent A1 as of
    second 9 already. Read slowly (half a second a record), A1 as of second 7 would be sent before A1
    as of 9 is read; the lookahead noted A1 as of 9 first: A1 as of 7 is replaced, never sent."""

    async def scenario() -> None:
        async with OneMember(settings_for(), max_poll_records=1, fetch_seconds=0.5) as m:
            m.produce("A1", 1, status="active")
            m.produce("B1", 1, status="active")
            m.produce("A1", 7, status="archived")  # 2
            m.produce("B1", 2, status="archived")  # 3
            m.produce("A1", 9, status="active")  # 4
            m.cluster.committed[TP] = (2, encode_metadata(CommitMeta(settle_by=START - 60, read_to=5)))
            await m.until(lambda: m.committed() == 5)
            assert ("A1", "archived") not in m.vendor.sent()
            assert sorted(m.vendor.sent()) == [("A1", "active"), ("B1", "archived")]
            assert m.resolved(Resolution.REPLACED) == 1

    simulate(scenario)
