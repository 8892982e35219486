"""Shoplazza Update Order (API 2025-06), from Shoplazza's Update Order page; its example values are kept in
``tests/fixtures/vendor/shoplazza-update-order.json``.

An event's order carries the fields of ``order`` in ``PUT /openapi/2025-06/orders/{order_id}`` plus how
to find the order: ``id`` (the order_id) or ``number`` (resolved with ``GET /orders/number/{number}``),
and optionally ``updated_at`` to order events of one order. Those three are not sent in the body.
Choices where the sources differ: ``tags`` is ``{"values": [...]}`` as on the 2025-06 page (the 2026-01
CLI metadata has a flat array); the Shoplazza pages state no maximum lengths, so none are enforced;
they type no field as nullable, so an explicit null is rejected (a field may be omitted).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from connector.models._types import NonEmpty, Timestamp

NumericString = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$")]
CONTROL_FIELDS = ("id", "number", "updated_at")


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Shoplazza types these fields without null (Loop's pages say "string | null"; these do not).
        if value is None:
            raise ValueError("must not be null: omit the field instead")
        return value


class ShoplazzaTags(_Body):
    values: list[str] | None = None


class ShoplazzaAddress(_Body):
    last_name: str | None = None
    first_name: str | None = None
    phone: str | None = None
    email: str | None = None
    country: str | None = None
    country_code: Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")] | None = None
    province: str | None = None
    province_code: str | None = None
    area: str | None = None
    city: str | None = None
    address: str | None = None
    address1: str | None = None
    company: str | None = None
    zip: str | None = None
    phone_area_code: str | None = None


class ShoplazzaShippingLine(_Body):
    shipping_name: NonEmpty
    shipping_desc: str | None = None
    shipping_price: NumericString


class ShoplazzaOrder(_Body):
    """One order update for Shoplazza, with ``id`` or ``number`` saying which order."""

    id: NonEmpty | None = None
    number: NonEmpty | None = None
    updated_at: Timestamp | None = None
    note: str | None = None
    tags: ShoplazzaTags | None = None
    buyer_accepts_marketing: StrictBool | None = None
    shipping_address: ShoplazzaAddress | None = None
    shipping_line: ShoplazzaShippingLine | None = None

    @model_validator(mode="after")
    def _named(self) -> ShoplazzaOrder:
        if self.id is None and self.number is None:
            raise ValueError("id (the order_id) or number is required to find the order")
        return self

    def sync_key(self) -> str:
        """Events are coalesced by order id, else by order number."""
        return self.id or f"number:{self.number}"


def shoplazza_update_body(order: dict[str, Any]) -> dict[str, Any]:
    """The ``{"order": {...}}`` body: the event's order without the fields that locate it."""
    return {"order": {k: v for k, v in order.items() if k not in CONTROL_FIELDS}}
