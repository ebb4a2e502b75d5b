"""A small, plain reference model of the transaction core (docs/api.md).

Dicts and loops only: it is meant to be obviously correct, not fast.  The
property tests run the real engine and this model side by side and demand
the same result for every command and the same views after every batch.

Decisions (where docs/api.md leaves room; the engine must match these)
---------------------------------------------------------------------
D1  Shape checks run in this order, first failure wins:
      command is not a dict (JSON object)           -> invalid_request
      op missing / not one of the six ops           -> unknown_op
      idempotency_key missing / not a str / "" / longer than 128 characters
                                                    -> invalid_idempotency_key
      then the op's fields, in the order of the docs table:
      checkout: buyer, country, channel, lines; inside lines: not a list ->
                invalid_request, [] -> empty_checkout, > 16 -> too_many_lines,
                then line by line: not a dict -> invalid_request, sku ->
                invalid_request, qty -> invalid_quantity
      pay: checkout, amount_fen;  cancel: checkout;  confirm/refund: order;
      restock: sku, qty.
D2  "int" means a Python int that is not a bool (2.0, "2", True are refused).
    An id field (buyer, sku, checkout, order) must be an int in 1..id_max
    (2**63-1; ids start at 1), else invalid_request (the field being missing
    included): 0 and negative ids are shape errors, not unknown ids.
    An id in range that does not exist is unknown_sku / unknown_checkout /
    unknown_order (404, remembered).
D3  country: must be a str that geo.encode accepts (upper-case ISO 3166
    alpha-2), else invalid_country (missing included).  channel: exactly
    "mobile" or "pc", else invalid_channel (missing included).
D4  qty of a line: int 1..999, else invalid_quantity (missing included).
    restock qty: int 1..1_000_000_000, else invalid_quantity.
    amount_fen of pay: int 1..id_max, else invalid_amount (missing included).
D5  Unknown extra fields in a command or a line are ignored, and are not part
    of the idempotency fingerprint.  The fingerprint is (op, the op's fields)
    with lines as an ordered list of (sku, qty): the same lines in another
    order is another body.  A retry with the same key and same body returns
    a copy of the first result, even inside the same batch; 409
    idempotency_key_reused is never remembered (the key keeps its first
    result).  A shape error (any 400) is not remembered, so its key stays
    free; a command with a bad shape gets its 400 even if its key is taken.
D6  A checkout may name the same SKU on several lines: the lines stay as
    given (in the checkout and order views), and the stock check is on the
    total quantity per SKU.  unknown_sku is reported for the first line (in
    order) whose sku does not exist; then out_of_stock if any SKU lacks
    stock.  Both are remembered (they are not shape errors).
D7  Batch time: now = now_ms, but never less than the previous batch's now
    (the first batch takes now_ms as is).  Expiry runs at the start of every
    batch (an empty batch too) for checkouts with expires_at <= now.  Inside
    a batch nothing expires, so a checkout created in the batch (or whose
    expires_at falls inside it) can be paid in that batch.
    created_at = the batch's now, expires_at = created_at + payment_timeout_ms.
D8  The payment time is the batch's now.  gmv_by_hour_fen[h] adds the
    checkout's amount where h is the hour of day of the payment time in UTC+8
    (whatever the date).
D9  A checkout whose orders are all refunded stays "paid" (pay -> already_paid,
    cancel -> already_paid).  Refund moves sold -> stock for that order's
    units (stocked unchanged).  Cancel / expiry move reserved -> stock.
D10 settled_fen = sum of amount_fen (gross, before commission) of settled
    orders; refunded_fen = sum of amount_fen of refunded orders.  gmv_fen and
    mobile_gmv_fen never go down.  buyers / countries = distinct buyers /
    countries with a paid checkout; new_buyers = those buyers not in
    catalog.returning_buyers.
D11 ledger transfers count: pay 1 (buyer -> escrow), confirm 2 (escrow ->
    merchant, escrow -> platform; counted even when the commission is 0),
    refund 1 (escrow -> buyer).  "buyers" is the total of all buyer accounts.
D12 Views of an id that does not exist return None.  checkout view lines are
    in the order given, each with the order id of its merchant; orders in
    ascending merchant id (= ascending order id).  order view lines are the
    checkout's lines of that merchant, in the order given.
D13 Error bodies: {"error": {"code", "message"}}; tests compare the code and
    the status, not the message text.

Promotions (docs/promotions.md; decisions where it leaves room)
---------------------------------------------------------------
P1  Shape checks: op, idempotency_key, then the fields in the order of the
    doc's command table, each field's own bound where it stands (off_fen
    against the every_fen before it, budget_fen against discount_fen), the
    relations between times (grant_from < grant_until, use_from < use_until,
    grant_from < use_until; from < until) after the last field.  checkout:
    buyer, country, channel, lines, coupons.  Every defect of a template is
    invalid_template, of a threshold invalid_threshold, of a deal
    invalid_deal (its sku included); of a grant or of coupons invalid_request.
P2  A field that is present must have its type: null is not "absent" (an
    optional field given as null is refused like a wrong type), and a
    platform template must not carry a "merchant" key at all.  min_spend_fen
    is required (the table does not mark it optional); budget_fen and
    per_buyer_max of a template, merchants of a threshold and coupons of a
    checkout are optional.  Times are ints 0..4,102,444,800,000.
P3  grant's source: a str of 1..32 characters, each in 0x20..0x7E (space
    included).
P4  The idempotency fingerprint holds the fields as read, defaults filled in:
    a template without per_buyer_max is the same body as one with 1, without
    budget_fen the same as with 0; a checkout without coupons the same as
    with []; a threshold without merchants the same as with [].  Coupons and
    merchants keep their order (another order is another body).
P5  Windows [from, until) "meet" when they share a moment: a.from < b.until
    and b.from < a.until (windows that only touch, a.until == b.from, do
    not).  A threshold is checked against every earlier threshold, a deal
    against every earlier deal of its SKU.
P6  Refusal order of the creating commands: template: unknown_merchant
    (store only).  threshold: unknown_merchant (first in the list), then
    window_overlaps.  deal: unknown_sku, invalid_deal (price_fen >= the
    SKU's list price: remembered, as a state refusal), window_overlaps.
P7  Checkout's deal checks go line by line in the order given; at the first
    line of an SKU with an open deal: deal_sold_out, then deal_buyer_limit
    (units asked: the checkout's lines of that SKU together).  An SKU's
    later lines repeat the same answers, so only its first line counts.
P8  A checkout "has a discount" when the sum of its discounts is above 0 (a
    coupon whose discount came to 0 does not make one); only then do the
    checkout, its orders and its lines (in the checkout view, the checkout
    answer's orders and the order view) carry list_fen and discounts.  The
    checkout view does not list its coupons (the doc names no key).
P9  Allocation order ("the checkout's stored order"): by merchant id, then
    as given; the views still list a checkout's lines as given (D12).
    The lines a step applies to: a store coupon's merchant's lines; the
    threshold's merchants' lines (all lines when it names none); all lines
    for a platform coupon, lines with nothing left included (they take 0).
    A step whose base is 0 gives 0.
P10 gmv_fen, mobile_gmv_fen and gmv_by_hour_fen add the payable amount
    (amount_fen, what the buyer pays); refunded_fen adds the order's payable
    amount; settled_fen adds what confirm settles (the order's amount before
    platform discounts).  The ledger: pay = buyer -> escrow (payable), then
    marketing -> escrow (the platform_coupon discounts) when above 0; refund
    = escrow -> buyer (payable), then escrow -> marketing (the order's
    platform share) when above 0.
P11 A coupon reserved before its use_until stays good for that checkout's
    payment after use_until; if the checkout is cancelled or expires it is
    held again (and shows "expired" once now >= use_until).  A coupon's view
    status is read at the festival's now (the latest batch's now).
P12 A deal's sold_out_at is the batch's now when a checkout first takes its
    last unit (reserved, so left == 0); units coming back do not clear it,
    units added by deal_qty do (P15).  stats' deals_sold_out counts the
    deals with a sold_out_at.
P13 stats["promotions"] = {"discounts_fen": {deal, store_coupon, threshold,
    platform_coupon}, "coupons_granted", "coupons_used", "deals_sold_out"};
    discounts_fen and coupons_used grow at payment only; coupons_granted at
    each grant.
P14 A checkout costs at least 1 fen: a coupon takes off at most what leaves
    the whole checkout 1 fen to pay (so `pay`, whose amount_fen is 1 or
    more, can always pay it).  A create command answers the thing as created
    (counters at zero), whatever later commands of its batch did to it.
P15 coupon_budget: template (an id, invalid_request), count (int,
    -10^9..-1 or 1..10^9, else invalid_quantity; 0 included), in that
    order.  unknown_template, then budget_exhausted when count < 0 and the
    template may still grant fewer than -count coupons (budget_count -
    granted; budget_fen plays no part and does not change); else
    budget_count += count, answer 200 {"template", "count", "budget_count":
    after}.  deal_qty: deal (an id), qty (as count); unknown_deal, then
    deal_sold_out when qty < 0 and the deal has fewer than -qty units left
    (qty - sold - reserved); else qty += qty, and a positive qty clears
    sold_out_at (the deal is open again); answer 200 {"deal", "qty",
    "deal_qty": after}.  Taking units out never sets sold_out_at.  Both
    refusals of each are remembered.
Quotas (double11/quotas; docs/cluster.md, "Stock quotas")
---------------------------------------------------------
Q1  release: sku (an id, invalid_request), qty (int 1..1_000_000_000, else
    invalid_quantity), in that order.  unknown_sku, then out_of_stock when
    the SKU has fewer than qty units for sale (reserved and sold units are
    not); else stock and stocked both go down by qty, and the answer is 200
    {"sku", "qty", "stock": the units left for sale}.  Both refusals are
    remembered.
Not modelled: batch_too_large / body_too_large (edge limits), overloaded,
not_found, method_not_allowed (HTTP), and the stats figures outside
STATS_KEYS (rates, peaks, tops, growth).
"""

