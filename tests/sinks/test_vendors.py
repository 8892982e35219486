"""The vendor clients against the sandbox: the calls they make and the errors they raise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.config import SinkSettings
from connector.errors import AuthError, RejectedError
from connector.sandbox import Sandbox
from connector.structs import OrderChange, Record
from connector.vendors.loop import LoopSink
from connector.vendors.shoplazza import ShoplazzaSink


def change(key: str, body: dict[str, object], op: str = "upsert") -> OrderChange:
    return OrderChange(Record("t", 0, 0, key.encode(), b"{}"), key, op, body)  # type: ignore[arg-type]


async def test_loop_create_update_mode_looks_up_once_then_updates_by_id(sandbox: Sandbox) -> None:
    """create_update: GET (404) then POST to create; later changes PUT /orders/{id} from the cache."""
    settings = SinkSettings(base_url=sandbox.url, api_key="test-key", mode="create_update")
    body = {
        "external_id": "C-1",
        "name": "#1",
        "sales_channel": "web",
        "status": "active",
        "taxes_included": True,
        "total_price": {"amount": 100},
        "line_items": [],
        "source": {"name": "shop"},
    }
    async with LoopSink(settings) as sink:
        await sink.apply(change("C-1", body))
        await sink.apply(change("C-1", {**body, "name": "#1b"}))
        await sink.apply(change("C-1", {**body, "name": "#1c"}))
    calls = [(r.method, r.path.split("/api/v1")[1]) for r in sandbox.store.requests]
    order_id = sandbox.store.by_external["C-1"]
    assert calls == [
        ("GET", "/orders/external/C-1"),
        ("POST", "/orders"),
        ("PUT", f"/orders/{order_id}"),
        ("PUT", f"/orders/{order_id}"),
    ]
    assert sandbox.store.get_external("C-1")["name"] == "#1c"  # type: ignore[index]


async def test_loop_rejection_names_the_field_from_the_vendor(sandbox: Sandbox) -> None:
    """A 422 becomes RejectedError whose message carries Loop's field errors."""
    async with LoopSink(SinkSettings(base_url=sandbox.url, api_key="test-key")) as sink:
        with pytest.raises(RejectedError, match="status: The selected status is invalid") as caught:
            await sink.apply(change("X", {"external_id": "X", "status": "nope"}))
    assert caught.value.status == 422


async def test_shoplazza_resolves_a_number_once_and_sends_the_order_envelope(sandbox: Sandbox) -> None:
    """Orders named by number: one GET /orders/number/{n}, cached; PUT carries {"order": ...}."""
    sandbox.shoplazza.seed("o-77", "1077")
    settings = SinkSettings(kind="shoplazza", base_url=sandbox.url, api_key="test-key")
    async with ShoplazzaSink(settings) as sink:
        for note in ("a", "b"):
            await sink.apply(
                change("number:1077", {"number": "1077", "note": note, "updated_at": "2026-01-01T00:00:00Z"})
            )
    assert sink.lookups == 1
    assert [(r.method, r.path) for r in sandbox.store.requests] == [
        ("GET", "/openapi/2025-06/orders/number/1077"),
        ("PUT", "/openapi/2025-06/orders/o-77"),
        ("PUT", "/openapi/2025-06/orders/o-77"),
    ]
    held = sandbox.shoplazza.orders["o-77"]
    assert held["note"] == "b"
    assert "number" in held
    assert held["updated_at"] != "2026-01-01T00:00:00Z", "control fields are not sent"


async def test_shoplazza_errors_carry_the_vendor_message_and_request_id(sandbox: Sandbox) -> None:
    """401 {"error"} becomes AuthError with the message and the Request-Id."""
    settings = SinkSettings(kind="shoplazza", base_url=sandbox.url, api_key="wrong")
    async with ShoplazzaSink(settings) as sink:
        with pytest.raises(AuthError, match=r"store is not active \(Request-Id [0-9a-f]{32}\)"):
            await sink.apply(change("o-1", {"id": "o-1", "note": "x"}))


async def test_shoplazza_delete_by_id(sandbox: Sandbox) -> None:
    """A delete removes the order; deleting it again is not an error."""
    sandbox.shoplazza.seed("o-9", "1009")
    settings = SinkSettings(kind="shoplazza", base_url=sandbox.url, api_key="test-key")
    async with ShoplazzaSink(settings) as sink:
        await sink.apply(change("o-9", {}, op="delete"))
        await sink.apply(change("o-9", {}, op="delete"))
    assert "o-9" not in sandbox.shoplazza.orders


async def test_shoplazza_tombstone_deletes_the_order_its_key_was_resolved_to(sandbox: Sandbox) -> None:
    """Found by review: a tombstone keyed like the order's earlier events deletes the order id those
    events resolved to (here by number), not an order whose id happens to equal the key."""
    sandbox.shoplazza.seed("o-88", "1088")
    sandbox.shoplazza.seed("1088", "9999")  # an unrelated order whose id is the other's number
    settings = SinkSettings(kind="shoplazza", base_url=sandbox.url, api_key="test-key")
    async with ShoplazzaSink(settings) as sink:
        await sink.apply(change("1088", {"number": "1088", "note": "x"}))
        await sink.apply(change("1088", {}, op="delete"))
    deletes = [r.path.rsplit("/", 1)[1] for r in sandbox.store.requests if r.method == "DELETE"]
    assert deletes == ["o-88"]


async def test_loop_reads_an_order_back_whole_and_shoplazza_says_whether_it_holds_one(
    sandbox: Sandbox,
) -> None:
    """What ``connector trace`` asks: Loop's copy of an order as it holds it (None when it holds
    none), its updated_at without an offset read as UTC (``dlq redrive`` compares it with an
    event's); whether Shoplazza holds an order, by id or by number."""
    sandbox.store.upsert({"external_id": "L-1", "name": "#1", "updated_at": "2026-12-01T00:00:00Z"})
    async with LoopSink(SinkSettings(base_url=sandbox.url, api_key="test-key")) as loop:
        held = await loop.held_order(change("L-1", {}))
        assert held is not None
        assert held["name"] == "#1"
        assert await loop.held_order(change("L-none", {})) is None
        assert (await loop.held_version(change("L-1", {})))[0] is True
        sandbox.store.upsert({"external_id": "L-2", "updated_at": "2026-12-01T10:00:00"})  # no offset
        _, stamp = await loop.held_version(change("L-2", {}))
        assert stamp == datetime(2026, 12, 1, 10, tzinfo=UTC), "read as UTC: comparable with ours"
    sandbox.shoplazza.seed("o-7", "1007")
    settings = SinkSettings(kind="shoplazza", base_url=sandbox.url, api_key="test-key")
    async with ShoplazzaSink(settings) as shop:
        sent, held = await shop.held_fields(change("o-7", {"note": "gift", "id": "o-7"}))
        assert sent == {"note": "gift"}, "what an update sends: not the fields that locate the order"
        assert held is not None
        assert held["number"] == "1007"
        assert (await shop.held_fields(change("number:1007", {"number": "1007"})))[1] is not None
        assert (await shop.held_fields(change("o-none", {})))[1] is None
        assert (await shop.held_fields(change("number:404", {"number": "404"})))[1] is None
