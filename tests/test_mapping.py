"""The mapping stage: envelopes (CloudEvents, Debezium) on events shaped as their projects document
them, mapping files and functions, their errors (stage ``map``), and the property that a mapped event
is read exactly as the native event it stands for."""

from __future__ import annotations

import json
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import MappingSettings
from connector.conform import complete
from connector.decode import decode
from connector.errors import ConfigError, DecodeError, InputError, MappingError, OrderValidationError
from connector.mapping import Event, FileMapping, FunctionMapping, Mapped, Mapper, compile_mapping
from connector.structs import OrderChange, Record, Version
from connector.validate import read_lines, record_of
from connector.vendors import Target, target, vendor

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mapping"
CLOUDEVENTS = json.loads((FIXTURES / "cloudevents.json").read_text())
DEBEZIUM = json.loads((FIXTURES / "debezium.json").read_text())


def record(fields: dict[str, Any], offset: int = 0, topic: str = "orders") -> Record:
    """A fixture's ``{key, headers, value}`` as a Kafka record."""
    return record_of(json.dumps(fields).encode(), offset, True, topic)


def mapping_file(tmp_path: Path, fields: dict[str, str], name: str = "mapping.toml") -> str:
    path = tmp_path / name
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    return str(path)


def mapper(tmp_path: Path, envelope: str, fields: dict[str, str] | None) -> Mapper:
    file = mapping_file(tmp_path, fields) if fields else ""
    return Mapper(MappingSettings(envelope=envelope, file=file), blocking=True)  # type: ignore[arg-type]


# -- CloudEvents ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["structured", "binary", "structured_base64"])
def test_cloudevents_modes_map_to_the_same_order(tmp_path: Path, mode: str) -> None:
    """Structured mode (content-type application/cloudevents+json, data or data_base64) and binary
    mode (ce_* headers, the value as data) give the mapping one document, so one mapping reads both."""
    m = mapper(tmp_path, "cloudevents", CLOUDEVENTS["mapping"])
    change = m.read(record(CLOUDEVENTS[mode]), validate=True)
    assert change.external_id == "ORD-1001"
    assert change.op == "upsert"
    assert change.body == {
        "status": "active",
        "total_price": {"amount": 1999, "currency_code": "EUR"},
        "external_id": "ORD-1001",
        "updated_at": "2018-04-05T03:56:20Z",
    }


def test_cloudevents_attributes_are_one_document_in_both_modes(tmp_path: Path) -> None:
    """Binary-mode headers become the attributes (extensions too), content-type is datacontenttype."""
    m = mapper(tmp_path, "cloudevents", None)
    structured = m.unwrap(record(CLOUDEVENTS["structured"]))
    binary = m.unwrap(record(CLOUDEVENTS["binary"]))
    assert structured is not None
    assert binary is not None
    assert structured.value == binary.value
    assert binary.value["shop"] == "acme"
    assert binary.value["datacontenttype"] == "application/json"
    assert binary.time == "2018-04-05T03:56:24Z"


def test_cloudevents_time_orders_an_event_whose_mapping_gives_no_updated_at(tmp_path: Path) -> None:
    fields = {k: v for k, v in CLOUDEVENTS["mapping"].items() if k != "updated_at"}
    change = mapper(tmp_path, "cloudevents", fields).read(record(CLOUDEVENTS["binary"]))
    assert change.updated_at is not None
    assert change.updated_at.isoformat() == "2018-04-05T03:56:24+00:00"
    assert "updated_at" not in change.body, "the event's time orders it; it is not sent"