from __future__ import annotations

import copy
from typing import Any, TypeGuard

from double11 import geo, limits
from double11.catalog import Catalog
from double11.config import FestivalConfig
from double11.errors import Result, error_body
from double11.statuses import HTTP_STATUS

CORE_OPS = ("checkout", "pay", "cancel", "confirm", "refund", "restock")
PROMOTION_OPS = ("coupon_template", "threshold_discount", "deal", "grant", "coupon_budget", "deal_qty")
QUOTA_OPS = ("release",)
OPS = CORE_OPS + PROMOTION_OPS + QUOTA_OPS
CHANNELS = ("mobile", "pc")
STATS_KEYS = (
    "gmv_fen",
    "checkouts",
    "orders",
    "payments",
    "mobile_gmv_fen",
    "buyers",
    "new_buyers",
    "countries",
    "refunded_fen",
    "settled_fen",
    "gmv_by_hour_fen",
)
HOUR_MS = 3_600_000
UTC8_MS = 8 * HOUR_MS

# promotions' bounds, as docs/promotions.md writes them (the model reads the
# doc, not the engine's declarations, so that the two are compared)
DISCOUNT_KINDS = ("deal", "store_coupon", "threshold", "platform_coupon")
TEMPLATE_KINDS = ("store", "platform")
DEAL_KINDS = ("flash", "group_buy", "livestream")
promotion_fen_max = 10**12  # discount_fen, min_spend_fen, every_fen, price_fen
template_budget_count_max = 10**9
template_budget_fen_max = 10**18
template_per_buyer_max = 1000
deal_qty_max = 10**9
deal_per_buyer_max = 999
promotion_time_ms_max = 4_102_444_800_000  # 2100-01-01
threshold_merchants_max = 64
checkout_coupons_max = 8
grant_source_chars_max = 32


class ShapeError(Exception):
    def __init__(self, code: Result):
        self.code = code


def is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _id(cmd: dict, name: str, code: Result = Result.invalid_request) -> int:
    v = cmd.get(name)
    if not is_int(v) or not (1 <= v <= limits.id_max):
        raise ShapeError(code)
    return v


