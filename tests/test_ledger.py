"""The ledger, driven through its public surface (offer, claim, report, resolve, dead-letter) with the
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
from connector.constants import H_STAGE
from connector.deadletter import DeadLetterPublisher
from connector.decode import decode
from connector.deliver import Outcome, OutcomeKind
from connector.errors import RejectedError, SinkTimeout
from connector.ledger import Ledger
from connector.metrics import Metrics
from connector.ownership import Assignment
from connector.structs import OrderChange, Record, TopicPartition
from connector.vendors import Target, target

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
    """Where orders get their jobs (``connector.ledger.Dispatch``): every job asked for, and the vendor
    every change is checked against."""

    def __init__(self, kind: str = "loop", api_version: str = "") -> None:
        self.jobs: list[tuple[str, TopicPartition, str, float]] = []
        self.vendor = target(kind, api_version)

    def submit(self, key: str, tp: TopicPartition, tenant: str, hold: float = 0.0) -> None:
        self.jobs.append((key, tp, tenant, hold))

    def vendor_of(self, tenant: str) -> Target:
        return self.vendor


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


# -- offer --------------------------------------------------------------------------------------------
def test_an_order_without_a_job_gets_one_and_its_partition_a_lease() -> None:
    """The first change of an order starts its job (with the hold asked for) and asks the membership
    for a lease on its partition; a newer change of the same order waits in that job."""
    books = Books()
    first = books.read("A1", 1)
    books.ledger.offer(first, hold=2.5)
    books.offer("A1", 2)
    books.offer("B1", 1)
    assert books.shops.jobs == [("A1", TP, "", 2.5), ("B1", TP, "", 0.0)]
    assert books.leases.asked == [TP, TP]
    assert books.offsets.committable() == 0, "nothing resolved yet"


def test_an_older_or_identical_event_is_resolved_at_once_without_a_job() -> None:
    """After A1 as of second 5 was delivered, an event older than it is stale and one equal to it is
    identical: both resolved (their offsets may be committed past) with no call and no job."""
    books = Books()
    sent = books.offer("A1", 5)
    assert books.ledger.claim("A1") is sent
    assert books.ledger.report(delivered(sent)) is False
    books.offer("A1", 3)
    books.offer("A1", 5)
    assert books.shops.jobs == [("A1", TP, "", 0.0)]
    assert books.offsets.committable() == 3
    assert books.ledger.take_counts() == {"delivered": 1, "stale": 1, "identical": 1}
    assert books.ledger.take_counts() == {}, "counted since the last call"
    assert (books.resolved(Resolution.STALE), books.resolved(Resolution.IDENTICAL)) == (1, 1)


# -- claim --------------------------------------------------------------------------------------------
async def test_a_change_replaced_before_it_is_sent_is_never_validated() -> None:
    """A1 as of second 1 breaks the vendor model, but A1 as of second 2 is read before A1's job
    claims: the newest is claimed, the broken one is resolved as replaced, and never judged (nothing
    is dead-lettered)."""
    books = Books()
    broken = books.offer("A1", 1, status="shipped")
    newest = books.offer("A1", 2, status="active")
    claimed = books.ledger.claim("A1")
    assert claimed is newest
    assert claimed.validated
    assert not broken.validated
    await books.written()
    assert books.topic.written == []
    assert books.resolved(Resolution.REPLACED) == 1
    assert books.offsets.committable() == 1, "the replaced offset is resolved, the claimed one not yet"


async def test_an_invalid_change_is_dead_lettered_stage_validate_and_its_order_goes_on() -> None:
    """Claimed, a change that breaks the vendor model is dead-lettered (stage ``validate``) and nothing
    is sent; its offset is resolved once the topic acknowledged it. The order is not blocked: its next
    change starts a job of its own and is claimed."""
    books = Books()
    books.offer("A1", 1, status="shipped")
    books.topic.gate.clear()
    assert books.ledger.claim("A1") is None
    await asyncio.sleep(0)
    assert books.offsets.committable() == 0, "not resolved before the topic acknowledged it"
    assert len(books.part.dead_letters) == 1, "its partition knows the write is under way (a revoke waits)"
    books.topic.gate.set()
    await books.written()
    assert books.topic.stages() == ["validate"]
    assert books.dead_lettered("validate") == 1
    assert books.offsets.committable() == 1
    newer = books.offer("A1", 2, status="active")
    assert [key for key, *_ in books.shops.jobs] == ["A1", "A1"]
    assert books.ledger.claim("A1") is newer


async def test_a_change_is_checked_against_the_vendor_of_its_shop() -> None:
    """The vendor and API version are the shop's (``Dispatch.vendor_of``): Loop from 2026-10 requires
    ``created_at``, so the same body passes for one shop and is dead-lettered for the other."""
    books = Books(Shops("loop", "2026-10"))
    books.offer("A1", 1)
    assert books.ledger.claim("A1") is None
    await books.written()
    assert books.topic.stages() == ["validate"]
    plain = Books(Shops("loop", "v1"))
    change = plain.offer("A1", 1)
    assert plain.ledger.claim("A1") is change


def test_a_key_with_nothing_to_send_claims_nothing() -> None:
    assert Books().ledger.claim("A1") is None


def test_a_field_the_vendor_model_does_not_know_is_forwarded_and_counted() -> None:
    """Claimed, a change with a field the model does not know is sent as it is, the field counted
    (one series per field path)."""
    books = Books()
    change = books.offer("A1", 1, gift_wrap=True)
    books.offer("B1", 1, gift_wrap=False)
    assert books.ledger.claim("A1") is change
    assert books.ledger.claim("B1") is not None
    assert change.unknown == ("order.gift_wrap",)
    count = books.metrics.registry.get_sample_value(
        "connector_unknown_fields_total", {"field": "order.gift_wrap"}
    )
    assert count == 2


# -- report -------------------------------------------------------------------------------------------
def test_a_delivery_resolves_its_offset_and_says_whether_the_order_has_more() -> None:
    """A1 delivered while a newer A1 waited: its offset is resolved, and the job goes on (True) with
    the newer one, whose delivery ends it (False)."""
    books = Books()
    first = books.offer("A1", 1)
    assert books.ledger.claim("A1") is first
    second = books.offer("A1", 2)
    assert books.ledger.report(delivered(first)) is True
    assert books.offsets.committable() == 1
    assert books.ledger.claim("A1") is second
    assert books.ledger.report(delivered(second)) is False
    assert books.offsets.committable() == 2
    assert books.resolved(Resolution.DELIVERED) == 2


async def test_a_change_that_failed_for_good_is_dead_lettered_stage_deliver() -> None:
    books = Books()
    change = books.offer("A1", 1)
    assert books.ledger.claim("A1") is change
    assert books.ledger.report(failed(change, RejectedError("422", status=422))) is False
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
    assert books.ledger.claim("A1") is first
    second = books.offer("A1", 2)
    assert books.ledger.report(failed(first, RejectedError("422", status=422))) is True
    assert books.ledger.claim("A1") is second
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
    assert books.ledger.claim("A1") is active
    books.ledger.report(delivered(active))
    archived = books.offer("A1", None, status="archived")
    assert books.ledger.claim("A1") is archived
    error = SinkTimeout("timed out") if ambiguous else RejectedError("422", status=422)
    assert books.ledger.report(failed(archived, error, ambiguous=ambiguous)) is False
    await books.written()
    again = books.offer("A1", None, status="active")
    assert books.ledger.claim("A1") is (again if ambiguous else None)
    assert books.resolved(Resolution.IDENTICAL) == (0 if ambiguous else 1)


def test_an_abandoned_delivery_resolves_nothing() -> None:
    """Its partition was revoked (or the member is stopping): the change stays unresolved, so its
    partition's next owner reads it again."""
    books = Books()
    change = books.offer("A1", 1)
    assert books.ledger.claim("A1") is change
    assert books.ledger.report(Outcome(OutcomeKind.ABANDONED, "A1", change)) is False
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