def test_cloudevents_without_a_mapping_read_data_as_the_native_envelope(tmp_path: Path) -> None:
    native = {
        "event_type": "order.updated",
        "order": {"external_id": "E-1", "updated_at": "2026-01-01T00:00:00Z"},
    }
    fields = {"headers": {k: v for k, v in CLOUDEVENTS["binary"]["headers"].items()}, "value": native}
    change = mapper(tmp_path, "cloudevents", None).read(record(fields))
    assert (change.external_id, change.op) == ("E-1", "upsert")
    assert change.body == native["order"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"headers": {"ce_specversion": "1.0", "ce_source": "/s", "ce_id": "1"}, "value": {}}, "type"),
        (
            {"headers": {"content-type": "application/cloudevents+json"}, "value": {"specversion": "1.0"}},
            "id",
        ),
        ({"value": {"order": {"external_id": "x"}}}, "not a CloudEvent"),
        (
            {
                "headers": {"content-type": "application/cloudevents+json"},
                "value": {"specversion": "2.0", "id": "1", "source": "/s", "type": "t"},
            },
            "specversion",
        ),
        (
            {
                "headers": {
                    "ce_specversion": "1.0",
                    "ce_source": "/s",
                    "ce_id": "1",
                    "ce_type": "t",
                    "content-type": "application/xml",
                },
                "value": "<order/>",
            },
            "application/xml",
        ),
    ],
)
def test_a_record_that_is_no_cloudevent_is_a_decode_error(
    tmp_path: Path, fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(DecodeError, match=says) as caught:
        mapper(tmp_path, "cloudevents", CLOUDEVENTS["mapping"]).read(record(fields))
    assert caught.value.stage == "decode"


# -- Debezium ---------------------------------------------------------------------------------------
def _dbz(tmp_path: Path) -> Mapper:
    return mapper(tmp_path, "debezium", DEBEZIUM["mapping"])


def test_debezium_create_with_schemas_enabled(tmp_path: Path) -> None:
    """The JSON converter's {"schema", "payload"} wrapping (key and value) is taken off; op c is a
    create, ordered by source.ts_ms since the row has no updated_at."""
    m = _dbz(tmp_path)
    event = m.unwrap(record(DEBEZIUM["create"]))
    assert event is not None
    assert event.value["__op"] == "c"
    assert event.value["__table"] == "customers"
    assert event.key == {"id": 1}
    change = m.read(record(DEBEZIUM["create"]), validate=True)
    assert change.external_id == "cust-1"
    assert change.body["name"] == "Anne Kretchmar"
    assert change.updated_at is not None
    assert change.updated_at.isoformat() == "2019-05-28T08:58:24.863000+00:00"
    assert "updated_at" not in change.body, "source.ts_ms orders it; it is not sent"


def test_debezium_update_delete_and_tombstone_end_as_one_delete(tmp_path: Path) -> None:
    """op d is a delete read from before; the tombstone after it a delete read from the key; neither
    sorts before the update it follows, and the tombstone is identical to the delete."""
    m = _dbz(tmp_path)
    update = m.read(record(DEBEZIUM["update"], 1))
    delete = m.read(record(DEBEZIUM["delete"], 2))
    tombstone = m.read(record(DEBEZIUM["tombstone"], 3))
    assert update.op == "upsert"
    assert update.body["name"] == "Anne Marie Kretchmar"
    assert (delete.op, delete.external_id) == ("delete", "cust-1")
    assert (tombstone.op, tombstone.external_id) == ("delete", "cust-1")
    assert not delete.version.older_than(update.version)
    assert not tombstone.version.older_than(delete.version)
    assert tombstone.digest == delete.digest
    assert delete.updated_at is not None
    assert delete.updated_at.isoformat() == "2019-05-28T08:58:24.964000+00:00"


def test_a_debezium_delete_never_sorts_before_the_update_it_follows(tmp_path: Path) -> None:
    """When the row's updated_at (the application's clock) is later than the delete's commit time,
    the delete is ordered at the row's time: not older than the update, so it is not skipped as stale."""
    fields = dict(DEBEZIUM["mapping"], updated_at="modified")
    m = mapper(tmp_path, "debezium", fields)
    later = "2030-01-01T00:00:00Z"
    update = json.loads(json.dumps(DEBEZIUM["update"]))
    update["value"]["after"]["modified"] = later
    delete = json.loads(json.dumps(DEBEZIUM["delete"]))
    delete["value"]["before"]["modified"] = later
    first, second = m.read(record(update, 1)), m.read(record(delete, 2))
    assert first.updated_at == second.updated_at
    assert not second.version.older_than(first.version)


def test_debezium_example_events_read_as_documented(tmp_path: Path) -> None:
    """examples/debezium: snapshot reads, a create with schemas, updates, a cancellation, a delete and
    its tombstone, a row without updated_at, and a row that cannot be mapped."""
    m = Mapper(
        MappingSettings(envelope="debezium", file=str(ROOT / "examples/debezium/mapping.toml")), blocking=True
    )
    out: list[tuple[str, str] | str] = []
    with open(ROOT / "examples/debezium/events.jsonl", "rb") as handle:
        for number, line in read_lines(handle):
            try:
                change = m.read(record_of(line, number, True), validate=True)
            except InputError as exc:
                out.append(exc.stage)
                continue
            out.append((change.external_id, change.op))
    assert out == [
        ("pg-1001", "upsert"), ("pg-1002", "upsert"), ("pg-1003", "upsert"), ("pg-1001", "upsert"),
        ("pg-1003", "upsert"), ("pg-1002", "delete"), ("pg-1002", "delete"), ("pg-1004", "upsert"),
        ("pg-1004", "upsert"), "map",
    ]  # fmt: skip


def test_debezium_truncate_changes_no_row(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="truncate"):
        _dbz(tmp_path).read(record(DEBEZIUM["truncate"]))


def test_debezium_without_a_mapping_reads_the_row_as_the_order(tmp_path: Path) -> None:
    value = {"before": None, "after": {"external_id": "A-1", "name": "#1"}, "op": "c",
             "source": {"ts_ms": 1793534400000, "table": "orders"}}  # fmt: skip
    change = mapper(tmp_path, "debezium", None).read(
        record({"key": {"id": 1}, "value": value}), validate=True
    )
    assert change.body == {"external_id": "A-1", "name": "#1"}
    assert change.updated_at is not None
    assert change.updated_at.isoformat() == "2026-11-01T12:00:00+00:00"


# -- mapping errors: stage map, the expression or function, the path --------------------------------
def test_a_missing_field_names_the_file_the_field_and_the_expression(tmp_path: Path) -> None:
    m = mapper(tmp_path, "native", {"external_id": "str(order_no)", "order": "{name: name}"})
    with pytest.raises(MappingError) as caught:
        m.read(Record("t", 0, 0, None, b'{"name": "#1"}'))
    error = caught.value
    assert error.stage == "map"
    assert error.path == "external_id"
    assert "mapping.toml: external_id = 'str(order_no)': gave null" in str(error)


def test_an_expression_that_fails_names_it_and_keeps_the_key(tmp_path: Path) -> None:
    m = mapper(tmp_path, "native", {"external_id": "str(id)", "order": "{total: minor_units(total)}"})
    with pytest.raises(MappingError) as caught:
        m.read(Record("t", 0, 0, None, b'{"id": 7, "total": "twelve"}'))
    assert caught.value.path == "order.total"
    assert caught.value.external_id == "7"
    assert "'twelve' is not a decimal amount" in str(caught.value)


def test_a_function_that_raises_names_the_function_and_the_missing_key() -> None:
    m = Mapper(MappingSettings(function="tests.test_mapping:needs_total"))
    with pytest.raises(MappingError) as caught:
        m.read(Record("t", 0, 0, None, b'{"id": "A"}'))
    assert caught.value.stage == "map"
    assert caught.value.path == "'total'"
    assert "tests.test_mapping:needs_total raised KeyError" in str(caught.value)
    assert "tests/test_mapping.py" in str(caught.value)


def needs_total(event: Event) -> Mapped:
    """A mapping function for the tests: reads a field the event may not have."""
    return {"external_id": event.value["id"], "order": {"total": event.value["total"]}}


def returns_this(event: Event) -> Mapped:
    """A mapping function for the tests: the event's value is what it returns (``{"__decimal__": x}``
    as a Decimal, which JSON cannot carry)."""
    result: Mapped = json.loads(json.dumps(event.value), object_hook=_decimals)
    return result


def _decimals(obj: dict[str, Any]) -> Any:
    return Decimal(obj["__decimal__"]) if set(obj) == {"__decimal__"} else obj


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ({"external_id": 5, "order": {}}, "external_id: gave 5"),
        ({"external_id": "A"}, "order: gave nothing"),
        ({"external_id": "A", "order": []}, "order: gave a list"),
        ({"external_id": "A", "order": {}, "shop": "x"}, "unknown field shop"),
        ([1], "returned list"),
        ({"external_id": "A", "order": {"total": {"__decimal__": "1.5"}}}, "JSON cannot carry"),
    ],
)
def test_a_function_result_of_the_wrong_shape_is_a_mapping_error(result: Any, says: str) -> None:
    m = Mapper(MappingSettings(function="tests.test_mapping:returns_this"))
    with pytest.raises(MappingError, match=says):
        m.read(Record("t", 0, 0, None, json.dumps(result).encode()))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('external_id = "id"\n', "order is required"),
        ('external_id = "id"\norder = "{"\n', "order: not a JMESPath expression"),
        ('external_id = "id"\norder = "@"\nshop = "s"\n', "unknown field shop"),
        ("external_id = ", "not TOML"),
    ],
)
def test_a_mapping_file_that_does_not_load_is_a_configuration_error(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        compile_mapping(str(path))


def test_a_function_that_cannot_be_imported_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="no module"):
        compile_mapping(function="no_such_package.mod:fn")
    with pytest.raises(ConfigError, match="has no function"):
        compile_mapping(function="tests.test_mapping:nothing_here")


