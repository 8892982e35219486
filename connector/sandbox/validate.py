"""The sandbox's own checks of Loop order bodies, written apart from ``connector.models`` on purpose.

A schema shared by client and server would let one bug pass both sides; these rules are re-read from
Loop's reference pages and coded by hand. Errors are ``{field path: [message]}``, Laravel style,
which is how Loop answers 422.
"""

from __future__ import annotations

import re
from typing import Any

STATUSES = {"active", "archived", "cancelled", "unknown"}
FINANCIAL = {"pending", "authorized", "partially_paid", "paid", "partially_refunded", "refunded", "voided"}
CANCEL_REASONS = {"customer", "declined", "fraud", "inventory", "other", "staff"}
MAX_LENGTHS = {
    "external_id": 64,
    "name": 100,
    "secondary_identifier": 100,
    "channel": 64,
    "sales_channel": 255,
    "browser_ip": 45,
    "client_details_user_agent": 1000,
    "financial_status": 30,
    "cancel_reason": 30,
}
MONEY_FIELDS = (
    "total_price",
    "total_price_presentment",
    "total_discounts",
    "total_discounts_presentment",
    "total_taxes",
    "total_taxes_presentment",
    "total_tip_received",
)
TIMESTAMPS = ("created_at", "updated_at", "cancelled_at", "processed_at")
CREATE_REQUIRED = ("name", "sales_channel", "status", "taxes_included", "total_price", "line_items", "source")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

Errors = dict[str, list[str]]


def _add(errors: Errors, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def _money(errors: Errors, path: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        _add(errors, path, f"The {path} must be an object.")
        return
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        _add(errors, f"{path}.amount", f"The {path}.amount must be an integer.")
    code = value.get("currency_code")
    if code is not None and not (isinstance(code, str) and _CURRENCY.match(code)):
        _add(errors, f"{path}.currency_code", f"The {path}.currency_code must be a 3-letter ISO code.")


def _line_items(errors: Errors, items: Any) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        _add(errors, "line_items", "The line_items must be an array.")
        return
    for i, item in enumerate(items):
        path = f"line_items.{i}"
        if not isinstance(item, dict):
            _add(errors, path, f"The {path} must be an object.")
            continue
        qty = item.get("quantity")
        if qty is not None and (isinstance(qty, bool) or not isinstance(qty, int) or qty < 0):
            _add(errors, f"{path}.quantity", f"The {path}.quantity must be a non-negative integer.")
        for money in ("unit_price", "unit_price_presentment", "unit_discounts", "unit_discounts_presentment"):
            _money(errors, f"{path}.{money}", item.get(money))
        ext = item.get("external_id")
        if isinstance(ext, str) and len(ext) > 64:
            _add(
                errors,
                f"{path}.external_id",
                f"The {path}.external_id may not be greater than 64 characters.",
            )


def validate_order(body: Any, *, operation: str, version: str) -> Errors:
    """Check an order body for ``operation`` (upsert, create, update) under API ``version``."""
    errors: Errors = {}
    if not isinstance(body, dict):
        return {"body": ["The request body must be a JSON object."]}
    if operation == "upsert" and not body.get("external_id"):
        _add(errors, "external_id", "The external_id field is required.")
    if operation == "create":
        for field in CREATE_REQUIRED:
            if field not in body:
                _add(errors, field, f"The {field} field is required.")
    if version == "2026-10" and operation in ("upsert", "create") and not body.get("created_at"):
        _add(errors, "created_at", "The created_at field is required.")
    for field, limit in MAX_LENGTHS.items():
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            _add(errors, field, f"The {field} must be a string.")
        elif len(value) > limit:
            _add(errors, field, f"The {field} may not be greater than {limit} characters.")
    for field, allowed in (
        ("status", STATUSES),
        ("financial_status", FINANCIAL),
        ("cancel_reason", CANCEL_REASONS),
    ):
        value = body.get(field)
        if value is not None and value not in allowed:
            _add(errors, field, f"The selected {field} is invalid.")
    for field in TIMESTAMPS:
        value = body.get(field)
        if value is not None and not (isinstance(value, str) and _RFC3339.match(value)):
            _add(errors, field, f"The {field} is not a valid RFC 3339 date-time.")
    if body.get("status") == "cancelled" and not body.get("cancelled_at"):
        _add(errors, "cancelled_at", "The cancelled_at field is required when status is cancelled.")
    for field in MONEY_FIELDS:
        _money(errors, field, body.get(field))
    customer = body.get("customer")
    if (
        isinstance(customer, dict)
        and customer.get("id") is not None
        and customer.get("external_id") is not None
    ):
        _add(errors, "customer", "Provide the customer id or external_id, not both.")
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        _add(errors, "tags", "The tags must be an array of strings.")
    if body.get("taxes_included") is not None and not isinstance(body.get("taxes_included"), bool):
        _add(errors, "taxes_included", "The taxes_included field must be true or false.")
    _line_items(errors, body.get("line_items"))
    return errors
