"""The read path's decode, driven through the reader's public surface with a resolver of our own (the
ledger's side, ``connector.reader.Resolver``): what a record stands for, what is settled on the read
path instead (dead-lettered with the stage named by its error, or ignored), and that nothing read
ever raises past it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.coalesce import Resolution
from connector.config import DeliverySettings, KafkaSettings, MappingSettings, Settings
from connector.conform import complete
from connector.deadletter import Failure
from connector.errors import DecodeError, MappingError, RouteError
from connector.mapping import Mapper
from connector.reader import Reader, mapper_for
from connector.structs import Record
from connector.vendors import Target, target

ORDER = {"external_id": "A1", "updated_at": "2026-01-01T00:00:00Z", "status": "active"}


class Clock:
    def monotonic(self) -> float:
        return 5.0

    def wall(self) -> float:
        return 1_800_000_000.0


class Desk:
    """The ledger's side of the read path (``connector.reader.Resolver``): what was settled there."""

    def __init__(self) -> None:
        self.resolved: list[tuple[Record, Resolution]] = []
        self.dead: list[tuple[Record, Failure]] = []

    def resolve(self, record: Record, why: Resolution) -> None:
        self.resolved.append((record, why))

    def dead_letter(self, record: Record, failure: Failure) -> None:
        self.dead.append((record, failure))

    def stages(self) -> list[str]:
        return [failure.stage for _, failure in self.dead]


def record(value: Any, headers: dict[str, str] | None = None, key: bytes | None = b"A1") -> Record:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return Record("orders", 0, 0, key, raw, tuple((k, v.encode()) for k, v in (headers or {}).items()))


def reader(desk: Desk, settings: Settings | None = None, **kwargs: Any) -> Reader:
    settings = settings or Settings()
    return Reader(settings, mapper_for(settings), desk, clock=Clock(), **kwargs)


def test_a_record_is_read_as_its_change_without_being_judged_against_the_vendor_model() -> None:
    """What coalescing needs is read (key, version, digest); the rest waits for the claim, so an
    order the vendor model refuses (an unknown status) is accepted here, not dead-lettered."""
    desk = Desk()
    change = reader(desk).accept(record({**ORDER, "status": "shipped"}))
    assert change is not None
    assert (change.key, change.op, change.tenant, change.validated) == ("A1", "upsert", "", False)
    assert change.pending is not None, "its body is made again from the record when it is sent"
    complete(change)
    assert change.body["status"] == "shipped"
    assert desk.resolved == []
    assert desk.dead == []


@pytest.mark.parametrize(
    ("value", "stage", "says"),
    [
        (b"{not json", "decode", "value is not JSON"),
        ([1, 2], "decode", "expected an object"),
        ({"updated_at": "2026-01-01T00:00:00Z"}, "validate", "external_id"),
    ],
    ids=["not-json", "not-an-object", "no-key"],
)
def test_a_record_that_can_never_be_sent_is_dead_lettered_with_its_stage_and_never_raises(
    value: Any, stage: str, says: str
) -> None:
    desk = Desk()
    bad = record(value)
    assert reader(desk).accept(bad) is None
    [(dead, failure)] = desk.dead
    assert dead is bad
    assert says in str(failure.error)
    assert failure.stage == stage
    assert (failure.attempts, failure.first_failure_ts) == (0, Clock().wall())
    assert desk.resolved == []


def test_a_record_larger_than_kafka_max_message_bytes_is_a_decode_error() -> None:
    desk = Desk()
    small = Settings(kafka=KafkaSettings(max_message_bytes=64))
    big = record({**ORDER, "note": "x" * 100})
    assert reader(desk, small).accept(big) is None
    assert desk.stages() == ["decode"]
    assert isinstance(desk.dead[0][1].error, DecodeError)
    assert reader(Desk()).accept(big) is not None, "within the default bound"


@pytest.mark.parametrize("on_delete", ["delete", "ignore"])
def test_a_delete_is_read_or_ignored_as_sink_on_delete_says(on_delete: str) -> None:
    """A tombstone deletes the order its key names; with ``sink.on_delete = ignore`` it is resolved on
    the read path (ignored) and never reaches the ledger."""
    desk = Desk()
    settings = Settings(delivery=DeliverySettings(on_delete=on_delete))
    tombstone = record(None)
    change = reader(desk, settings).accept(tombstone)
    if on_delete == "delete":
        assert change is not None
        assert (change.key, change.op) == ("A1", "delete")
        assert desk.resolved == []
    else:
        assert change is None
        assert desk.resolved == [(tombstone, Resolution.IGNORED)]
    assert desk.dead == []


def test_the_shop_a_record_is_routed_to_makes_its_key() -> None:
    """Many shops: the route names the record's shop, whose orders are coalesced apart."""
    desk = Desk()
    located = reader(desk, locate=lambda r, data: ("acme", target("loop", "v1"))).accept(record(ORDER))
    assert located is not None
    assert (located.tenant, located.key) == ("acme", "acme/A1")


def test_a_record_of_a_shop_not_served_is_dead_lettered_stage_route_naming_the_shop() -> None:
    def locate(r: Record, data: Any) -> tuple[str, Target]:
        raise RouteError("tenant 'ghost' is not served", tenant="ghost")

    desk = Desk()
    assert reader(desk, locate=locate).accept(record(ORDER)) is None
    [(_, failure)] = desk.dead
    assert (failure.stage, failure.tenant) == ("route", "ghost")


def test_a_crash_while_reading_is_dead_lettered_stage_decode_not_raised() -> None:
    """A bug must not stop the loop: the event is kept on the dead-letter topic."""

    def locate(r: Record, data: Any) -> tuple[str, Target]:
        raise KeyError("a bug")

    desk = Desk()
    assert reader(desk, locate=locate).accept(record(ORDER)) is None
    [(_, failure)] = desk.dead
    assert failure.stage == "decode"
    assert isinstance(failure.error, KeyError)