# -- the connector's functions ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ("str(id)", {"id": 820982911946154508}, "820982911946154508"),
        ("str(id)", {}, None),
        ("minor_units(p)", {"p": "0.29"}, 29),
        ("minor_units(p)", {"p": 19.99}, 1999),
        ("minor_units(p, `0`)", {"p": "1500"}, 1500),
        ("from_epoch(t, 'us')", {"t": 1793534400123456}, "2026-11-01T12:00:00.123456Z"),
        ("from_epoch(t, 'ms')", {"t": 1793534400123}, "2026-11-01T12:00:00.123Z"),
        ("from_epoch(t, 's')", {"t": 1793534400}, "2026-11-01T12:00:00Z"),
        ("split(tags, ',')", {"tags": "vip, gift wrap,,"}, ["vip", "gift wrap"]),
    ],
)
def test_connector_functions(tmp_path: Path, expression: str, value: Any, expected: Any) -> None:
    m = mapper(tmp_path, "native", {"external_id": "'x'", "order": f"{{v: {expression}}}"})
    change = m.read(Record("t", 0, 0, None, json.dumps(value).encode()))
    assert change.body.get("v") == expected


def test_header_and_key_functions_read_the_record(tmp_path: Path) -> None:
    m = mapper(tmp_path, "native", {"external_id": "key()", "order": "{topic: header('x-shopify-topic')}"})
    change = m.read(Record("t", 0, 0, b"K-1", b"{}", (("x-shopify-topic", b"orders/create"),)))
    assert change.external_id == "K-1"
    assert change.body["topic"] == "orders/create"


