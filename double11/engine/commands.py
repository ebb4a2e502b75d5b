"""The core area's six commands, declared (the vocabulary: double11/spec.py).

Checkout reserves stock and splits into one order per merchant; pay, cancel,
confirm and refund move a checkout or an order along; restock adds stock.
Each command's fields are listed in the order the edge checks them
(encode.py, batch.validate): the first broken one names the refusal.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from double11 import geo, limits
from double11.access.roles import BUYERS, MERCHANTS
from double11.engine.batch import Channel
from double11.errors import Result
from double11.spec import IDEMPOTENCY_KEY, Area, Command, Field, id_field

# ------------------------------------------------------------------ fields
BUYER = id_field("buyer", "the buyer's id (a new buyer is registered on first sight)")
COUNTRY = Field("country", "choice", "the buyer's country", Result.invalid_country,
                choices=geo.ALPHA2, bound_words="an ISO 3166 alpha-2 code such as 'CN'")
CHANNEL = Field("channel", "choice", "where the buyer shops", Result.invalid_channel,
                choices=tuple(ch.name for ch in Channel))
LINE_SKU = id_field("sku", "the SKU bought")
LINE_QTY = Field("qty", "integer", "units of the SKU", Result.invalid_quantity, low=1, high=limits.line_qty_max)
LINES = Field("lines", "list", "what is bought, one line per SKU; all reserved or none",
              Result.invalid_request, low=1, high=limits.checkout_lines_max, unit="lines",
              items=(LINE_SKU, LINE_QTY), code_below=Result.empty_checkout, code_above=Result.too_many_lines)
CHECKOUT = id_field("checkout", "the checkout's id", where="path")
AMOUNT_FEN = Field("amount_fen", "integer", "the checkout's total in fen (it must equal it)",
                   Result.invalid_amount, low=1, high=limits.id_max)
ORDER = id_field("order", "the order's id", where="path")
SKU = id_field("sku", "the SKU's id", where="path")
RESTOCK_QTY = Field("qty", "integer", "units added to the SKU's stock", Result.invalid_quantity,
                    low=1, high=limits.restock_qty_max)
# a checkout's coupons travel in its args (the promotions area prices them: docs/promotions.md)
COUPONS = Field("coupons", "list", "the buyer's own coupons to spend (docs/promotions.md); none repeated",
                Result.invalid_request, low=0, high=limits.checkout_coupons_max, unit="coupons", optional=True,
                items=(id_field("coupon", "a coupon's id"),))


# ----------------------------------------------------------------- answers
class Discounts(msgspec.Struct):
    """Each kind of discount in fen (docs/promotions.md)."""

    deal: int
    store_coupon: int
    threshold: int
    platform_coupon: int


class CheckoutOrder(msgspec.Struct, omit_defaults=True):
    order: int
    merchant: int
    amount_fen: int  # payable
    list_fen: int | None = None  # with discounts, when any applied
    discounts: Discounts | None = None


class CheckoutCreated(msgspec.Struct, omit_defaults=True):
    checkout: int
    amount_fen: int  # payable: what pay must send
    orders: list[CheckoutOrder]
    status: Literal["reserved"]
    expires_at: int
    list_fen: int | None = None  # with discounts, when any applied
    discounts: Discounts | None = None


class Paid(msgspec.Struct):
    checkout: int
    status: Literal["paid"]
    amount_fen: int


class Cancelled(msgspec.Struct):
    checkout: int
    status: Literal["cancelled"]


class Settled(msgspec.Struct):
    order: int
    status: Literal["settled"]
    merchant_fen: int
    commission_fen: int


class Refunded(msgspec.Struct):
    order: int
    status: Literal["refunded"]
    amount_fen: int


class Restocked(msgspec.Struct):
    sku: int
    qty: int


# ---------------------------------------------------------------- commands
_CHECKOUT_STATE = (Result.unknown_checkout, Result.already_paid, Result.cancelled, Result.expired)
_ORDER_STATE = (Result.unknown_order, Result.not_paid, Result.already_settled, Result.already_refunded)

COMMANDS = (
    Command("checkout", "/v1/checkouts", "Create a checkout (reserve stock)",
            (BUYER, COUNTRY, CHANNEL, LINES, COUPONS, IDEMPOTENCY_KEY), Result.created, CheckoutCreated,
            (Result.unknown_sku, Result.unknown_coupon, Result.not_your_coupon, Result.coupon_not_held,
             Result.not_in_window, Result.coupon_expired, Result.coupon_merchant_not_in_checkout,
             Result.two_store_coupons, Result.deal_sold_out, Result.deal_buyer_limit, Result.min_spend_not_met,
             Result.out_of_stock), number=1, allowed=BUYERS, owner="buyer"),
    Command("pay", "/v1/checkouts/{checkout}/pay", "Pay a checkout",
            (CHECKOUT, AMOUNT_FEN, IDEMPOTENCY_KEY), Result.ok, Paid,
            (Result.unknown_checkout, Result.amount_mismatch, Result.already_paid, Result.cancelled,
             Result.expired), number=2, allowed=BUYERS, owner="checkout"),
    Command("cancel", "/v1/checkouts/{checkout}/cancel", "Cancel a reserved checkout",
            (CHECKOUT, IDEMPOTENCY_KEY), Result.ok, Cancelled, _CHECKOUT_STATE, number=3, allowed=BUYERS,
            owner="checkout"),
    Command("confirm", "/v1/orders/{order}/confirm", "Confirm receipt: settle a paid order to its merchant",
            (ORDER, IDEMPOTENCY_KEY), Result.ok, Settled, _ORDER_STATE, number=4, allowed=BUYERS, owner="order"),
    Command("refund", "/v1/orders/{order}/refund", "Refund a paid order",
            (ORDER, IDEMPOTENCY_KEY), Result.ok, Refunded, _ORDER_STATE, number=5, allowed=BUYERS, owner="order"),
    Command("restock", "/v1/skus/{sku}/restock", "Add stock to a SKU",
            (SKU, RESTOCK_QTY, IDEMPOTENCY_KEY), Result.ok, Restocked, (Result.unknown_sku,), number=6,
            allowed=MERCHANTS, owner="sku"),
)

CORE = Area("core", COMMANDS, tables=("skus", "checkouts", "lines", "orders", "buyers", "buyer_balances",
                                      "journal"))