def _int_in(cmd: dict, name: str, lo: int, hi: int, code: Result) -> int:
    v = cmd.get(name)
    if not is_int(v) or not (lo <= v <= hi):
        raise ShapeError(code)
    return v


def _optional_int(cmd: dict, name: str, lo: int, hi: int, default: int, code: Result) -> int:
    if name not in cmd:
        return default
    return _int_in(cmd, name, lo, hi, code)


def _id_list(cmd: dict, name: str, most: int, code: Result) -> tuple[int, ...]:
    """an optional list of distinct ids (absent: empty)"""
    if name not in cmd:
        return ()
    v = cmd[name]
    if not isinstance(v, list) or len(v) > most:
        raise ShapeError(code)
    for x in v:
        if not is_int(x) or not (1 <= x <= limits.id_max):
            raise ShapeError(code)
    if len(set(v)) != len(v):
        raise ShapeError(code)
    return tuple(v)


def _time(cmd: dict, name: str, code: Result) -> int:
    return _int_in(cmd, name, 0, promotion_time_ms_max, code)


def _choice(cmd: dict, name: str, choices: tuple[str, ...], code: Result) -> str:
    v = cmd.get(name)
    if not isinstance(v, str) or v not in choices:
        raise ShapeError(code)
    return v


def _checkout_fields(cmd: dict) -> tuple:
    buyer = _id(cmd, "buyer")
    country = cmd.get("country")
    if not isinstance(country, str) or geo.encode(country) < 0:
        raise ShapeError(Result.invalid_country)
    channel = cmd.get("channel")
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise ShapeError(Result.invalid_channel)
    lines = cmd.get("lines")
    if not isinstance(lines, list):
        raise ShapeError(Result.invalid_request)
    if len(lines) == 0:
        raise ShapeError(Result.empty_checkout)
    if len(lines) > limits.checkout_lines_max:
        raise ShapeError(Result.too_many_lines)
    parsed = []
    for line in lines:
        if not isinstance(line, dict):
            raise ShapeError(Result.invalid_request)
        sku = _id(line, "sku")
        qty = _int_in(line, "qty", 1, limits.line_qty_max, Result.invalid_quantity)
        parsed.append((sku, qty))
    coupons = _id_list(cmd, "coupons", checkout_coupons_max, Result.invalid_request)
    return (buyer, country, channel, tuple(parsed), coupons)


def _template_fields(cmd: dict) -> tuple:
    bad = Result.invalid_template
    kind = _choice(cmd, "kind", TEMPLATE_KINDS, bad)
    if kind == "store":
        merchant: int | None = _id(cmd, "merchant", bad)
    elif "merchant" in cmd:
        raise ShapeError(bad)
    else:
        merchant = None
    discount = _int_in(cmd, "discount_fen", 1, promotion_fen_max, bad)
    min_spend = _int_in(cmd, "min_spend_fen", 0, promotion_fen_max, bad)
    budget_count = _int_in(cmd, "budget_count", 0, template_budget_count_max, bad)
    budget_fen = _optional_int(cmd, "budget_fen", 0, template_budget_fen_max, 0, bad)
    if budget_fen != 0 and budget_fen < discount:
        raise ShapeError(bad)
    per_buyer = _optional_int(cmd, "per_buyer_max", 1, template_per_buyer_max, 1, bad)
    grant_from, grant_until = _time(cmd, "grant_from", bad), _time(cmd, "grant_until", bad)
    use_from, use_until = _time(cmd, "use_from", bad), _time(cmd, "use_until", bad)
    if not (grant_from < grant_until and use_from < use_until and grant_from < use_until):
        raise ShapeError(bad)
    return (kind, merchant, discount, min_spend, budget_count, budget_fen, per_buyer,
            grant_from, grant_until, use_from, use_until)


def _threshold_fields(cmd: dict) -> tuple:
    bad = Result.invalid_threshold
    every = _int_in(cmd, "every_fen", 1, promotion_fen_max, bad)
    off = _int_in(cmd, "off_fen", 1, every - 1, bad)
    merchants = _id_list(cmd, "merchants", threshold_merchants_max, bad)
    start, until = _time(cmd, "from", bad), _time(cmd, "until", bad)
    if not start < until:
        raise ShapeError(bad)
    return (every, off, merchants, start, until)


def _deal_fields(cmd: dict) -> tuple:
    bad = Result.invalid_deal
    sku = _id(cmd, "sku", bad)
    price = _int_in(cmd, "price_fen", 1, promotion_fen_max, bad)
    qty = _int_in(cmd, "qty", 0, deal_qty_max, bad)
    per_buyer = _int_in(cmd, "per_buyer_max", 1, deal_per_buyer_max, bad)
    start, until = _time(cmd, "from", bad), _time(cmd, "until", bad)
    kind = _choice(cmd, "kind", DEAL_KINDS, bad)
    if not start < until:
        raise ShapeError(bad)
    return (sku, price, qty, per_buyer, start, until, kind)


def _moved(cmd: dict, name: str, most: int) -> int:
    """a signed count of coupons or units moved: never 0"""
    v = _int_in(cmd, name, -most, most, Result.invalid_quantity)
    if v == 0:
        raise ShapeError(Result.invalid_quantity)
    return v


def _grant_fields(cmd: dict) -> tuple:
    template = _id(cmd, "template")
    buyer = _id(cmd, "buyer")
    source = cmd.get("source")
    if (not isinstance(source, str) or not (1 <= len(source) <= grant_source_chars_max)
            or any(not (0x20 <= ord(ch) <= 0x7E) for ch in source)):
        raise ShapeError(Result.invalid_request)
    return (template, buyer, source)