def test_minor_units_refuses_to_round(tmp_path: Path) -> None:
    m = mapper(tmp_path, "native", {"external_id": "'x'", "order": "{v: minor_units(p)}"})
    with pytest.raises(MappingError, match="more than 2 decimals"):
        m.read(Record("t", 0, 0, None, b'{"p": "1.999"}'))


# -- a mapped event is read exactly as a native one -------------------------------------------------
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=70)
_stamp = st.one_of(
    st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.isoformat()),
    _text,
    st.integers(),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_order = st.fixed_dictionaries(
    {},
    optional={
        "name": _text,
        "status": st.sampled_from(["active", "cancelled", "bogus"]),
        "total_price": st.fixed_dictionaries(
            {"amount": st.integers() | _text, "currency_code": st.just("USD")}
        ),
        "tags": st.lists(_text, max_size=2),
        "cancelled_at": _stamp,
        "extra": _json,
    },
)
_mapped = st.fixed_dictionaries(
    {"external_id": _text.filter(bool), "order": _order},
    optional={
        "updated_at": _stamp,
        "event_type": st.sampled_from(["order.created", "order.updated", "order.cancelled", "order.bogus"]),
    },
)


def _outcome(read: Any) -> tuple[Any, ...]:
    try:
        change: OrderChange = read()
    except InputError as exc:
        return (type(exc), exc.stage, str(exc))
    return (change.external_id, change.op, change.body, change.updated_at, change.digest, change.unknown)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mapped=_mapped, kind=st.sampled_from(["loop", "shoplazza"]))
def test_whatever_a_mapping_emits_is_validated_exactly_as_a_native_event(
    mapped: dict[str, Any], kind: str
) -> None:
    """A mapping function's result, read through the stage, ends as the native envelope a producer
    would have written for it: the same key, order, digest and body, or the same error (class, stage,
    message), vendor validation included."""
    via_mapping = Mapper(MappingSettings(function="tests.test_mapping:returns_this"))
    value = json.dumps(mapped).encode()
    order = {**mapped["order"], vendor(kind).key_field.removeprefix("order."): mapped["external_id"]}
    if "updated_at" in mapped:
        order["updated_at"] = mapped["updated_at"]
    native = json.dumps({"event_type": mapped.get("event_type", "order.updated"), "order": order}).encode()
    got = _outcome(lambda: via_mapping.read(Record("t", 0, 5, None, value), target(kind), validate=True))
    want = _outcome(lambda: decode(Record("t", 0, 5, None, native), target=target(kind), validate=True))
    assert got == want


