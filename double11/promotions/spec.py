"""The promotions area's commands, declared (the vocabulary: double11/spec.py).

Operators create coupon templates, threshold discounts and deals, and move a
template's budget and a deal's units up or down (`coupon_budget`,
`deal_qty`); games and apps grant coupons to buyers (the area as a whole,
with its views: area.py).  A checkout spends coupons through its own
`coupons` field (double11/engine/commands.py).  Every field here travels in
a batch's args, laid out by `Command.arg_fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from double11 import limits
from double11.access.roles import BUYERS, MERCHANTS
from double11.errors import Result
from double11.spec import IDEMPOTENCY_KEY, Command, Field, id_field

TEMPLATE_KINDS = ("store", "platform")
DEAL_KINDS = ("flash", "group_buy", "livestream")
STORE, PLATFORM = 0, 1  # a template's kind, as its arg holds it (the choice's index)

_FEN = limits.promotion_fen_max
_T = limits.festival_time_ms_max


def _time(name: str, meaning: str, code: Result) -> Field:
    return Field(name, "integer", meaning + " (festival-clock ms since the Unix epoch)", code, low=0, high=_T)


# ------------------------------------------------------------ coupon templates
_IT = Result.invalid_template
TEMPLATE_FIELDS = (
    Field("kind", "choice", "'store': funded by its merchant, for that merchant's lines; "
          "'platform': a red packet, funded by the platform, for the whole checkout", _IT, choices=TEMPLATE_KINDS),
    Field("merchant", "integer", "the merchant of a store coupon (left out for a platform one)", _IT,
          low=1, high=limits.id_max, optional=True, lookup="merchant"),
    Field("discount_fen", "integer", "what a coupon takes off", _IT, low=1, high=_FEN),
    Field("min_spend_fen", "integer", "the least amount a coupon applies to (0: any)", _IT, low=0, high=_FEN),
    Field("budget_count", "integer", "how many coupons may be granted (0: none until coupon_budget adds some)",
          _IT, low=0, high=limits.coupon_budget_count_max),
    Field("budget_fen", "integer", "how much discount the grants may promise (0 or left out: no cap)", _IT,
          low=0, high=limits.coupon_budget_fen_max, optional=True),
    Field("per_buyer_max", "integer", "how many coupons of the template one buyer may be granted", _IT,
          low=1, high=limits.coupon_per_buyer_max, optional=True, default=1),
    _time("grant_from", "when grants open", _IT),
    _time("grant_until", "when grants close", _IT),
    _time("use_from", "when its coupons become usable", _IT),
    _time("use_until", "when its coupons expire", _IT),
    IDEMPOTENCY_KEY,
)


def _check_template(v: dict[str, Any]) -> str | None:
    store = v["kind"] == STORE
    if store and v["merchant"] == 0:
        return "merchant is missing: a store coupon names its merchant"
    if not store and v["merchant"] != 0:
        return "merchant must be left out of a platform coupon"
    if v["budget_fen"] and v["budget_fen"] < v["discount_fen"]:
        return f"budget_fen must be 0 or at least discount_fen ({v['discount_fen']}), got {v['budget_fen']}"
    return (_window(v, "grant_from", "grant_until") or _window(v, "use_from", "use_until")
            or _window(v, "grant_from", "use_until"))


def _window(v: dict[str, Any], opens: str, closes: str) -> str | None:
    if v[opens] < v[closes]:
        return None
    return f"{opens} must be before {closes}, got {v[opens]} and {v[closes]}"


class TemplateView(msgspec.Struct):
    template: int
    kind: Literal["store", "platform"]
    merchant: int | None
    discount_fen: int
    min_spend_fen: int
    budget_count: int
    budget_fen: int | None
    per_buyer_max: int
    grant_from: int
    grant_until: int
    use_from: int
    use_until: int
    granted: int
    used: int
    discount_given_fen: int
    budget_count_left: int
    budget_fen_left: int | None


# --------------------------------------------------------- threshold discounts
_ITH = Result.invalid_threshold
THRESHOLD_FIELDS = (
    Field("every_fen", "integer", "each full step of this much eligible amount...", _ITH, low=1, high=_FEN),
    Field("off_fen", "integer", "...takes this much off (less than every_fen)", _ITH, low=1, high=_FEN),
    Field("merchants", "list", "the participating merchants' ids (left out or empty: all)", _ITH,
          low=0, high=limits.threshold_merchants_max, unit="merchants", optional=True,
          items=(Field("merchant", "integer", "a merchant's id", _ITH, low=1, high=limits.id_max, lookup="merchant"),)),
    _time("from", "when it opens", _ITH),
    _time("until", "when it closes", _ITH),
    IDEMPOTENCY_KEY,
)


def _check_threshold(v: dict[str, Any]) -> str | None:
    if v["off_fen"] >= v["every_fen"]:
        return f"off_fen must be less than every_fen ({v['every_fen']}), got {v['off_fen']}"
    merchants = v["merchants"]
    for p, m in enumerate(merchants):
        if m in merchants[:p]:
            return f"merchants[{p}] repeats merchant {m}"
    return _window(v, "from", "until")


class ThresholdView(msgspec.Struct):
    threshold: int
    every_fen: int
    off_fen: int
    merchants: list[int]
    # `from` is a keyword of Python's: the field is renamed on the wire
    from_: int = msgspec.field(name="from")
    until: int = 0


# ---------------------------------------------------------------------- deals
_ID = Result.invalid_deal
DEAL_FIELDS = (
    Field("sku", "integer", "the SKU on deal", _ID, low=1, high=limits.id_max, lookup="sku"),
    Field("price_fen", "integer", "the deal's unit price (below the SKU's list price)", _ID, low=1, high=_FEN),
    Field("qty", "integer", "units sold at that price (0: sold out until deal_qty adds some)", _ID, low=0,
          high=limits.deal_qty_max),
    Field("per_buyer_max", "integer", "units one buyer may take, over all their checkouts", _ID,
          low=1, high=limits.deal_per_buyer_max),
    _time("from", "when it opens", _ID),
    _time("until", "when it closes", _ID),
    Field("kind", "choice", "'flash', 'group_buy' (Juhuasuan) or 'livestream'", _ID, choices=DEAL_KINDS),
    IDEMPOTENCY_KEY,
)


def _check_deal(v: dict[str, Any]) -> str | None:
    return _window(v, "from", "until")


class DealView(msgspec.Struct):
    deal: int
    sku: int
    kind: Literal["flash", "group_buy", "livestream"]
    price_fen: int
    qty: int
    per_buyer_max: int
    from_: int = msgspec.field(name="from")
    until: int = 0
    sold: int = 0
    reserved: int = 0
    left: int = 0
    sold_out_at: int | None = None


# --------------------------------------------------------------------- grants
SOURCE = Field("source", "string", "where the coupon was won (e.g. 'game:catch-the-cat')",
               Result.invalid_request, low=1, high=limits.coupon_source_chars_max, unit="printable ASCII characters")
GRANT_FIELDS = (
    id_field("template", "the coupon template", where="path"),
    id_field("buyer", "the buyer it is granted to"),
    SOURCE,
    IDEMPOTENCY_KEY,
)


class CouponView(msgspec.Struct):
    coupon: int
    template: int
    kind: Literal["store", "platform"]
    merchant: int | None
    buyer: int
    source: str
    status: Literal["held", "reserved", "used", "expired"]
    discount_fen: int
    min_spend_fen: int
    use_from: int
    use_until: int
    granted_at: int
    checkout: int | None


class BuyerCoupons(msgspec.Struct):
    """A buyer's coupons, newest first (empty for a buyer without any)."""

    buyer: int
    coupons: list[CouponView]