def parse(cmd: Any) -> tuple[str, str, tuple]:
    """Shape check of one command: (op, key, fields) or ShapeError.
    fields is a tuple of the op's values (it is the idempotency fingerprint)."""
    if not isinstance(cmd, dict):
        raise ShapeError(Result.invalid_request)
    op = cmd.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ShapeError(Result.unknown_op)
    key = cmd.get("idempotency_key")
    if not isinstance(key, str) or not (1 <= len(key) <= limits.idempotency_key_chars_max):
        raise ShapeError(Result.invalid_idempotency_key)
    if op == "checkout":
        fields = _checkout_fields(cmd)
    elif op == "pay":
        fields = (
            _id(cmd, "checkout"),
            _int_in(cmd, "amount_fen", 1, limits.id_max, Result.invalid_amount),
        )
    elif op == "cancel":
        fields = (_id(cmd, "checkout"),)
    elif op in ("confirm", "refund"):
        fields = (_id(cmd, "order"),)
    elif op == "restock":
        fields = (
            _id(cmd, "sku"),
            _int_in(cmd, "qty", 1, limits.restock_qty_max, Result.invalid_quantity),
        )
    elif op == "coupon_template":
        fields = _template_fields(cmd)
    elif op == "threshold_discount":
        fields = _threshold_fields(cmd)
    elif op == "deal":
        fields = _deal_fields(cmd)
    elif op == "coupon_budget":
        fields = (_id(cmd, "template"), _moved(cmd, "count", template_budget_count_max))
    elif op == "deal_qty":
        fields = (_id(cmd, "deal"), _moved(cmd, "qty", deal_qty_max))
    elif op == "release":
        fields = (
            _id(cmd, "sku"),
            _int_in(cmd, "qty", 1, limits.restock_qty_max, Result.invalid_quantity),
        )
    else:  # grant
        fields = _grant_fields(cmd)
    return op, key, fields


def ok(status: int, body: dict) -> dict:
    return {"status": status, "body": body}


def err(code: Result) -> dict:
    return {"status": HTTP_STATUS[code], "body": error_body(code)}


class Refused(Exception):
    """A checkout's refusal of state, found part way through its checks."""

    def __init__(self, code: Result):
        self.code = code


def no_discounts() -> dict[str, int]:
    return {kind: 0 for kind in DISCOUNT_KINDS}