def test_the_property_sees_both_outcomes() -> None:
    """The comparison above can fail: a valid and an invalid mapped event differ from each other."""
    m = Mapper(MappingSettings(function="tests.test_mapping:returns_this"))
    good = {"external_id": "A", "order": {"status": "active"}}
    bad = {"external_id": "A", "order": {"status": "cancelled"}}
    assert (
        _outcome(lambda: m.read(Record("t", 0, 0, None, json.dumps(good).encode()), validate=True))[1]
        == "upsert"
    )
    assert _outcome(lambda: m.read(Record("t", 0, 0, None, json.dumps(bad).encode()), validate=True))[0] is (
        OrderValidationError
    )


# -- settings ---------------------------------------------------------------------------------------
def test_default_mapping_settings_are_inactive() -> None:
    assert not MappingSettings().active
    assert MappingSettings(envelope="debezium").active
    with pytest.raises(ValueError, match="not both"):
        MappingSettings(file="a.toml", function="a:b")
    with pytest.raises(ValueError, match=r"package\.module:function"):
        MappingSettings(function="not a path")


# -- many tenants -----------------------------------------------------------------------------------
def test_each_tenant_reads_with_its_own_mapping_else_the_deployments(tmp_path: Path) -> None:
    """With many shops the tenant is found first (a field of the event), then its mapping applies;
    a tenant without one uses the deployment's."""
    own = mapping_file(tmp_path, {"external_id": "str(ref)", "order": "{name: title}"}, "own.toml")
    deployment = mapping_file(tmp_path, {"external_id": "str(id)", "order": "{name: name}"}, "all.toml")
    located: list[str] = []

    def locate(record: Record, data: Any) -> tuple[str, Target]:
        located.append(data["shop"])
        return data["shop"], target("loop", "v1")

    m = Mapper(
        MappingSettings(file=deployment),
        tenant_mapping=lambda tenant: compile_mapping(own) if tenant == "acme" else None,
    )
    acme = m.read(Record("t", 0, 0, None, b'{"shop": "acme", "ref": 9, "title": "#9"}'), locate=locate)
    bolt = m.read(Record("t", 0, 1, None, b'{"shop": "bolt", "id": 7, "name": "#7"}'), locate=locate)
    assert (acme.tenant, acme.external_id, acme.body["name"]) == ("acme", "9", "#9")
    assert (bolt.tenant, bolt.external_id, bolt.body["name"]) == ("bolt", "7", "#7")
    assert acme.key == "acme/9"
    assert located == ["acme", "bolt"]


# -- a lazy read's digest -----------------------------------------------------------------------------
def test_a_lazy_reads_digest_covers_the_record_as_written_headers_included(tmp_path: Path) -> None:
    """The body of a lazy read is mapped only at send time, so its digest (what tells an identical
    event) is taken over the record as written: a replay is identical, but a binary CloudEvent whose
    value is the same and whose time or another attribute (headers) differs is not, or the newer
    state would be skipped as identical and never sent."""
    fields = {
        "external_id": "data.orderId",
        "updated_at": "time",
        "order": "{status: data.state == 'cancelled' && 'cancelled' || 'active', name: subject}",
    }
    m = mapper(tmp_path, "cloudevents", fields)

    def read(offset: int, **headers: str) -> OrderChange:
        binary = json.loads(json.dumps(CLOUDEVENTS["binary"]))
        binary["headers"].update(headers)
        return m.read(record(binary, offset), lazy=True)

    first = read(1)
    assert first.pending is not None  # read lazily: the body waits for the send
    assert read(2).digest == first.digest  # the same record again (a replay)
    assert read(3, ce_time="2018-04-05T03:57:00Z").digest != first.digest  # a newer state
    assert read(4, ce_subject="#1002").digest != first.digest  # an attribute only the body reads