def test_peek_reads_without_acting_and_read_raises() -> None:
    """``peek`` (the warm-up, the lookahead) settles nothing: a bad record is None, not dead-lettered;
    ``read`` raises what decoding raises."""
    desk = Desk()
    path = reader(desk, Settings(delivery=DeliverySettings(on_delete="ignore")))
    assert path.peek(record(b"{not json")) is None
    peeked = path.peek(record(None))
    assert peeked is not None
    assert peeked.op == "delete", "peeked, a delete is what it is, even when deletes are ignored"
    with pytest.raises(DecodeError):
        path.read(record(b"{not json"))
    assert desk.resolved == []
    assert desk.dead == []


def test_without_a_mapping_section_and_with_one_shop_there_is_no_mapping_stage() -> None:
    assert mapper_for(Settings()) is None
    assert mapper_for(Settings(mapping=MappingSettings(envelope="cloudevents"))) is not None
    assert mapper_for(Settings(), tenant_mapping=lambda tenant: None) is not None, "many shops: each may map"


async def test_a_record_is_read_through_the_mapping_stage_when_there_is_one() -> None:
    """CloudEvents in binary mode (``ce_`` headers) whose data is the connector's own envelope."""
    desk = Desk()
    path = reader(desk, Settings(mapping=MappingSettings(envelope="cloudevents")))
    ce = {"ce_specversion": "1.0", "ce_type": "order.updated", "ce_source": "/shop", "ce_id": "1"}
    event = record({"event_type": "order.updated", "order": ORDER}, ce)
    await path.prefetch([event])
    change = path.accept(event)
    assert change is not None
    assert (change.key, change.body) == ("A1", ORDER)
    assert path.accept(record(ORDER, {"ce_specversion": "1.0"})) is None, "a CloudEvent without its type"
    assert desk.stages() == ["decode"], "not a CloudEvent: unreadable as one"


# -- a mapping file is evaluated lazily ----------------------------------------------------------------
MAPPING = """
external_id = "str(id)"
updated_at = "updated_at"
order = "{name: name, total_price: {amount: minor_units(total), currency_code: currency}}"
"""


def mapped_reader(tmp_path: Any, desk: Desk) -> Reader:
    path = tmp_path / "mapping.toml"
    path.write_text(MAPPING)
    return reader(desk, Settings(mapping=MappingSettings(file=str(path))))


def webhook(total: Any, note: str = "") -> Record:
    value = {"id": 7, "updated_at": "2026-01-01T00:00:00Z", "name": "#7", "total": total, "currency": "EUR"}
    if note:
        value["note"] = note
    return record(value, key=b"7")


def test_a_mapping_files_order_is_made_only_when_the_change_is_about_to_be_sent(tmp_path: Any) -> None:
    """On read, only what coalescing needs (the key, the time, the event type; the digest over the
    event's document); the ``order`` expression runs when the change is completed, just before it is
    sent, and gives the body the whole mapping gives."""
    desk = Desk()
    path = mapped_reader(tmp_path, desk)
    change = path.accept(webhook("12.50"))
    assert change is not None
    assert (change.key, change.op) == ("7", "upsert")
    assert change.updated_at is not None
    assert change.updated_at.year == 2026
    assert change.pending is not None, "the order is not made yet"
    assert "name" not in change.body
    complete(change)
    assert change.pending is None
    assert change.body == {
        "name": "#7",
        "total_price": {"amount": 1250, "currency_code": "EUR"},
        "external_id": "7",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    eager = Mapper(MappingSettings(file=str(tmp_path / "mapping.toml"))).read(webhook("12.50"))
    assert (eager.body, eager.key, eager.version) == (change.body, change.key, change.version)


def test_an_event_whose_order_does_not_map_is_refused_only_when_it_would_be_sent(tmp_path: Any) -> None:
    """``minor_units`` refuses a price with fractions of a cent: nothing is dead-lettered on read (a
    newer event may replace it, and a replaced event is never judged); completing it raises the
    MappingError, stage ``map``, naming the field, as the eager read does."""
    desk = Desk()
    path = mapped_reader(tmp_path, desk)
    change = path.accept(webhook("12.505"))
    assert change is not None
    assert desk.dead == []
    with pytest.raises(MappingError) as raised:
        complete(change)
    assert raised.value.stage == "map"
    assert raised.value.external_id == "7"
    with pytest.raises(MappingError) as eager:
        Mapper(MappingSettings(file=str(tmp_path / "mapping.toml"))).read(webhook("12.505"))
    assert str(raised.value) == str(eager.value), "the same words as the whole mapping at once"


def test_a_lazily_read_events_digest_is_its_documents(tmp_path: Any) -> None:
    """The digest that recognises identical events is taken over the event's document: the same
    webhook twice is identical; one that differs in a field the mapping does not read is not (a call
    more, never a change missed)."""
    path = mapped_reader(tmp_path, Desk())
    first, again, other = (
        path.accept(w) for w in (webhook("1.00"), webhook("1.00"), webhook("1.00", "gift"))
    )
    assert first is not None
    assert again is not None
    assert other is not None
    assert first.digest == again.digest
    assert first.digest != other.digest


def test_a_key_the_mapping_cannot_read_is_dead_lettered_on_read_stage_map(tmp_path: Any) -> None:
    """What coalescing needs is still judged on read: an event without the key's field."""
    desk = Desk()
    path = mapped_reader(tmp_path, desk)
    assert path.accept(record({"updated_at": "2026-01-01T00:00:00Z", "name": "#7"}, key=b"7")) is None
    assert desk.stages() == ["map"]