# ------------------------------------------------------------------- commands
COUPON_TEMPLATE = Command(
    "coupon_template", "/v1/coupon-templates", "Create a coupon template (store coupons or platform red packets)",
    TEMPLATE_FIELDS, Result.created, TemplateView, (Result.unknown_merchant,), number=16, in_args=True,
    check=_check_template, allowed=MERCHANTS, owner="merchant")  # a merchant: store coupons of its own
THRESHOLD_DISCOUNT = Command(
    "threshold_discount", "/v1/threshold-discounts", "Create a cross-store threshold discount",
    THRESHOLD_FIELDS, Result.created, ThresholdView, (Result.unknown_merchant, Result.window_overlaps), number=17,
    in_args=True, check=_check_threshold)
DEAL = Command(
    "deal", "/v1/deals", "Create a time-boxed deal on a SKU (flash, group buy, livestream)",
    DEAL_FIELDS, Result.created, DealView, (Result.unknown_sku, Result.invalid_deal, Result.window_overlaps), number=18,
    in_args=True, check=_check_deal)
GRANT = Command(
    "grant", "/v1/coupon-templates/{template}/grants", "Grant a buyer a coupon (games award them so)",
    GRANT_FIELDS, Result.created, CouponView,
    (Result.unknown_template, Result.not_in_window, Result.budget_exhausted, Result.buyer_limit_reached),
    number=19, in_args=True, allowed=BUYERS, owner="buyer")


