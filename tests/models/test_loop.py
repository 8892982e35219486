"""Loop order bodies: one test per documented rule, and the docs' own examples round-trip.

The examples are Loop's, copied from its reference pages into ``tests/fixtures/vendor/loop-*.json``,
each naming the page and API version it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connector.conform import describe_validation
from connector.models import LoopCreateOrder, LoopOrder, LoopUpdateOrder
from connector.vendors import vendor

VENDOR = Path(__file__).resolve().parents[1] / "fixtures" / "vendor"
M = {"amount": 100, "currency_code": "USD"}


def problems(body: dict[str, Any], model: Any = LoopOrder) -> str:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return str(describe_validation(exc))
    return ""


RULES = [
    ("external_id is required for an upsert", {}, "order.external_id: Field required"),
    ("external_id at most 64", {"external_id": "x" * 65}, "order.external_id: String should have at most 64"),
    ("name at most 100", {"name": "n" * 101}, "order.name: String should have at most 100"),
    ("secondary_identifier at most 100", {"secondary_identifier": "s" * 101}, "order.secondary_identifier"),
    ("channel at most 64", {"channel": "c" * 65}, "order.channel: String should have at most 64"),
    ("sales_channel at most 255", {"sales_channel": "c" * 256}, "order.sales_channel: String should have at most 255"),
    ("browser_ip at most 45", {"browser_ip": "1" * 46}, "order.browser_ip: String should have at most 45"),
    ("user agent at most 1000", {"client_details_user_agent": "u" * 1001}, "order.client_details_user_agent"),
    ("each tag at most 255", {"tags": ["t" * 256]}, "order.tags[0]: String should have at most 255"),
    ("status enum", {"status": "open"}, "order.status: Input should be 'active', 'archived', 'cancelled' or 'unknown'"),
    ("financial_status enum", {"financial_status": "owed"}, "order.financial_status: Input should be 'pending'"),
    ("cancel_reason enum", {"cancel_reason": "bored"}, "order.cancel_reason: Input should be 'customer'"),
    ("money is integer minor units", {"total_price": {"amount": 10.5}}, "order.total_price.amount: Input should be a valid integer"),
    ("money amount is required", {"total_tip_received": {"currency_code": "USD"}}, "order.total_tip_received.amount: Field required"),
    ("currency is ISO 4217", {"total_taxes": {"amount": 1, "currency_code": "usd"}}, "order.total_taxes.currency_code: String should match"),
    ("created_at RFC 3339", {"created_at": "2026-01-01 10:00"}, "order.created_at: must be an RFC 3339 timestamp"),
    ("processed_at has a time zone", {"processed_at": "2026-01-01T10:00:00"}, "order.processed_at: must be an RFC 3339"),
    ("cancelled_at is a real time", {"status": "cancelled", "cancelled_at": "2026-02-30T10:00:00Z"}, "order.cancelled_at: must be an RFC 3339 timestamp with a time zone, e.g. 2023-04-25T13:25:00-05:00 (not a real date"),
    ("cancelled needs cancelled_at", {"status": "cancelled"}, "order: cancelled_at is required when status is 'cancelled'"),
    ("customer by id or external_id, not both", {"customer": {"id": 1, "external_id": "c"}}, "order.customer: give the customer's Loop id or its external_id, not both"),
    ("line item quantity is a non-negative integer", {"line_items": [{"quantity": -1}]}, "order.line_items[0].quantity: Input should be greater than or equal to 0"),
    ("taxable is a boolean", {"line_items": [{"taxable": "yes"}]}, "order.line_items[0].taxable: Input should be a valid boolean"),
    ("fulfilled_at RFC 3339", {"fulfillments": [{"fulfilled_at": "now"}]}, "order.fulfillments[0].fulfilled_at: must be an RFC 3339"),
    ("tracking numbers are strings", {"fulfillments": [{"tracking_numbers": [123]}]}, "order.fulfillments[0].tracking_numbers[0]: Input should be a valid string"),
    ("product is referenced by integer id", {"line_items": [{"product": {"id": "p1"}}]}, "order.line_items[0].product.id: Input should be a valid integer"),
    ("metadata needs a key", {"metadata": [{"value": 1}]}, "order.metadata[0].key: Field required"),
    ("refund line item restock is a boolean", {"refunds": [{"line_item": {"restock": "no"}}]}, "order.refunds[0]"),
    ("taxes_included is a boolean", {"taxes_included": "true"}, "order.taxes_included: Input should be a valid boolean"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "fields", "expected"), RULES, ids=[r[0] for r in RULES])
def test_each_documented_rule_names_the_field(rule: str, fields: dict[str, Any], expected: str) -> None:
    """A body breaking the rule is rejected, naming the field path and the rule."""
    body = {"external_id": "E-1", **fields} if rule != "external_id is required for an upsert" else fields
    assert expected in problems(body)


def test_create_requires_its_documented_fields() -> None:
    """Create Order marks name, sales_channel, status, taxes_included, total_price, line_items, source."""
    found = problems({"external_id": "E"}, LoopCreateOrder)
    for field in ("name", "sales_channel", "status", "taxes_included", "total_price", "line_items", "source"):
        assert f"order.{field}: Field required" in found


def test_version_2026_10_requires_created_at() -> None:
    """From API version 2026-10 on, created_at is required (optional in 2026-07 and v1)."""
    assert "order.created_at: Field required" in problems(
        {"external_id": "E"}, vendor("loop").model("2026-10")
    )
    assert problems({"external_id": "E"}, vendor("loop").model("v1")) == ""


def test_update_does_not_require_external_id() -> None:
    """Update Order names the order by its Loop id in the path."""
    assert problems({"name": "x"}, LoopUpdateOrder) == ""


def test_offending_value_is_shown_quoted_and_truncated() -> None:
    """The message shows the value as JSON, cut after 80 characters."""
    message = problems({"external_id": "E", "name": "n" * 500})
    assert '(value: "nnnnnnnn' in message
    assert "…" in message


def _vendor(name: str) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads((VENDOR / name).read_text())
    return fixture


def _round_trip(model: type[LoopOrder], body: dict[str, Any]) -> dict[str, Any]:
    return model.model_validate(body).model_dump(mode="json", exclude_unset=True)


def test_create_example_round_trips_once_given_its_required_status() -> None:
    """The Create Order example omits ``status``, which the same page marks required (we take the
    stricter reading); with it added, the example parses and serializes back to the same JSON."""
    body = _vendor("loop-create-order.json")["body"]
    assert "order.status: Field required" in problems(body, LoopCreateOrder)
    body["status"] = "active"
    assert _round_trip(LoopCreateOrder, body) == body


def test_update_example_round_trips_without_its_double_customer_reference() -> None:
    """The Update Order example, less customer.external_id: the example sends both the customer's id
    and external id, which the reference notes call a validation error."""
    body = _vendor("loop-update-order.json")["body"]
    assert "not both" in problems(body, LoopUpdateOrder)
    del body["customer"]["external_id"]
    assert _round_trip(LoopUpdateOrder, body) == body


def test_upsert_page_examples_round_trip() -> None:
    """The Upsert page's field examples (addresses, money, ids, times), together in one order with a
    status from its enum, round-trip; so does each of the three money examples it gives total_price."""
    examples = _vendor("loop-upsert-order.json")["field_examples"]
    body = {field: values[0] for field, values in examples.items()} | {"status": "active"}
    assert {"external_id", "shipping_address", "total_price", "cancelled_at"} <= body.keys()
    assert _round_trip(LoopOrder, body) == body
    assert len(examples["total_price"]) == 3
    for money in examples["total_price"]:
        order = {"external_id": body["external_id"], "total_price": money}
        assert _round_trip(LoopOrder, order) == order


def test_unknown_fields_are_kept_when_serializing() -> None:
    """Fields the model does not know survive the round trip."""
    body = {"external_id": "E", "line_items": [{"quantity": 1, "gift_wrap": True}], "loyalty": {"tier": 2}}
    assert _round_trip(LoopOrder, body) == body


def test_nothing_unsent_is_serialized() -> None:
    """No nulls or defaults the caller did not send appear in the output."""
    assert _round_trip(LoopOrder, {"external_id": "E"}) == {"external_id": "E"}