def test_a_lazy_reads_digest_waits_only_when_its_order_has_an_updated_at(tmp_path: Path) -> None:
    """The digest of a lazy read covers the record, hence its time; it is made on first use when
    the mapping gives ``updated_at`` (a later one proves it different: ``differs_after``), at once
    when the event is ordered by its envelope's time only, which the body does not carry."""
    fields = {"external_id": "data.orderId", "order": "{name: subject}"}
    binary = CLOUDEVENTS["binary"]
    by_envelope = mapper(tmp_path, "cloudevents", fields).read(record(binary), lazy=True)
    stamp = by_envelope.version.updated_at
    assert stamp is not None
    before = Version(stamp - 1, by_envelope.tp, 0)
    assert not by_envelope.differs_after(before)
    stamping = mapper(tmp_path, "cloudevents", {**fields, "updated_at": "time"})
    stamped = stamping.read(record(binary), lazy=True)
    assert stamped.differs_after(before)
    assert stamped.digest == stamping.read(record(binary, 1), lazy=True).digest, "a replay"
    assert not stamped.differs_after(before), "made: compared as it is"


def test_a_pending_lazy_change_holds_its_record_not_the_parsed_document(tmp_path: Path) -> None:
    """What a lazy read leaves pending is the record's bytes: the document parsed for the head is let
    go, and parsed again when the body is made (a parsed document is several times the size of its
    bytes, which is all ``kafka.max_unresolved_bytes`` counts). Its body is still the eager read's."""
    m = mapper(
        tmp_path, "native", {"external_id": "str(id)", "updated_at": "at", "order": "{n: n, lines: lines}"}
    )
    lines = [{"sku": f"sku-{i}", "qty": i, "price": "1.50", "tags": ["a", "b"]} for i in range(200)]
    records = [
        Record(
            "t",
            0,
            i,
            None,
            json.dumps({"id": i, "at": "2026-11-01T12:00:00Z", "n": f"#{i}", "lines": lines}).encode(),
        )
        for i in range(50)
    ]
    raw = sum(len(r.value or b"") for r in records)
    tracemalloc.start()
    try:
        changes = [m.read(r, lazy=True) for r in records]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(c.pending is not None for c in changes)
    assert held < raw / 4, f"{held:,} bytes held by {len(changes)} pending changes of {raw:,} bytes"
    eager = m.read(records[7])
    complete(changes[7])
    assert changes[7].body == eager.body


