"""The ledger, driven through its public surface (offer, report, resolve, dead-letter) with the
parts around it simulated: the coalescer, the partitions' watermarks and the dead-letter publisher are
the real ones; the shops (``Dispatch``), the parking scans (``Parked``), the membership (``Leases``)
and the dead-letter topic are our own. Every record is tracked in its partition before it is offered,
as the pipeline does, so what the ledger resolves shows as the offset a commit may pass."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.coalesce import Coalescer, Resolution
from connector.config import DlqSettings, Settings
from connector.conform import check
from connector.constants import H_STAGE
from connector.deadletter import DeadLetterPublisher
from connector.decode import decode
from connector.deliver import Outcome, OutcomeKind
from connector.errors import InputError, MappingError, RejectedError, SinkTimeout
from connector.ledger import Ledger
from connector.metrics import Metrics
from connector.ownership import Assignment
from connector.structs import OrderChange, Record, TopicPartition
from connector.vendors import target

TP = TopicPartition("orders", 0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def monotonic(self) -> float:
        return 1_000.0

    def wall(self) -> float:
        return 1_800_000_000.0


class DeadLetterTopic:
    """The dead-letter topic (``connector.deadletter.DeadLetterWriter``): what it acknowledged; it
    acknowledges nothing while ``gate`` is closed."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes | None, dict[str, bytes]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await self.gate.wait()
        self.written.append((key, dict(headers)))

    def stages(self) -> list[str]:
        return [headers[H_STAGE].decode() for _, headers in self.written]


