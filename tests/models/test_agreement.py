"""Property: any order our models accept, the sandbox (validating with its own code) accepts too."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.models import LoopOrder, ShoplazzaOrder, shoplazza_update_body
from connector.sandbox import validate_order
from connector.sandbox.shoplazza import validate_update

text = st.text(max_size=120)
maybe = st.one_of
timestamps = st.one_of(
    st.sampled_from(["2023-04-25T13:25:00-05:00", "2026-11-01T00:00:00Z", "2026-11-01T00:00:00.123456789+01:00",
                     "2026-11-01t00:00:00z", "2026-02-30T00:00:00Z", "2026-01-01 00:00:00Z", "2026-01-01",
                     "2026-01-01T00:00Z", "20260101T000000Z"]),
    text,
)  # fmt: skip
money = st.fixed_dictionaries(
    {"amount": st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=False), st.text(max_size=4))},
    optional={"currency_code": st.one_of(st.sampled_from(["USD", "EUR", "usd", "US", "USDD"]), text)},
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), text)
line_item = st.fixed_dictionaries(
    {},
    optional={
        "external_id": text, "quantity": st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=False), text),
        "unit_price": money, "unit_discounts": money, "taxable": scalars, "product": st.fixed_dictionaries({"id": scalars}),
    },
)  # fmt: skip
loop_orders = st.fixed_dictionaries(
    {"external_id": st.one_of(st.text(min_size=1, max_size=70), scalars)},
    optional={
        "name": st.one_of(st.text(max_size=110), scalars),
        "status": st.one_of(st.sampled_from(["active", "archived", "cancelled", "unknown", "open"]), scalars),
        "financial_status": st.one_of(st.sampled_from(["paid", "voided", "owed"]), scalars),
        "cancel_reason": st.one_of(st.sampled_from(["fraud", "staff", "bored"]), scalars),
        "channel": st.text(max_size=70), "sales_channel": st.text(max_size=260),
        "secondary_identifier": st.text(max_size=110), "browser_ip": st.text(max_size=50),
        "client_details_user_agent": st.text(max_size=1010),
        "created_at": timestamps, "updated_at": timestamps, "cancelled_at": timestamps, "processed_at": timestamps,
        "total_price": money, "total_taxes": money, "total_tip_received": money, "total_discounts_presentment": money,
        "taxes_included": scalars, "tags": st.lists(st.one_of(st.text(max_size=260), scalars), max_size=3),
        "customer": st.fixed_dictionaries({}, optional={"id": scalars, "external_id": scalars}),
        "line_items": st.lists(line_item, max_size=3), "brand_new_field": scalars,
    },
)  # fmt: skip


def _accepted(model: Any, body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loop_orders, st.sampled_from(["v1", "2026-07"]))
def test_orders_our_model_accepts_are_accepted_by_the_sandbox(body: dict[str, Any], version: str) -> None:
    """Loop: model-valid implies sandbox-valid, on every field the sandbox checks."""
    if _accepted(LoopOrder, body):
        assert validate_order(body, operation="upsert", version=version) == {}


address = st.fixed_dictionaries(
    {},
    optional={f: st.one_of(text, scalars) for f in ("first_name", "zip", "country_code", "city", "address")},
)
shoplazza_orders = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(text, scalars), "number": st.one_of(text, scalars), "note": st.one_of(text, scalars),
        "buyer_accepts_marketing": scalars, "tags": st.one_of(st.fixed_dictionaries({"values": st.lists(scalars, max_size=3)}), scalars),
        "shipping_address": st.one_of(address, scalars),
        "shipping_line": st.fixed_dictionaries({}, optional={"shipping_name": st.one_of(text, scalars),
                                                              "shipping_price": st.one_of(st.sampled_from(["10.00", "7", "-1.5", "1e3", "ten"]), scalars),
                                                              "shipping_desc": st.one_of(text, scalars)}),
    },
)  # fmt: skip


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shoplazza_orders)
def test_shoplazza_updates_our_model_accepts_are_accepted_by_the_sandbox(body: dict[str, Any]) -> None:
    """Shoplazza: model-valid implies sandbox-valid."""
    if _accepted(ShoplazzaOrder, body):
        assert validate_update(shoplazza_update_body(body)) == []