def allocate(discount: int, left: list[int]) -> list[int]:
    """`discount` shared pro rata over lines that have `left` fen each (in the
    checkout's stored order): each share rounded down, the remainder on the
    last line, and what the last cannot take on the lines before it, last
    first, each up to what it has left."""
    base = sum(left)
    if discount == 0:
        return [0] * len(left)
    assert 0 < discount <= base
    shares = [discount * x // base for x in left]
    rest = discount - sum(shares)
    for i in reversed(range(len(left))):
        take = min(rest, left[i] - shares[i])
        shares[i] += take
        rest -= take
    assert rest == 0
    return shares


def meets(a_from: int, a_until: int, b_from: int, b_until: int) -> bool:
    """two windows [from, until) share a moment"""
    return a_from < b_until and b_from < a_until


def is_open(start: int, until: int, now: int) -> bool:
    return start <= now < until


class ReferenceFestival:
    def __init__(self, catalog: Catalog, config: FestivalConfig | None = None):
        self.config = config or FestivalConfig()
        self.skus: dict[int, dict] = {}
        for i in range(catalog.skus):
            stock = int(catalog.sku_stock[i])
            merchant, brand = int(catalog.sku_merchant[i]), int(catalog.sku_brand[i])
            self.skus[int(catalog.sku_id[i])] = {
                "sku": int(catalog.sku_id[i]),
                "name": catalog.sku_name[i] if catalog.sku_name is not None else f"SKU {int(catalog.sku_id[i])}",
                "merchant": merchant,
                "merchant_name": catalog.merchant_name[catalog.merchant_id.tolist().index(merchant)],
                "brand": brand,
                "brand_name": catalog.brand_name[catalog.brand_id.tolist().index(brand)],
                "price_fen": int(catalog.sku_price_fen[i]),
                "stock": stock,
                "reserved": 0,
                "sold": 0,
                "stocked": stock,
            }
        self.merchants = {int(m) for m in catalog.merchant_id}
        self.returning = {int(b) for b in catalog.returning_buyers}
        self.checkouts: dict[int, dict] = {}
        self.orders: dict[int, dict] = {}
        self.keys: dict[str, tuple[tuple, dict]] = {}  # key -> (fingerprint, first result)
        self.now: int | None = None
        self.accounts = {"buyers": 0, "escrow": 0, "merchants": 0, "platform": 0, "marketing": 0}
        self.transfers = 0
        self.gmv = 0
        self.mobile_gmv = 0
        self.payments = 0
        self.paid_buyers: set[int] = set()
        self.paid_countries: set[str] = set()
        self.refunded = 0
        self.settled = 0
        self.by_hour = [0] * 24
        # promotions
        self.templates: dict[int, dict] = {}
        self.coupons: dict[int, dict] = {}
        self.thresholds: dict[int, dict] = {}
        self.deals: dict[int, dict] = {}
        self.deal_units_of: dict[tuple[int, int], int] = {}  # (deal, buyer) -> units reserved or paid
        self.discounts_paid = no_discounts()
        self.coupons_used = 0

    # writes ---------------------------------------------------------------
    def execute(self, commands: list, now_ms: int) -> list[dict]:
        self.now = now_ms if self.now is None else max(self.now, now_ms)
        self._expire()
        return [copy.deepcopy(self._one(cmd)) for cmd in commands]

    @property
    def clock(self) -> int:
        assert self.now is not None, "no batch yet"
        return self.now

    def _expire(self) -> None:
        for c in self.checkouts.values():
            if c["status"] == "reserved" and c["expires_at"] <= self.clock:
                self._put_back(c, "expired")

    def _put_back(self, c: dict, status: str) -> None:
        c["status"] = status
        for sku, qty in c["lines"]:
            self.skus[sku]["reserved"] -= qty
            self.skus[sku]["stock"] += qty
        for oid in c["orders"]:
            self.orders[oid]["status"] = status
        for coupon_id in c["coupons"]:
            self.coupons[coupon_id]["state"] = "held"
            self.coupons[coupon_id]["checkout"] = None
        for deal_id, units in c["deal_units"].items():
            self.deals[deal_id]["reserved"] -= units
            self.deal_units_of[(deal_id, c["buyer"])] -= units

    def _one(self, cmd: Any) -> dict:
        try:
            op, key, fields = parse(cmd)
        except ShapeError as e:
            return err(e.code)  # not remembered
        fingerprint = (op, fields)
        if key in self.keys:
            first_fp, first_result = self.keys[key]
            if first_fp == fingerprint:
                return first_result
            return err(Result.idempotency_key_reused)
        result = getattr(self, "_" + op)(*fields)
        self.keys[key] = (fingerprint, copy.deepcopy(result))
        return result

    # checkout ---------------------------------------------------------------
    def _checkout(self, buyer: int, country: str, channel: str, lines: tuple, coupons: tuple = ()) -> dict:
        try:
            for sku, _qty in lines:
                if sku not in self.skus:
                    raise Refused(Result.unknown_sku)
            self._check_coupons(buyer, lines, coupons)
            want: dict[int, int] = {}
            for sku, qty in lines:
                want[sku] = want.get(sku, 0) + qty
            deal_units = self._check_deals(buyer, lines, want)
            priced, coupon_discounts = self._price(lines, coupons)
            for sku, qty in want.items():
                if self.skus[sku]["stock"] < qty:
                    raise Refused(Result.out_of_stock)
        except Refused as refused:
            return err(refused.code)
        for sku, qty in lines:
            self.skus[sku]["stock"] -= qty
            self.skus[sku]["reserved"] += qty
        cid = len(self.checkouts) + 1
        for coupon_id in coupons:
            self.coupons[coupon_id]["state"] = "reserved"
            self.coupons[coupon_id]["checkout"] = cid
        for deal_id, units in deal_units.items():
            d = self.deals[deal_id]
            d["reserved"] += units
            self.deal_units_of[(deal_id, buyer)] = self.deal_units_of.get((deal_id, buyer), 0) + units
            if d["sold_out_at"] is None and self._deal_left(d) == 0:
                d["sold_out_at"] = self.clock
        merchants = sorted({self.skus[sku]["merchant"] for sku, _ in lines})
        order_of: dict[int, int] = {}
        for m in merchants:
            oid = len(self.orders) + 1
            order_of[m] = oid
            self.orders[oid] = {"order": oid, "checkout": cid, "buyer": buyer, "merchant": m, "status": "reserved",
                                "lines": [],
                                "deal_units": {}}
        for line in priced:
            o = self.orders[order_of[line["merchant"]]]
            line["order"] = o["order"]
            o["lines"].append(line)
            if line["deal"] is not None:
                o["deal_units"][line["deal"]] = o["deal_units"].get(line["deal"], 0) + line["qty"]
        c: dict[str, Any] = {
            "checkout": cid,
            "buyer": buyer,
            "country": country,
            "channel": channel,
            "status": "reserved",
            "amount_fen": self._payable(priced),  # what pay must send
            "created_at": self.clock,
            "expires_at": self.clock + self.config.payment_timeout_ms,
            "lines": list(lines),
            "priced": priced,  # the lines as given, with their prices and discounts
            "orders": [order_of[m] for m in merchants],
            "coupons": list(coupons),
            "coupon_discounts": coupon_discounts,
            "deal_units": deal_units,
        }
        self.checkouts[cid] = c
        body: dict = {
            "checkout": cid,
            "amount_fen": self._payable(priced),
            "orders": [self._order_summary(oid, with_status=False) for oid in c["orders"]],
            "status": "reserved",
            "expires_at": c["expires_at"],
        }
        if self._discounted(c):
            body["list_fen"] = sum(line["list_fen"] for line in priced)
            body["discounts"] = self._discounts(priced)
        return ok(201, body)

    def _check_coupons(self, buyer: int, lines: tuple, coupons: tuple) -> None:
        merchants = {self.skus[sku]["merchant"] for sku, _ in lines}
        store_merchants: set[int] = set()
        for coupon_id in coupons:
            c = self.coupons.get(coupon_id)
            if c is None:
                raise Refused(Result.unknown_coupon)
            if c["buyer"] != buyer:
                raise Refused(Result.not_your_coupon)
            if c["state"] != "held":
                raise Refused(Result.coupon_not_held)
            t = self.templates[c["template"]]
            if self.clock < t["use_from"]:
                raise Refused(Result.not_in_window)
            if self.clock >= t["use_until"]:
                raise Refused(Result.coupon_expired)
            if t["kind"] == "store":
                if t["merchant"] not in merchants:
                    raise Refused(Result.coupon_merchant_not_in_checkout)
                if t["merchant"] in store_merchants:
                    raise Refused(Result.two_store_coupons)
                store_merchants.add(t["merchant"])

    def _open_deal(self, sku: int) -> dict | None:
        for d in self.deals.values():
            if d["sku"] == sku and is_open(d["from"], d["until"], self.clock):
                return d
        return None

    def _open_threshold(self) -> dict | None:
        for t in self.thresholds.values():
            if is_open(t["from"], t["until"], self.clock):
                return t
        return None

    @staticmethod
    def _deal_left(d: dict) -> int:
        return d["qty"] - d["reserved"] - d["sold"]

    def _check_deals(self, buyer: int, lines: tuple, want: dict[int, int]) -> dict[int, int]:
        """the deals' units the checkout takes: {deal id: units}"""
        units: dict[int, int] = {}
        for sku, _qty in lines:
            d = self._open_deal(sku)
            if d is None or d["deal"] in units:
                continue
            asked = want[sku]
            if self._deal_left(d) < asked:
                raise Refused(Result.deal_sold_out)
            if self.deal_units_of.get((d["deal"], buyer), 0) + asked > d["per_buyer_max"]:
                raise Refused(Result.deal_buyer_limit)
            units[d["deal"]] = asked
        return units

    def _price(self, lines: tuple, coupons: tuple) -> tuple[list[dict], dict[int, int]]:
        """The lines (as given) priced step by step (docs/promotions.md, Pricing),
        and each coupon's discount; Refused(min_spend_not_met) at the first
        coupon whose base falls short, in pricing order."""
        priced = []
        for sku, qty in lines:
            s = self.skus[sku]
            d = self._open_deal(sku)
            line = {"sku": sku, "qty": qty, "merchant": s["merchant"], "price_fen": s["price_fen"],
                    "list_fen": qty * s["price_fen"], "discounts": no_discounts(),
                    "deal": None if d is None else d["deal"]}
            line["left"] = line["list_fen"]
            if d is not None:
                line["discounts"]["deal"] = (s["price_fen"] - d["price_fen"]) * qty
                line["left"] = d["price_fen"] * qty
            priced.append(line)
        stored = sorted(priced, key=lambda line: line["merchant"])  # stable: then as given

        def step(kind: str, applies: list[dict], discount: int) -> None:
            for line, share in zip(applies, allocate(discount, [x["left"] for x in applies]), strict=True):
                line["discounts"][kind] += share
                line["left"] -= share

        chosen = [self.coupons[c] for c in coupons]
        store = [c for c in chosen if self.templates[c["template"]]["kind"] == "store"]
        platform = [c for c in chosen if self.templates[c["template"]]["kind"] == "platform"]
        coupon_discounts: dict[int, int] = {}
        for c in store:
            t = self.templates[c["template"]]
            applies = [x for x in stored if x["merchant"] == t["merchant"]]
            base = sum(x["left"] for x in applies)
            if base < t["min_spend_fen"]:
                raise Refused(Result.min_spend_not_met)
            coupon_discounts[c["coupon"]] = self._coupon_takes(t, base, stored)
            step("store_coupon", applies, coupon_discounts[c["coupon"]])
        th = self._open_threshold()
        if th is not None:
            applies = [x for x in stored if not th["merchants"] or x["merchant"] in th["merchants"]]
            base = sum(x["left"] for x in applies)
            step("threshold", applies, base // th["every_fen"] * th["off_fen"])
        for c in platform:
            t = self.templates[c["template"]]
            base = sum(x["left"] for x in stored)
            if base < t["min_spend_fen"]:
                raise Refused(Result.min_spend_not_met)
            coupon_discounts[c["coupon"]] = self._coupon_takes(t, base, stored)
            step("platform_coupon", stored, coupon_discounts[c["coupon"]])
        for line in priced:
            del line["left"]
        return priced, coupon_discounts

    @staticmethod
    def _coupon_takes(t: dict, base: int, stored: list[dict]) -> int:
        """What a coupon takes off: its discount, at most its base, and at most
        what leaves the whole checkout 1 fen to pay."""
        return max(0, min(t["discount_fen"], base, sum(x["left"] for x in stored) - 1))

    # pricing read back ------------------------------------------------------
    @staticmethod
    def _payable(lines: list[dict]) -> int:
        return sum(line["list_fen"] - sum(line["discounts"].values()) for line in lines)

    @staticmethod
    def _discounts(lines: list[dict]) -> dict[str, int]:
        return {kind: sum(line["discounts"][kind] for line in lines) for kind in DISCOUNT_KINDS}

    def _discounted(self, c: dict) -> bool:
        return sum(self._discounts(c["priced"]).values()) > 0

    def _order_summary(self, oid: int, with_status: bool) -> dict:
        o = self.orders[oid]
        out: dict = {"order": oid, "merchant": o["merchant"], "amount_fen": self._payable(o["lines"])}
        if with_status:
            out["status"] = o["status"]
        if self._discounted(self.checkouts[o["checkout"]]):
            out["list_fen"] = sum(line["list_fen"] for line in o["lines"])
            out["discounts"] = self._discounts(o["lines"])
        return out

    def _amount(self, cid: int) -> int:
        return int(self.checkouts[cid]["amount_fen"])

    # pay, cancel, confirm, refund, restock -----------------------------------
    def _state_error(self, c: dict) -> dict | None:
        return {
            "reserved": None,
            "paid": err(Result.already_paid),
            "cancelled": err(Result.cancelled),
            "expired": err(Result.expired),
        }[c["status"]]

    def _pay(self, cid: int, amount: int) -> dict:
        c = self.checkouts.get(cid)
        if c is None:
            return err(Result.unknown_checkout)
        bad = self._state_error(c)
        if bad is not None:
            return bad
        if amount != self._amount(cid):
            return err(Result.amount_mismatch)
        c["status"] = "paid"
        for sku, qty in c["lines"]:
            self.skus[sku]["reserved"] -= qty
            self.skus[sku]["sold"] += qty
        for oid in c["orders"]:
            self.orders[oid]["status"] = "paid"
        for deal_id, units in c["deal_units"].items():
            self.deals[deal_id]["reserved"] -= units
            self.deals[deal_id]["sold"] += units
        for coupon_id in c["coupons"]:
            coupon = self.coupons[coupon_id]
            coupon["state"] = "used"
            t = self.templates[coupon["template"]]
            t["used"] += 1
            t["discount_given_fen"] += c["coupon_discounts"][coupon_id]
            self.coupons_used += 1
        discounts = self._discounts(c["priced"])
        for kind in DISCOUNT_KINDS:
            self.discounts_paid[kind] += discounts[kind]
        self.accounts["buyers"] -= amount
        self.accounts["escrow"] += amount
        self.transfers += 1
        if discounts["platform_coupon"] > 0:
            self.accounts["marketing"] -= discounts["platform_coupon"]
            self.accounts["escrow"] += discounts["platform_coupon"]
            self.transfers += 1
        self.gmv += amount
        if c["channel"] == "mobile":
            self.mobile_gmv += amount
        self.payments += 1
        self.paid_buyers.add(c["buyer"])
        self.paid_countries.add(c["country"])
        self.by_hour[((self.clock + UTC8_MS) // HOUR_MS) % 24] += amount
        return ok(200, {"checkout": cid, "status": "paid", "amount_fen": amount})

    def _cancel(self, cid: int) -> dict:
        c = self.checkouts.get(cid)
        if c is None:
            return err(Result.unknown_checkout)
        bad = self._state_error(c)
        if bad is not None:
            return bad
        self._put_back(c, "cancelled")
        return ok(200, {"checkout": cid, "status": "cancelled"})

    def _order_state_error(self, o: dict) -> dict | None:
        return {
            "reserved": err(Result.not_paid),
            "cancelled": err(Result.not_paid),
            "expired": err(Result.not_paid),
            "paid": None,
            "settled": err(Result.already_settled),
            "refunded": err(Result.already_refunded),
        }[o["status"]]

    def _confirm(self, oid: int) -> dict:
        o = self.orders.get(oid)
        if o is None:
            return err(Result.unknown_order)
        bad = self._order_state_error(o)
        if bad is not None:
            return bad
        # the merchant is settled on its price less only what it funds
        amount = self._payable(o["lines"]) + self._discounts(o["lines"])["platform_coupon"]
        commission = amount * self.config.commission_bps // 10000
        o["status"] = "settled"
        self.accounts["escrow"] -= amount
        self.accounts["merchants"] += amount - commission
        self.accounts["platform"] += commission
        self.transfers += 2
        self.settled += amount
        return ok(200, {"order": oid, "status": "settled", "merchant_fen": amount - commission,
                        "commission_fen": commission})

    def _refund(self, oid: int) -> dict:
        o = self.orders.get(oid)
        if o is None:
            return err(Result.unknown_order)
        bad = self._order_state_error(o)
        if bad is not None:
            return bad
        amount = self._payable(o["lines"])
        platform_share = self._discounts(o["lines"])["platform_coupon"]
        o["status"] = "refunded"
        for line in o["lines"]:
            self.skus[line["sku"]]["sold"] -= line["qty"]
            self.skus[line["sku"]]["stock"] += line["qty"]
        buyer = self.checkouts[o["checkout"]]["buyer"]
        for deal_id, units in o["deal_units"].items():
            self.deals[deal_id]["sold"] -= units
            self.deal_units_of[(deal_id, buyer)] -= units
        self.accounts["escrow"] -= amount
        self.accounts["buyers"] += amount
        self.transfers += 1
        if platform_share > 0:
            self.accounts["escrow"] -= platform_share
            self.accounts["marketing"] += platform_share
            self.transfers += 1
        self.refunded += amount
        return ok(200, {"order": oid, "status": "refunded", "amount_fen": amount})

    def _restock(self, sku: int, qty: int) -> dict:
        s = self.skus.get(sku)
        if s is None:
            return err(Result.unknown_sku)
        s["stock"] += qty
        s["stocked"] += qty
        return ok(200, {"sku": sku, "qty": qty})

    def _release(self, sku: int, qty: int) -> dict:
        s = self.skus.get(sku)
        if s is None:
            return err(Result.unknown_sku)
        if s["stock"] < qty:
            return err(Result.out_of_stock)
        s["stock"] -= qty
        s["stocked"] -= qty
        return ok(200, {"sku": sku, "qty": qty, "stock": s["stock"]})

    # promotions' commands -----------------------------------------------------
    def _coupon_template(self, kind: str, merchant: int | None, discount: int, min_spend: int, budget_count: int,
                         budget_fen: int, per_buyer: int, grant_from: int, grant_until: int, use_from: int,
                         use_until: int) -> dict:
        if kind == "store" and merchant not in self.merchants:
            return err(Result.unknown_merchant)
        tid = len(self.templates) + 1
        self.templates[tid] = {
            "template": tid, "kind": kind, "merchant": merchant, "discount_fen": discount,
            "min_spend_fen": min_spend, "budget_count": budget_count, "budget_fen": budget_fen,
            "per_buyer_max": per_buyer, "grant_from": grant_from, "grant_until": grant_until,
            "use_from": use_from, "use_until": use_until, "granted": 0, "used": 0, "discount_given_fen": 0,
        }
        return ok(201, self._template_view(tid))

    def _threshold_discount(self, every: int, off: int, merchants: tuple, start: int, until: int) -> dict:
        for m in merchants:
            if m not in self.merchants:
                return err(Result.unknown_merchant)
        for t in self.thresholds.values():
            if meets(start, until, t["from"], t["until"]):
                return err(Result.window_overlaps)
        tid = len(self.thresholds) + 1
        self.thresholds[tid] = {"threshold": tid, "every_fen": every, "off_fen": off, "merchants": list(merchants),
                                "from": start, "until": until}
        return ok(201, self.threshold_discount(tid) or {})

    def _deal(self, sku: int, price: int, qty: int, per_buyer: int, start: int, until: int, kind: str) -> dict:
        s = self.skus.get(sku)
        if s is None:
            return err(Result.unknown_sku)
        if price >= s["price_fen"]:
            return err(Result.invalid_deal)
        for d in self.deals.values():
            if d["sku"] == sku and meets(start, until, d["from"], d["until"]):
                return err(Result.window_overlaps)
        did = len(self.deals) + 1
        self.deals[did] = {"deal": did, "sku": sku, "kind": kind, "price_fen": price, "qty": qty,
                           "per_buyer_max": per_buyer, "from": start, "until": until, "sold": 0, "reserved": 0,
                           "sold_out_at": None}
        return ok(201, self.deal(did) or {})

    def _grant(self, template: int, buyer: int, source: str) -> dict:
        t = self.templates.get(template)
        if t is None:
            return err(Result.unknown_template)
        if not is_open(t["grant_from"], t["grant_until"], self.clock):
            return err(Result.not_in_window)
        if t["granted"] >= t["budget_count"] or (
                t["budget_fen"] != 0 and (t["granted"] + 1) * t["discount_fen"] > t["budget_fen"]):
            return err(Result.budget_exhausted)
        held = sum(1 for c in self.coupons.values() if c["template"] == template and c["buyer"] == buyer)
        if held >= t["per_buyer_max"]:
            return err(Result.buyer_limit_reached)
        cid = len(self.coupons) + 1
        self.coupons[cid] = {"coupon": cid, "template": template, "buyer": buyer, "source": source,
                             "state": "held", "granted_at": self.clock, "checkout": None}
        t["granted"] += 1
        return ok(201, self.coupon(cid) or {})

    def _coupon_budget(self, template: int, count: int) -> dict:
        t = self.templates.get(template)
        if t is None:
            return err(Result.unknown_template)
        if t["budget_count"] - t["granted"] < -count:
            return err(Result.budget_exhausted)
        t["budget_count"] += count
        return ok(200, {"template": template, "count": count, "budget_count": t["budget_count"]})

    def _deal_qty(self, deal: int, qty: int) -> dict:
        d = self.deals.get(deal)
        if d is None:
            return err(Result.unknown_deal)
        if self._deal_left(d) < -qty:
            return err(Result.deal_sold_out)
        d["qty"] += qty
        if qty > 0:
            d["sold_out_at"] = None
        return ok(200, {"deal": deal, "qty": qty, "deal_qty": d["qty"]})

    # reads ----------------------------------------------------------------
    def sku(self, sku: int) -> dict | None:
        s = self.skus.get(sku)
        return None if s is None else dict(s)

    @staticmethod
    def _line_view(line: dict, discounted: bool, order: bool) -> dict:
        out = {"sku": line["sku"], "qty": line["qty"], "price_fen": line["price_fen"],
               "amount_fen": line["list_fen"] - sum(line["discounts"].values())}
        if order:
            out["order"] = line["order"]
        if discounted:
            out["list_fen"] = line["list_fen"]
            out["discounts"] = dict(line["discounts"])
        return out

    def checkout(self, cid: int) -> dict | None:
        c = self.checkouts.get(cid)
        if c is None:
            return None
        discounted = self._discounted(c)
        out = {
            "checkout": cid,
            "buyer": c["buyer"],
            "country": c["country"],
            "channel": c["channel"],
            "status": c["status"],
            "amount_fen": self._payable(c["priced"]),
            "created_at": c["created_at"],
            "expires_at": c["expires_at"],
            "lines": [self._line_view(line, discounted, order=True) for line in c["priced"]],
            "orders": [self._order_summary(oid, with_status=True) for oid in c["orders"]],
        }
        if discounted:
            out["list_fen"] = sum(line["list_fen"] for line in c["priced"])
            out["discounts"] = self._discounts(c["priced"])
        return out

    def order(self, oid: int) -> dict | None:
        o = self.orders.get(oid)
        if o is None:
            return None
        discounted = self._discounted(self.checkouts[o["checkout"]])
        out = {
            "order": oid,
            "checkout": o["checkout"],
            "buyer": o["buyer"],
            "merchant": o["merchant"],
            "status": o["status"],
            "amount_fen": self._payable(o["lines"]),
            "lines": [self._line_view(line, discounted, order=False) for line in o["lines"]],
        }
        if discounted:
            out["list_fen"] = sum(line["list_fen"] for line in o["lines"])
            out["discounts"] = self._discounts(o["lines"])
        return out

    def ledger(self) -> dict:
        return {"accounts": dict(self.accounts), "sum": sum(self.accounts.values()), "transfers": self.transfers}

    def stats(self) -> dict:
        return {
            "gmv_fen": self.gmv,
            "checkouts": len(self.checkouts),
            "orders": len(self.orders),
            "payments": self.payments,
            "mobile_gmv_fen": self.mobile_gmv,
            "buyers": len(self.paid_buyers),
            "new_buyers": len(self.paid_buyers - self.returning),
            "countries": len(self.paid_countries),
            "refunded_fen": self.refunded,
            "settled_fen": self.settled,
            "gmv_by_hour_fen": list(self.by_hour),
            "promotions": {
                "discounts_fen": dict(self.discounts_paid),
                "coupons_granted": len(self.coupons),
                "coupons_used": self.coupons_used,
                "deals_sold_out": sum(1 for d in self.deals.values() if d["sold_out_at"] is not None),
            },
        }

    def _template_view(self, tid: int) -> dict:
        t = self.templates[tid]
        view = {k: t[k] for k in ("template", "kind", "merchant", "discount_fen", "min_spend_fen", "budget_count",
                                   "budget_fen", "per_buyer_max", "grant_from", "grant_until", "use_from",
                                   "use_until", "granted", "used", "discount_given_fen")}
        view["budget_count_left"] = t["budget_count"] - t["granted"]
        if t["budget_fen"] == 0:
            view["budget_fen"] = None
            view["budget_fen_left"] = None
        else:
            view["budget_fen_left"] = t["budget_fen"] - t["granted"] * t["discount_fen"]
        return view

    def view(self, name: str, id_: int) -> dict | None:
        """Festival.view's: a promotions view by name."""
        return getattr(self, name)(id_)

    def coupon_template(self, tid: int) -> dict | None:
        return self._template_view(tid) if tid in self.templates else None

    def coupon(self, coupon_id: int) -> dict | None:
        c = self.coupons.get(coupon_id)
        if c is None:
            return None
        t = self.templates[c["template"]]
        status = c["state"]
        if status == "held" and self.clock >= t["use_until"]:
            status = "expired"
        return {
            "coupon": coupon_id, "template": c["template"], "kind": t["kind"], "merchant": t["merchant"],
            "buyer": c["buyer"], "source": c["source"], "status": status, "discount_fen": t["discount_fen"],
            "min_spend_fen": t["min_spend_fen"], "use_from": t["use_from"], "use_until": t["use_until"],
            "granted_at": c["granted_at"], "checkout": c["checkout"],
        }

    def buyer_coupons(self, buyer: int) -> dict:
        mine = sorted((cid for cid, c in self.coupons.items() if c["buyer"] == buyer), reverse=True)
        return {"buyer": buyer, "coupons": [self.coupon(cid) for cid in mine]}

    def deal(self, did: int) -> dict | None:
        d = self.deals.get(did)
        if d is None:
            return None
        return {**{k: d[k] for k in ("deal", "sku", "kind", "price_fen", "qty", "per_buyer_max", "from", "until",
                                      "sold", "reserved", "sold_out_at")}, "left": self._deal_left(d)}

    def threshold_discount(self, tid: int) -> dict | None:
        t = self.thresholds.get(tid)
        return None if t is None else {**t, "merchants": list(t["merchants"])}

    # helpers for tests ------------------------------------------------------
    def paid_amount_total(self) -> int:
        return sum(self._amount(cid) for cid, c in self.checkouts.items() if c["status"] == "paid")
