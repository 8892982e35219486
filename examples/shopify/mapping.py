"""The Shopify webhook mapping of ``mapping.toml``, in Python: what a mapping function looks like.

``CONNECTOR_MAPPING__FUNCTION=examples.shopify.mapping:to_loop`` (from the repository's root; in a
deployment, a module of your own package). The function gets the event after its envelope was taken
off and returns ``{external_id, updated_at, event_type, order}``; whatever it raises dead-letters the
event with stage ``map``, the function's name and where it raised.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connector.mapping import Event, Mapped


def _cents(amount: str) -> int:
    """Shopify's decimal text ("199.00") in minor units, exactly."""
    return int(Decimal(amount).scaleb(2).to_integral_exact())


def to_loop(event: Event) -> Mapped:
    """A Shopify order webhook body to a Loop Upsert Order."""
    shopify: dict[str, Any] = event.value
    external_id = str(shopify["id"])
    topic = event.headers.get("x-shopify-topic", "")
    if topic == "orders/delete":
        return {"external_id": external_id, "event_type": "order.deleted"}
    currency = shopify["currency"]
    cancelled = shopify.get("cancelled_at")
    order: dict[str, Any] = {
        "name": shopify["name"],
        "status": "cancelled" if cancelled else "active",
        "channel": "online",
        "taxes_included": shopify["taxes_included"],
        "total_price": {"amount": _cents(shopify["total_price"]), "currency_code": currency},
        "total_taxes": {"amount": _cents(shopify["total_tax"]), "currency_code": currency},
        "total_discounts": {"amount": _cents(shopify["total_discounts"]), "currency_code": currency},
        "line_items": [
            {
                "external_id": str(item["id"]),
                "product": {"id": item["product_id"]},
                "product_variant": {"id": item["variant_id"]},
                "quantity": item["quantity"],
                "unit_price": {
                    "amount": _cents(item["price"]),
                    "currency_code": item["price_set"]["shop_money"]["currency_code"],
                },
                "taxable": item["taxable"],
            }
            for item in shopify["line_items"]
        ],
        "tags": [t.strip() for t in shopify.get("tags", "").split(",") if t.strip()],
        "created_at": shopify["created_at"],
        "processed_at": shopify["processed_at"],
    }
    for field in ("financial_status", "cancel_reason"):
        if shopify.get(field) is not None:
            order[field] = shopify[field]
    if cancelled:
        order["cancelled_at"] = cancelled
    if shopify.get("customer"):
        order["customer"] = {"external_id": str(shopify["customer"]["id"])}
    address = shopify.get("shipping_address")
    if address:
        order["shipping_address"] = {
            k: v
            for k, v in {
                "name": address.get("name"),
                "company": address.get("company"),
                "address1": address.get("address1"),
                "city": address.get("city"),
                "region": address.get("province_code"),
                "postal_code": address.get("zip"),
                "country_code": address.get("country_code"),
            }.items()
            if v is not None
        }
    event_type = (
        "order.cancelled" if cancelled else "order.created" if topic == "orders/create" else "order.updated"
    )
    return {
        "external_id": external_id,
        "updated_at": shopify["updated_at"],
        "event_type": event_type,
        "order": order,
    }