class Shops:
    """Where orders get their jobs (``connector.ledger.Dispatch``): every job started, and every
    newer change handed to a job; a job takes it unless ``busy`` (a call of its order in flight)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, TopicPartition, str, float]] = []
        self.holds: dict[str, OrderChange] = {}  # what each order's job would send next
        self.busy = False

    def submit(self, change: OrderChange, hold: float = 0.0) -> None:
        self.jobs.append((change.key, change.tp, change.tenant, hold))
        self.holds[change.key] = change

    def replace(self, change: OrderChange) -> bool:
        if self.busy or change.key not in self.holds:
            return False
        self.holds[change.key] = change
        return True


class Scans:
    """The parking scans (``connector.ledger.Parked``): every replayed record resolved there."""

    def __init__(self) -> None:
        self.resolved: list[Record] = []

    def resolve(self, record: Record) -> bool:
        self.resolved.append(record)
        return True


class Leases:
    """The membership (``connector.ledger.Leases``): every partition a lease was asked for."""

    def __init__(self) -> None:
        self.asked: list[TopicPartition] = []

    def need_lease(self, tp: TopicPartition) -> None:
        self.asked.append(tp)


class Books:
    """A ledger over partition ``TP``, read from offset 0."""

    def __init__(self, shops: Shops | None = None, **dlq: Any) -> None:
        self.metrics = Metrics()
        self.coalescer = Coalescer()
        self.assignment = Assignment()
        part = self.assignment.add(TP)
        part.offsets.start_at(0)
        self.offsets = part.offsets
        self.part = part
        self.topic = DeadLetterTopic()
        self.shops = shops or Shops()
        self.scans = Scans()
        self.leases = Leases()
        settings = Settings(dlq=DlqSettings(**dlq))
        self.ledger = Ledger(
            settings,
            self.coalescer,
            self.assignment,
            DeadLetterPublisher(settings.dlq.topic, self.topic, clock=Clock()),
            self.metrics,
            clock=Clock(),
            dispatch=self.shops,
            parked=self.scans,
            leases=self.leases,
        )
        self._next = 0

    def read(self, order: str, second: int | None, **fields: Any) -> OrderChange:
        """An event of ``order`` as of ``second`` past T0 (None: no ``updated_at``), read at the
        partition's next offset (and tracked there, as the pipeline does): decoded as the read path
        does, not validated."""
        offset, self._next = self._next, self._next + 1
        body: dict[str, Any] = {"external_id": order, **fields}
        if second is not None:
            body["updated_at"] = (T0 + timedelta(seconds=second)).isoformat()
        record = Record(TP.topic, TP.partition, offset, order.encode(), json.dumps(body).encode())
        self.offsets.track(offset, record.size)
        return decode(record, validate=False)

    def offer(self, order: str, second: int | None, **fields: Any) -> OrderChange:
        change = self.read(order, second, **fields)
        self.ledger.offer(change)
        return change

    def resolved(self, why: Resolution) -> float:
        value = self.metrics.registry.get_sample_value("connector_events_resolved_total", {"resolution": why})
        return value or 0.0

    def dead_lettered(self, stage: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "connector_events_dead_lettered_total", {"stage": stage}
        )
        return value or 0.0

    async def written(self) -> None:
        """Until every dead letter in hand was acknowledged (and so resolved)."""
        while self.part.dead_letters:
            await asyncio.gather(*self.part.dead_letters)


def delivered(change: OrderChange, key: str | None = None) -> Outcome:
    return Outcome(OutcomeKind.DELIVERED, key or change.key, change, attempts=1)


def failed(change: OrderChange, error: BaseException, ambiguous: bool = False) -> Outcome:
    return Outcome(OutcomeKind.FAILED, change.key, change, error, 3, 1.0, 2.0, ambiguous)


def invalid(change: OrderChange) -> Outcome:
    """What the deliverer reports for a change the vendor model refuses (it checks before sending)."""
    try:
        check(change, target("loop"))
    except InputError as exc:
        return Outcome(OutcomeKind.INVALID, change.key, change, exc, 0, 1.0, 1.0)
    raise AssertionError("the vendor model accepts it")


# -- offer --------------------------------------------------------------------------------------------
def test_an_order_without_a_job_gets_one_and_its_partition_a_lease() -> None:
    """The first change of an order starts its job (with the hold asked for) and asks the membership
    for a lease on its partition; a newer change of the same order goes to that job."""
    books = Books()
    first = books.read("A1", 1)
    books.ledger.offer(first, hold=2.5)
    second = books.offer("A1", 2)
    books.offer("B1", 1)
    assert books.shops.jobs == [("A1", TP, "", 2.5), ("B1", TP, "", 0.0)]
    assert books.shops.holds["A1"] is second
    assert books.leases.asked == [TP, TP]


def test_a_change_its_job_takes_resolves_the_one_it_held_as_replaced() -> None:
    """Nothing of A1 in flight: its job takes each newer change, and the change it held is resolved
    *replaced* at once (never sent, never judged against the vendor model: nothing is dead-lettered),
    so its offset may be committed past while the newest waits for its call."""
    books = Books()
    broken = books.offer("A1", 1, status="shipped")  # not a Loop status: never judged
    books.offer("A1", 2, status="archived")
    newest = books.offer("A1", 3, status="active")
    assert books.shops.holds["A1"] is newest
    assert not broken.validated
    assert books.resolved(Resolution.REPLACED) == 2
    assert books.offsets.committable() == 2, "the replaced offsets are resolved, the newest not yet"
    assert books.ledger.report(delivered(newest)) is None
    assert books.offsets.committable() == 3


def test_a_change_waits_while_a_call_of_its_order_is_in_flight_and_is_the_reports_answer() -> None:
    """A1 is being sent: a newer A1 waits (the newest of those that came), resolved *replaced* only
    when an even newer one takes its place; the report of the call in flight answers with it."""
    books = Books()
    first = books.offer("A1", 1)
    books.shops.busy = True
    books.offer("A1", 2)
    third = books.offer("A1", 3)
    assert books.shops.holds["A1"] is first, "the job keeps what it is sending"
    assert books.resolved(Resolution.REPLACED) == 1
    assert books.ledger.report(delivered(first)) is third
    assert books.offsets.committable() == 2
    assert books.ledger.report(delivered(third)) is None
    assert books.offsets.committable() == 3
    assert books.resolved(Resolution.DELIVERED) == 2


def test_an_older_or_identical_event_is_resolved_at_once_without_a_job() -> None:
    """After A1 as of second 5 was delivered, an event older than it is stale and one equal to it is
    identical: both resolved (their offsets may be committed past) with no call and no job."""
    books = Books()
    sent = books.offer("A1", 5)
    assert books.ledger.report(delivered(sent)) is None
    books.offer("A1", 3)
    books.offer("A1", 5)
    assert books.shops.jobs == [("A1", TP, "", 0.0)]
    assert books.offsets.committable() == 3
    assert books.ledger.take_counts() == {"delivered": 1, "stale": 1, "identical": 1}
    assert books.ledger.take_counts() == {}, "counted since the last call"
    assert (books.resolved(Resolution.STALE), books.resolved(Resolution.IDENTICAL)) == (1, 1)


# -- report -------------------------------------------------------------------------------------------
async def test_an_invalid_change_is_dead_lettered_stage_validate_and_its_order_goes_on() -> None:
    """Reported ``INVALID`` (the deliverer's check, before sending), a change that breaks the vendor
    model is dead-lettered (stage ``validate``); its offset is resolved once the topic acknowledged
    it. The order is not blocked: a change that waited behind it is the report's answer, and a later
    one starts a job of its own."""
    books = Books()
    broken = books.offer("A1", 1, status="shipped")
    books.shops.busy = True
    waited = books.offer("A1", 2, status="active")
    books.topic.gate.clear()
    assert books.ledger.report(invalid(broken)) is waited
    await asyncio.sleep(0)
    assert books.offsets.committable() == 0, "not resolved before the topic acknowledged it"
    assert len(books.part.dead_letters) == 1, "its partition knows the write is under way (a revoke waits)"
    books.topic.gate.set()
    await books.written()
    assert books.topic.stages() == ["validate"]
    assert books.dead_lettered("validate") == 1
    assert books.offsets.committable() == 1
    assert books.ledger.report(delivered(waited)) is None
    books.offer("A1", 3, status="archived")
    assert [key for key, *_ in books.shops.jobs] == ["A1", "A1"]


async def test_an_event_whose_mapping_fails_when_it_is_about_to_be_sent_is_dead_lettered_stage_map() -> None:
    """A mapping file's ``order`` runs just before the call (the deliverer's check): its failure is
    reported ``INVALID`` with the MappingError, and dead-lettered with stage ``map``, as on read."""
    books = Books()
    change = books.offer("A1", 1)
    error = MappingError("mapping m.toml: order = '...': failed", mapping="m.toml", path="order")
    assert books.ledger.report(Outcome(OutcomeKind.INVALID, "A1", change, error, 0, 1.0, 1.0)) is None
    await books.written()
    assert books.topic.stages() == ["map"]
    assert books.dead_lettered("map") == 1


def test_a_field_the_vendor_model_does_not_know_is_forwarded_and_counted() -> None:
    """Delivered, a change with a field the model does not know (noted by the deliverer's check) was
    sent as it is, the field counted (one series per field path)."""
    books = Books()
    changes = [books.offer("A1", 1, gift_wrap=True), books.offer("B1", 1, gift_wrap=False)]
    for change in changes:
        check(change, target("loop"))
        books.ledger.report(delivered(change))
    assert changes[0].unknown == ("order.gift_wrap",)
    count = books.metrics.registry.get_sample_value(
        "connector_unknown_fields_total", {"field": "order.gift_wrap"}
    )
    assert count == 2


async def test_a_change_that_failed_for_good_is_dead_lettered_stage_deliver() -> None:
    books = Books()
    change = books.offer("A1", 1)
    assert books.ledger.report(failed(change, RejectedError("422", status=422))) is None
    await books.written()
    [(key, headers)] = books.topic.written
    assert (key, headers[H_STAGE]) == (b"A1", b"deliver")
    assert books.offsets.committable() == 1
    assert books.resolved(Resolution.DEAD_LETTERED) == 1


@pytest.mark.parametrize("dead_letter_replaced", [False, True])
async def test_a_failed_change_with_a_newer_one_waiting_is_replaced_unless_told_to_dead_letter_it(
    dead_letter_replaced: bool,
) -> None:
    """The newer change is sent instead; the failed one is resolved as replaced (or, with
    ``dlq.dead_letter_replaced``, dead-lettered all the same)."""
    books = Books(dead_letter_replaced=dead_letter_replaced)
    first = books.offer("A1", 1)
    books.shops.busy = True
    second = books.offer("A1", 2)
    assert books.ledger.report(failed(first, RejectedError("422", status=422))) is second
    await books.written()
    assert books.topic.stages() == (["deliver"] if dead_letter_replaced else [])
    assert books.resolved(Resolution.REPLACED) == (0 if dead_letter_replaced else 1)
    assert books.offsets.committable() == 1


@pytest.mark.parametrize("ambiguous", [True, False], ids=["timeout", "rejected"])
async def test_after_an_ambiguous_failure_nothing_is_skipped_as_identical_to_what_was_delivered(
    ambiguous: bool,
) -> None:
    """A1 was delivered active, then A1 archived failed for good (events without ``updated_at``,
    ordered by offset). Rejected, the vendor still holds A1 active: the same state read again is
    identical, skipped. Timed out, the vendor may hold either: it is sent."""
    books = Books()
    active = books.offer("A1", None, status="active")
    books.ledger.report(delivered(active))
    archived = books.offer("A1", None, status="archived")
    error = SinkTimeout("timed out") if ambiguous else RejectedError("422", status=422)
    assert books.ledger.report(failed(archived, error, ambiguous=ambiguous)) is None
    await books.written()
    books.offer("A1", None, status="active")
    assert len(books.shops.jobs) == (3 if ambiguous else 2)
    assert books.resolved(Resolution.IDENTICAL) == (0 if ambiguous else 1)


def test_an_abandoned_delivery_resolves_nothing() -> None:
    """Its partition was revoked (or the member is stopping): the change stays unresolved, so its
    partition's next owner reads it again."""
    books = Books()
    change = books.offer("A1", 1)
    assert books.ledger.report(Outcome(OutcomeKind.ABANDONED, "A1", change)) is None
    assert books.offsets.committable() == 0
    assert books.ledger.take_counts() == {}


# -- resolve ------------------------------------------------------------------------------------------
def test_a_replayed_record_is_resolved_by_its_parking_scan_not_its_partition() -> None:
    """A record replayed from the parking topic (``parked_at``) was resolved on its partition when it
    was parked: its parking scan resolves it now, and the partition's watermark does not move."""
    books = Books()
    books.read("A1", 1)  # offset 0, unresolved
    replayed = Record(TP.topic, TP.partition, 0, b"A1", b"{}", parked_at=0)  # first on its parking partition
    books.ledger.resolve(replayed, Resolution.DELIVERED)
    assert books.scans.resolved == [replayed]
    assert books.offsets.committable() == 0
    assert books.resolved(Resolution.DELIVERED) == 1


def test_a_record_resolved_twice_counts_once() -> None:
    books = Books()
    change = books.read("A1", 1)
    books.ledger.resolve(change.record, Resolution.IGNORED)
    books.ledger.resolve(change.record, Resolution.IGNORED)
    assert books.resolved(Resolution.IGNORED) == 1
    assert books.offsets.committable() == 1
