"""Loop Returns order request bodies (Upsert, Create and Update Order), from Loop's API reference pages;
their examples are kept in ``tests/fixtures/vendor/loop-*.json``.

Where the vendor's pages disagree we take the stricter reading and say so beside the field:
- ``external_id``: one rendered page says 100 characters, the spec and the path parameter say 64: 64.
- ``refunds[].line_item``: an object in the Create example, a list in the Update example: both accepted.
- ``order_discounts`` / ``shipping_lines`` / ``refunds`` are ``object[][]`` in the spec and ``object[]`` in
  responses: both accepted.
- ``source``: ``{"name": ...}`` in Create, a string in the Update example: both accepted.
Unknown fields are kept and forwarded (the vendor may add fields before we do).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from connector.models._types import Str45, Str64, Str100, Str255, Str1000, Timestamp

Number = StrictInt | float


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


OrderStatus = Literal["active", "archived", "cancelled", "unknown"]
FinancialStatus = Literal[
    "pending", "authorized", "partially_paid", "paid", "partially_refunded", "refunded", "voided"
]
CancelReason = Literal["customer", "declined", "fraud", "inventory", "other", "staff"]


class Money(_Body):
    """An amount in minor units (cents) with an optional ISO 4217 currency code."""

    amount: StrictInt
    currency_code: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None


class Ref(_Body):
    """A reference to a Loop resource by its integer id."""

    id: StrictInt


class Address(_Body):
    name: Str255 | None = None
    company: Str255 | None = None
    address1: Str255 | None = None
    address2: Str255 | None = None
    city: Str255 | None = None
    region: Str255 | None = None
    postal_code: str | StrictInt | None = None
    country_code: Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")] | None = None


class Customer(_Body):
    """The order's customer: by Loop ``id`` or by ``external_id``, never both."""

    id: StrictInt | None = None
    external_id: Str64 | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> Customer:
        if self.id is not None and self.external_id is not None:
            raise ValueError("give the customer's Loop id or its external_id, not both")
        return self


class TaxLine(_Body):
    title: str | None = None
    rate: Number | None = None
    price: Money | None = None


class Discount(_Body):
    external_id: Str64 | None = None
    name: str | None = None
    discount_type: str | None = None
    code: str | None = None
    reason: str | None = None
    rate: Number | None = None
    tax_adjustment_money: Money | None = None
    net_adjustment_money: Money | None = None


class RefundLineItem(_Body):
    id: StrictInt | None = None
    quantity: StrictInt | None = None
    restock: StrictBool | None = None


class Refund(_Body):
    external_id: Str64 | None = None
    type: str | None = None
    amount: Money | None = None
    line_item: RefundLineItem | list[RefundLineItem] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Duty(_Body):
    hs_code: str | None = None
    country_of_origin: str | None = None
    price: Money | None = None
    tax_lines: list[TaxLine] | None = None


class LineItem(_Body):
    external_id: Str64 | None = None
    product: Ref | None = None
    product_variant: Ref | None = None
    quantity: Annotated[StrictInt, Field(ge=0)] | None = None
    unit_price: Money | None = None
    unit_price_presentment: Money | None = None
    unit_discounts: Money | None = None
    unit_discounts_presentment: Money | None = None
    taxable: StrictBool | None = None
    tax_lines: list[TaxLine] | None = None
    refunds: list[Refund] | None = None
    discounts: list[Discount] | None = None
    duties: list[Duty] | None = None


class ShippingLine(_Body):
    title: str | None = None
    price: Money | None = None
    discounts: Discount | None = None
    tax_lines: list[TaxLine] | None = None


class FulfillmentLineItem(_Body):
    external_id: Str64 | None = None
    order_line_item_external_id: Str64 | None = None
    quantity: StrictInt | None = None


class Fulfillment(_Body):
    external_id: Str64 | None = None
    fulfilled_at: Timestamp | None = None
    shipping_carrier: str | None = None
    location: Ref | None = None
    fulfillment_line_items: list[FulfillmentLineItem] | None = None
    tracking_numbers: list[str] | None = None


class Metadata(_Body):
    key: str
    value: Any = None


class Fee(_Body):
    name: str | None = None
    amount: Money | None = None
    presentment_amount: Money | None = None
    tax: Money | None = None
    accepted_offer_mode: list[str] | None = None
    external_id: Str64 | None = None


class Source(_Body):
    name: str | None = None


class LoopOrder(_Body):
    """The Upsert Order body. ``external_id`` is required: it is the key the connector syncs by."""

    external_id: Annotated[str, Field(min_length=1, max_length=64)]
    name: Str100 | None = None
    status: OrderStatus | None = None
    secondary_identifier: Str100 | None = None
    channel: Str64 | None = None
    sales_channel: Str255 | None = None
    source: Source | str | None = None
    customer: Customer | None = None
    shipping_address: Address | None = None
    billing_address: Address | None = None
    taxes_included: StrictBool | None = None
    total_price: Money | None = None
    total_price_presentment: Money | None = None
    total_discounts: Money | None = None
    total_discounts_presentment: Money | None = None
    total_taxes: Money | None = None
    total_taxes_presentment: Money | None = None
    total_tip_received: Money | None = None
    order_discounts: list[Discount | list[Discount]] | None = None
    shipping_lines: list[ShippingLine | list[ShippingLine]] | None = None
    refunds: list[Refund | list[Refund]] | None = None
    line_items: list[LineItem] | None = None
    fulfillments: list[Fulfillment] | None = None
    tags: list[Str255] | None = None  # the rendered Upsert page shows 255 beside the tags field
    metadata: list[Metadata] | None = None
    fees: list[Fee] | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    cancelled_at: Timestamp | None = None
    processed_at: Timestamp | None = None
    financial_status: FinancialStatus | None = None
    cancel_reason: CancelReason | None = None
    browser_ip: Str45 | None = None
    client_details_user_agent: Str1000 | None = None

    @model_validator(mode="after")
    def _cancelled_together(self) -> LoopOrder:
        if self.status == "cancelled" and self.cancelled_at is None:
            raise ValueError("cancelled_at is required when status is 'cancelled'")
        return self

    def sync_key(self) -> str:
        """The key events of this order are coalesced by."""
        return self.external_id


class LoopCreateOrder(LoopOrder):
    """The Create Order body (``POST /orders``): the fields the page marks required."""

    name: Str100
    sales_channel: Str255
    status: OrderStatus
    taxes_included: StrictBool | None
    total_price: Money
    line_items: list[LineItem]
    source: Source | str


class LoopUpdateOrder(LoopOrder):
    """The Update Order body (``PUT /orders/{id}``): the order is named by its Loop id in the path."""

    external_id: Str64 | None = None  # type: ignore[assignment]

    def sync_key(self) -> str:
        """Update bodies may omit external_id; they are then keyed by nothing and not coalesced."""
        return self.external_id or ""


class LoopOrder202610(LoopOrder):
    """The Upsert Order body from API version 2026-10 on, where ``created_at`` is required."""

    created_at: Timestamp