# -------------------------------------------- budgets and units moved (issue 25)
# A signed count: positive adds, negative takes out what is not yet granted
# (taken), all or none.  Its bounds are symmetric and 0 would move nothing:
# the bound's words leave 0 out, and the command's check refuses it in them.
def _signed(name: str, meaning: str, most: int) -> Field:
    return Field(name, "integer", meaning, Result.invalid_quantity, low=-most, high=most,
                 bound_words=f"-{most}..-1 or 1..{most}")


def _nonzero(field: Field) -> Callable[[dict[str, Any]], str | None]:
    def check(v: dict[str, Any]) -> str | None:
        return f"{field.name} must be {field.wanted}, got 0" if v[field.name] == 0 else None

    return check


BUDGET_COUNT = _signed(
    "count", "coupons added to the template's budget_count, or (negative) taken out of it: coupons not yet "
    "granted, all or none; its budget_fen, if it has one, stays as it is", limits.coupon_budget_count_max)
DEAL_QTY_MOVED = _signed(
    "qty", "units added to the deal's qty (a sold-out deal opens again), or (negative) taken out of it: units "
    "not yet taken by a checkout, all or none", limits.deal_qty_max)


class BudgetMoved(msgspec.Struct):
    template: int
    count: int
    budget_count: int  # the template's budget_count after the move (its view's)


class DealQtyMoved(msgspec.Struct):
    deal: int
    qty: int
    deal_qty: int  # the deal's qty after the move (its view's `qty`)


COUPON_BUDGET = Command(
    "coupon_budget", "/v1/coupon-templates/{template}/budget",
    "Add coupons to a template's budget, or take out coupons not yet granted",
    (id_field("template", "the coupon template", where="path"), BUDGET_COUNT, IDEMPOTENCY_KEY), Result.ok,
    BudgetMoved, (Result.unknown_template, Result.budget_exhausted), number=21, in_args=True,
    check=_nonzero(BUDGET_COUNT))  # the operator's alone
DEAL_QTY = Command(
    "deal_qty", "/v1/deals/{deal}/qty", "Add units to a deal, or take out units not yet taken",
    (id_field("deal", "the deal", where="path"), DEAL_QTY_MOVED, IDEMPOTENCY_KEY), Result.ok, DealQtyMoved,
    (Result.unknown_deal, Result.deal_sold_out), number=22, in_args=True, check=_nonzero(DEAL_QTY_MOVED))
