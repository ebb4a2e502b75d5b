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
Not modelled: batch_too_large / body_too_large (edge limits), overloaded,
not_found, method_not_allowed (HTTP), and the stats figures outside
STATS_KEYS (rates, peaks, tops, growth).
"""

from __future__ import annotations

import copy
from typing import Any

from double11 import geo, limits
from double11.catalog import Catalog
from double11.config import FestivalConfig
from double11.errors import HTTP_STATUS, Result, error_body

OPS = ("checkout", "pay", "cancel", "confirm", "refund", "restock")
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


class ShapeError(Exception):
    def __init__(self, code: Result):
        self.code = code


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _id(cmd: dict, name: str) -> int:
    v = cmd.get(name)
    if not is_int(v) or not (1 <= v <= limits.id_max):
        raise ShapeError(Result.invalid_request)
    return v


def _int_in(cmd: dict, name: str, lo: int, hi: int, code: Result) -> int:
    v = cmd.get(name)
    if not is_int(v) or not (lo <= v <= hi):
        raise ShapeError(code)
    return v


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
        fields: tuple = (buyer, country, channel, tuple(parsed))
    elif op == "pay":
        fields = (
            _id(cmd, "checkout"),
            _int_in(cmd, "amount_fen", 1, limits.id_max, Result.invalid_amount),
        )
    elif op == "cancel":
        fields = (_id(cmd, "checkout"),)
    elif op in ("confirm", "refund"):
        fields = (_id(cmd, "order"),)
    else:  # restock
        fields = (
            _id(cmd, "sku"),
            _int_in(cmd, "qty", 1, limits.restock_qty_max, Result.invalid_quantity),
        )
    return op, key, fields


def ok(status: int, body: dict) -> dict:
    return {"status": status, "body": body}


def err(code: Result) -> dict:
    return {"status": HTTP_STATUS[code], "body": error_body(code)}


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
        self.returning = {int(b) for b in catalog.returning_buyers}
        self.checkouts: dict[int, dict] = {}
        self.orders: dict[int, dict] = {}
        self.keys: dict[str, tuple[tuple, dict]] = {}  # key -> (fingerprint, first result)
        self.now: int | None = None
        self.accounts = {"buyers": 0, "escrow": 0, "merchants": 0, "platform": 0}
        self.transfers = 0
        self.gmv = 0
        self.mobile_gmv = 0
        self.payments = 0
        self.paid_buyers: set[int] = set()
        self.paid_countries: set[str] = set()
        self.refunded = 0
        self.settled = 0
        self.by_hour = [0] * 24

    # writes ---------------------------------------------------------------
    def execute(self, commands: list, now_ms: int) -> list[dict]:
        self.now = now_ms if self.now is None else max(self.now, now_ms)
        self._expire()
        return [copy.deepcopy(self._one(cmd)) for cmd in commands]

    def _expire(self) -> None:
        for c in self.checkouts.values():
            if c["status"] == "reserved" and c["expires_at"] <= self.now:
                self._release(c, "expired")

    def _release(self, c: dict, status: str) -> None:
        c["status"] = status
        for sku, qty in c["lines"]:
            self.skus[sku]["reserved"] -= qty
            self.skus[sku]["stock"] += qty
        for oid in c["orders"]:
            self.orders[oid]["status"] = status

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

    def _checkout(self, buyer: int, country: str, channel: str, lines: tuple) -> dict:
        for sku, _qty in lines:
            if sku not in self.skus:
                return err(Result.unknown_sku)
        want: dict[int, int] = {}
        for sku, qty in lines:
            want[sku] = want.get(sku, 0) + qty
        for sku, qty in want.items():
            if self.skus[sku]["stock"] < qty:
                return err(Result.out_of_stock)
        for sku, qty in lines:
            self.skus[sku]["stock"] -= qty
            self.skus[sku]["reserved"] += qty
        cid = len(self.checkouts) + 1
        merchants = sorted({self.skus[sku]["merchant"] for sku, _ in lines})
        order_of: dict[int, int] = {}
        for m in merchants:
            oid = len(self.orders) + 1
            order_of[m] = oid
            self.orders[oid] = {"order": oid, "checkout": cid, "merchant": m, "status": "reserved", "lines": []}
        total = 0
        for sku, qty in lines:
            s = self.skus[sku]
            amount = qty * s["price_fen"]
            total += amount
            self.orders[order_of[s["merchant"]]]["lines"].append((sku, qty, s["price_fen"], amount))
        for oid in order_of.values():
            self.orders[oid]["amount_fen"] = sum(line[3] for line in self.orders[oid]["lines"])
        c = {
            "checkout": cid,
            "buyer": buyer,
            "country": country,
            "channel": channel,
            "status": "reserved",
            "amount_fen": total,
            "created_at": self.now,
            "expires_at": self.now + self.config.payment_timeout_ms,
            "lines": list(lines),
            "orders": [order_of[m] for m in merchants],
        }
        self.checkouts[cid] = c
        return ok(
            201,
            {
                "checkout": cid,
                "amount_fen": total,
                "orders": [
                    {"order": oid, "merchant": self.orders[oid]["merchant"],
                     "amount_fen": self.orders[oid]["amount_fen"]}
                    for oid in c["orders"]
                ],
                "status": "reserved",
                "expires_at": c["expires_at"],
            },
        )

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
        if amount != c["amount_fen"]:
            return err(Result.amount_mismatch)
        c["status"] = "paid"
        for sku, qty in c["lines"]:
            self.skus[sku]["reserved"] -= qty
            self.skus[sku]["sold"] += qty
        for oid in c["orders"]:
            self.orders[oid]["status"] = "paid"
        self.accounts["buyers"] -= amount
        self.accounts["escrow"] += amount
        self.transfers += 1
        self.gmv += amount
        if c["channel"] == "mobile":
            self.mobile_gmv += amount
        self.payments += 1
        self.paid_buyers.add(c["buyer"])
        self.paid_countries.add(c["country"])
        self.by_hour[((self.now + UTC8_MS) // HOUR_MS) % 24] += amount
        return ok(200, {"checkout": cid, "status": "paid", "amount_fen": amount})

    def _cancel(self, cid: int) -> dict:
        c = self.checkouts.get(cid)
        if c is None:
            return err(Result.unknown_checkout)
        bad = self._state_error(c)
        if bad is not None:
            return bad
        self._release(c, "cancelled")
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
        amount = o["amount_fen"]
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
        amount = o["amount_fen"]
        o["status"] = "refunded"
        for sku, qty, _price, _amount in o["lines"]:
            self.skus[sku]["sold"] -= qty
            self.skus[sku]["stock"] += qty
        self.accounts["escrow"] -= amount
        self.accounts["buyers"] += amount
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

    # reads ----------------------------------------------------------------
    def sku(self, sku: int) -> dict | None:
        s = self.skus.get(sku)
        return None if s is None else dict(s)

    def checkout(self, cid: int) -> dict | None:
        c = self.checkouts.get(cid)
        if c is None:
            return None
        order_of = {self.orders[oid]["merchant"]: oid for oid in c["orders"]}
        lines = []
        for sku, qty in c["lines"]:
            s = self.skus[sku]
            lines.append(
                {"sku": sku, "qty": qty, "price_fen": s["price_fen"], "amount_fen": qty * s["price_fen"],
                 "order": order_of[s["merchant"]]}
            )
        return {
            "checkout": cid,
            "buyer": c["buyer"],
            "country": c["country"],
            "channel": c["channel"],
            "status": c["status"],
            "amount_fen": c["amount_fen"],
            "created_at": c["created_at"],
            "expires_at": c["expires_at"],
            "lines": lines,
            "orders": [
                {
                    "order": oid,
                    "merchant": self.orders[oid]["merchant"],
                    "amount_fen": self.orders[oid]["amount_fen"],
                    "status": self.orders[oid]["status"],
                }
                for oid in c["orders"]
            ],
        }

    def order(self, oid: int) -> dict | None:
        o = self.orders.get(oid)
        if o is None:
            return None
        return {
            "order": oid,
            "checkout": o["checkout"],
            "merchant": o["merchant"],
            "status": o["status"],
            "amount_fen": o["amount_fen"],
            "lines": [{"sku": sku, "qty": qty, "price_fen": price, "amount_fen": amount}
                      for sku, qty, price, amount in o["lines"]],
        }

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
        }

    # helpers for tests ------------------------------------------------------
    def paid_amount_total(self) -> int:
        return sum(c["amount_fen"] for c in self.checkouts.values() if c["status"] == "paid")
