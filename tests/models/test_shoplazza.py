"""Shoplazza Update Order bodies: documented rules and the documented example.

The example values are Shoplazza's, copied from its Update Order page (API 2025-06) into
``tests/fixtures/vendor/shoplazza-update-order.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connector.conform import describe_validation
from connector.models import ShoplazzaOrder, shoplazza_update_body

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "vendor" / "shoplazza-update-order.json"


def problems(body: dict[str, Any]) -> str:
    try:
        ShoplazzaOrder.model_validate(body)
    except ValidationError as exc:
        return str(describe_validation(exc))
    return ""


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"note": "x"}, "id (the order_id) or number is required"),
        ({"id": "o1", "shipping_line": {"shipping_price": "1.00"}}, "order.shipping_line.shipping_name: Field required"),
        ({"id": "o1", "shipping_line": {"shipping_name": "Std"}}, "order.shipping_line.shipping_price: Field required"),
        ({"id": "o1", "shipping_line": {"shipping_name": "Std", "shipping_price": "ten"}}, "order.shipping_line.shipping_price: String should match"),
        ({"id": "o1", "shipping_line": {"shipping_name": "", "shipping_price": "1"}}, "order.shipping_line.shipping_name: String should have at least 1"),
        ({"id": "o1", "tags": {"values": ["a", 1]}}, "order.tags.values[1]: Input should be a valid string"),
        ({"id": "o1", "tags": ["a"]}, "order.tags: Input should be a valid dictionary"),
        ({"id": "o1", "buyer_accepts_marketing": "yes"}, "order.buyer_accepts_marketing: Input should be a valid boolean"),
        ({"id": "o1", "shipping_address": {"zip": 12345}}, "order.shipping_address.zip: Input should be a valid string"),
        ({"id": "o1", "shipping_address": {"country_code": "CAN"}}, "order.shipping_address.country_code: String should match"),
        ({"id": "o1", "note": None}, "order.note: must not be null"),
    ],
)  # fmt: skip
def test_each_documented_rule_names_the_field(fields: dict[str, Any], expected: str) -> None:
    """A body breaking a documented rule is rejected naming the field path."""
    assert expected in problems(fields)


def test_documented_example_round_trips() -> None:
    """The page's example values, assembled into a body, parse and serialize back unchanged."""
    page = json.loads(EXAMPLE.read_text())
    body: dict[str, Any] = {"id": page["path_parameters"]["order_id"]}
    for row in page["body_parameters"]:
        node = body
        *parents, leaf = row["name"].removeprefix("order.").split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = row["example"]
    assert body["shipping_line"] == {
        "shipping_name": "Standard Shipping",
        "shipping_desc": "3-5 business days delivery",
        "shipping_price": "10.00",
    }
    assert body["tags"] == {"values": ["urgent", "gift"]}
    assert len(body["shipping_address"]) == 15
    model = ShoplazzaOrder.model_validate(body)
    assert model.model_dump(mode="json", exclude_unset=True) == body
    assert shoplazza_update_body(body) == {"order": {k: v for k, v in body.items() if k != "id"}}