# -- compiled expressions agree with jmespath's interpreter -----------------------------------------
EXPRESSIONS = [
    "a", "a.b.c", "a[0]", "a[-1].b", "a[1:3]", "a[::-1]", "a[*].b", "a[].b", "a.*.b", "a[]", "a[][]",
    "a[?b > `1`].c", "a[?b == 'x'] | [0]", "a | b", "[a, b.c]", "{x: a, y: {z: b}}", "a || b", "a && b",
    "!a", "a == b", "a != b", "a < b", "a <= b", "a > b", "a >= b", "`[1, {\"k\": null}]`", "'text'", "@",
    "length(a)", "keys(@)", "sort_by(a, &b)", "max_by(a, &b)", "join(', ', a)", "sum(a)", "to_string(a)",
    "str(a)", "minor_units(a)", "split(a, ',')", "not_null(a, b, 'c')", "a[*].[b, c]", "a.b[?c].{d: d}",
    "contains(a, 'x')", "abs(a)", "length(@)", "a[0:2].b || 'none'", "merge(a, b)", "type(a)",
]  # fmt: skip
_keys = st.sampled_from(["a", "b", "c", "d"])
_documents = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False) | st.sampled_from(["", "x", "1.5", "a,b"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _search(run: Any) -> Any:
    try:
        return ("ok", run())
    except Exception as exc:  # the same exception class and message, whichever side raises
        return ("error", type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None)
@given(document=_documents, expression=st.sampled_from(EXPRESSIONS))
def test_compiled_expressions_agree_with_the_interpreter(document: Any, expression: str) -> None:
    import jmespath

    from connector.mapping._compile import Compiler
    from connector.mapping._functions import FUNCTIONS

    options = jmespath.Options(custom_functions=FUNCTIONS)
    compiled = Compiler(options).compile(expression)
    assert _search(lambda: compiled(document)) == _search(
        lambda: jmespath.search(expression, document, options)
    )


_EDGES = [None, False, True, 0, 0.0, 1, 1.0, "", "x", "1", [], [0], {}, {"a": 0}]


@pytest.mark.parametrize(
    "expression",
    [
        "a || b",
        "a && b",
        "a || 'y'",
        "a && 'y'",
        "a == b",
        "a != b",
        "a == 'x'",
        "a != 'x'",
        "'1' != a",
        "!a",
    ],
)
def test_truth_and_equality_agree_with_the_interpreter_on_every_edge(expression: str) -> None:
    """The compiled truth test and equality take shortcuts (a string compared, an empty value): on
    every pair of JMESPath's edge values (0 is true; a bool never equals a number), with either kind
    of right side, they agree."""
    import jmespath

    from connector.mapping._compile import Compiler
    from connector.mapping._functions import FUNCTIONS

    options = jmespath.Options(custom_functions=FUNCTIONS)
    compiled = Compiler(options).compile(expression)
    for a in _EDGES:
        for b in _EDGES:
            document = {"a": a, "b": b}
            expected = _search(lambda d=document: jmespath.search(expression, d, options))
            assert _search(lambda d=document: compiled(d)) == expected, document


def test_with_many_tenants_and_no_mapping_a_native_event_reads_as_before() -> None:
    """Many tenants put every record through the stage: without a mapping, a value that is not an
    object is still a decode error before routing, and an event reads as decode reads it."""

    def locate(record: Record, data: Any) -> tuple[str, Target]:
        if not isinstance(data, dict):
            raise AssertionError("routed before the value was checked")
        return "acme", target("loop", "v1")

    m = Mapper(MappingSettings(), tenant_mapping=lambda tenant: None)
    with pytest.raises(DecodeError, match="value is JSON list, expected an object"):
        m.read(Record("t", 0, 0, None, b"[1]"), locate=locate)
    value = b'{"event_type": "order.updated", "order": {"external_id": "A", "updated_at": "2026-01-01T00:00:00Z"}}'
    mapped = m.read(Record("t", 0, 1, None, value), locate=locate)
    native = decode(Record("t", 0, 1, None, value), validate=False, locate=locate)
    assert _outcome(lambda: mapped) == _outcome(lambda: native)
    assert mapped.tenant == native.tenant == "acme"


# -- Debezium decimals at decimal.handling.mode=precise (the default) --------------------------------
PRECISE = json.loads((FIXTURES / "debezium-precise.json").read_text())


def test_debezium_precise_decimals_are_read_exactly_from_the_schema(tmp_path: Path) -> None:
    """Issue 21: NUMERIC columns arrive as base64 bytes (Decimal, scale 2 in the schema) or as a
    {scale, value} struct (VariableScaleDecimal): with the JSON converter's schema both read as exact
    decimal text, so minor_units gives the amount."""
    m = mapper(tmp_path, "debezium", PRECISE["mapping"])
    created, updated = m.read(record(PRECISE["create"], 1)), m.read(record(PRECISE["update"], 2))
    assert created.body["total_price"] == {"amount": 41117, "currency_code": "EUR"}
    assert updated.body["total_price"] == {"amount": 1250, "currency_code": "EUR"}
    assert (created.body["discount"], updated.body["discount"]) == ("0.125", "-12.34")


def test_a_default_replica_identity_delete_is_ordered_after_the_update_it_follows(tmp_path: Path) -> None:
    """The delete's before holds only the key (updated_at at its schema default, 1970): it is ordered
    at source.ts_ms, after the update; its tombstone is the same delete."""
    m = mapper(tmp_path, "debezium", PRECISE["mapping"])
    update = m.read(record(PRECISE["update"], 2))
    delete, tombstone = m.read(record(PRECISE["delete"], 3)), m.read(record(PRECISE["tombstone"], 4))
    assert (delete.op, delete.external_id, tombstone.external_id) == ("delete", "pg-1", "pg-1")
    assert update.version.older_than(delete.version)
    assert delete.updated_at is not None
    assert delete.updated_at.isoformat() == "2026-12-06T06:27:20.448000+00:00"


@pytest.mark.parametrize("column", ["total", "discount"])
def test_precise_decimals_without_their_schema_are_a_map_error_naming_the_setting(
    tmp_path: Path, column: str
) -> None:
    """Without the schema the bytes cannot be read: the map error says which setting to change."""
    fields = dict(PRECISE["mapping"], order=f"{{total_price: {{amount: minor_units({column})}}}}")
    m = mapper(tmp_path, "debezium", fields)
    bare = {"key": PRECISE["update"]["key"]["payload"], "value": PRECISE["update"]["value"]["payload"]}
    with pytest.raises(MappingError) as caught:
        m.read(record(bare))
    assert caught.value.stage == "map"
    assert caught.value.path == "order.total_price.amount"
    assert "decimal.handling.mode=string" in str(caught.value)
    assert "schemas.enable=true" in str(caught.value)


def test_a_failing_expression_names_the_place_inside_it(tmp_path: Path) -> None:
    """Issue 21: the error names where in the order the expression failed (a line item's price), not
    only the field whose expression it is."""
    order = (
        "{total_price: {amount: minor_units(data.total)}, "
        "line_items: data.items[].{external_id: str(id), unit_price: {amount: minor_units(price)}}}"
    )
    m = mapper(tmp_path, "native", {"external_id": "str(id)", "order": order})
    value = {
        "id": 7,
        "data": {"total": "3.00", "items": [{"id": 1, "price": "1.00"}, {"id": 2, "price": "2,00"}]},
    }
    with pytest.raises(MappingError) as caught:
        m.read(Record("t", 0, 0, None, json.dumps(value).encode()))
    assert caught.value.path == "order.line_items[1].unit_price.amount"
    assert (
        "failed at order.line_items[1].unit_price.amount: minor_units: '2,00' is not a decimal amount"
        in str(caught.value)
    )


def test_a_money_object_whose_amount_gave_null_is_refused_not_sent_without_it(tmp_path: Path) -> None:
    """minor_units(null) is null, so the key is left out; Loop's pages show amount on every money
    object, and the model requires it (the stricter reading): such a body is not valid."""
    fields = {
        "external_id": "str(id)",
        "order": "{total_price: {amount: minor_units(total), currency_code: 'EUR'}}",
    }
    m = mapper(tmp_path, "native", fields)
    with pytest.raises(OrderValidationError, match=r"order\.total_price\.amount: Field required"):
        m.read(Record("t", 0, 0, None, b'{"id": 7}'), validate=True)


def test_a_delete_committed_in_the_millisecond_of_the_update_before_it_still_sorts_after_it(
    tmp_path: Path,
) -> None:
    """Found on the real chain: the row's updated_at (the database's clock, microseconds) fell in the
    same millisecond as the delete's source.ts_ms, truncated, which sorted the delete before the
    update (skipped as stale; the tombstone deleted the order, ordered by offset alone, and the update
    Debezium sent again after a restart brought it back). source.ts_us orders it exactly."""
    m = mapper(tmp_path, "debezium", PRECISE["mapping"])
    update, delete = json.loads(json.dumps(PRECISE["update"])), json.loads(json.dumps(PRECISE["delete"]))
    update["value"]["payload"]["after"]["updated_at"] = "2026-12-06T06:27:20.448455Z"
    delete["value"]["payload"]["source"]["ts_us"] = 1796538440448600
    first, second = m.read(record(update, 2)), m.read(record(delete, 3))
    assert first.version.older_than(second.version)
    assert second.updated_at is not None
    assert second.updated_at.isoformat() == "2026-12-06T06:27:20.448600+00:00"


# -- the two kinds of mapping, side by side -----------------------------------------------------------
def _shopify_events() -> list[Event]:
    lines = (ROOT / "examples" / "shopify" / "events.jsonl").read_text().splitlines()
    return [
        Event(value=fields["value"], key=fields["key"], headers=fields["headers"], topic="shopify.orders")
        for fields in map(json.loads, lines)
    ]


def test_the_shopify_examples_mapping_file_and_function_map_every_event_alike() -> None:
    """``examples/shopify`` ships one mapping twice, as JMESPath (``mapping.toml``) and as Python
    (``mapping.py``): each event maps to the same result, or fails in both."""
    file = FileMapping(ROOT / "examples" / "shopify" / "mapping.toml")
    function = FunctionMapping("examples.shopify.mapping:to_loop")
    assert str(file).startswith("mapping file ")
    assert str(function) == "mapping function examples.shopify.mapping:to_loop"
    outcomes = []
    for event in _shopify_events():
        try:
            by_file: Any = file.apply(event)
        except MappingError:
            by_file = MappingError
        try:
            by_function: Any = function.apply(event)
        except MappingError:
            by_function = MappingError
        assert by_file == by_function, event.value.get("id")
        outcomes.append(by_file if by_file is MappingError else by_file["event_type"])
    assert outcomes.count(MappingError) == 1, "the example's one unreadable amount"
    assert "order.deleted" in outcomes
