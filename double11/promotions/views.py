"""What the promotions look like from outside (docs/promotions.md, "Views"):
the created things, the live figures, and the discounts of checkouts,
orders and lines.  Read between batches (service/reads.py), never in the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from double11 import limits
from double11.promotions import answers
from double11.promotions.answers import Values
from double11.promotions.spec import DEAL_KINDS, TEMPLATE_KINDS
from double11.promotions.tables import COUPON_STATUS, DISCOUNT_KINDS, F_GRANTED, F_SOLD_OUT, F_USED, HELD, NEVER
from double11.spec import string_of

_OFF_FIELDS = ("off_deal", "off_store", "off_threshold", "off_platform")  # in DISCOUNT_KINDS' order


def _money(amount: int, promo: Any) -> dict[str, Any]:
    offs = [int(promo[name]) for name in _OFF_FIELDS] if promo is not None else [0] * len(_OFF_FIELDS)
    return {"amount_fen": amount - sum(offs), "list_fen": amount, "discounts": dict(zip(DISCOUNT_KINDS, offs))}


def _promo(engine: Any, checkout_row: int) -> Any:
    """Checkout row's promotions record, or None."""
    link = int(engine.checkouts.rows[checkout_row]["promo"])
    return engine.promos.checkout_promos.rows[link - 1] if link else None


def checkout_money(engine: Any, row: int) -> dict[str, Any]:
    """Checkout row `row` as amounts: `amount_fen` (what the buyer pays),
    `list_fen` and `discounts` by kind."""
    return _money(int(engine.checkouts.rows[row]["amount"]), _promo(engine, row))


def order_money(engine: Any, row: int) -> dict[str, Any]:
    order = engine.orders.rows[row]
    checkout_row = int(order["checkout"])
    cp = _promo(engine, checkout_row)
    at = int(cp["order_start"]) + row - int(engine.checkouts.rows[checkout_row]["order_start"]) if cp is not None else 0
    return _money(int(order["amount"]), engine.promos.order_promos.rows[at] if cp is not None else None)


def line_money(engine: Any, row: int) -> dict[str, Any]:
    line = engine.lines.rows[row]
    checkout_row = int(engine.orders.rows[int(line["order"])]["checkout"])
    cp = _promo(engine, checkout_row)
    at = int(cp["line_start"]) + row - int(engine.checkouts.rows[checkout_row]["line_start"]) if cp is not None else 0
    return _money(int(line["amount"]), engine.promos.line_promos.rows[at] if cp is not None else None)


def discounted(engine: Any, checkout_row: int) -> bool:
    """Whether the checkout has any discount (its views then show them)."""
    cp = _promo(engine, checkout_row)
    return cp is not None and any(int(cp[name]) != 0 for name in _OFF_FIELDS)


def _merchant_id(engine: Any, row: int) -> int | None:
    return None if row < 0 else int(engine.catalog.merchant_id[row])


def template(engine: Any, template_id: int) -> dict[str, Any] | None:
    table = engine.promos.coupon_templates
    if not 1 <= template_id <= table.size:
        return None
    t = table.rows[template_id - 1]
    budget_fen = int(t["budget_fen"])
    granted, discount = int(t["granted"]), int(t["discount"])
    return {
        "template": template_id, "kind": TEMPLATE_KINDS[int(t["kind"])],
        "merchant": _merchant_id(engine, int(t["merchant"])), "discount_fen": discount,
        "min_spend_fen": int(t["min_spend"]), "budget_count": int(t["budget_count"]),
        "budget_fen": budget_fen or None, "per_buyer_max": int(t["per_buyer_max"]),
        "grant_from": int(t["grant_from"]), "grant_until": int(t["grant_until"]),
        "use_from": int(t["use_from"]), "use_until": int(t["use_until"]),
        "granted": granted, "used": int(t["used"]), "discount_given_fen": int(t["given"]),
        "budget_count_left": int(t["budget_count"]) - granted,
        "budget_fen_left": budget_fen - granted * discount if budget_fen else None,
    }


def coupon(engine: Any, coupon_id: int) -> dict[str, Any] | None:
    coupons = engine.promos.coupons
    if not 1 <= coupon_id <= coupons.size:
        return None
    c = coupons.rows[coupon_id - 1]
    t = engine.promos.coupon_templates.rows[int(c["template"])]
    status = COUPON_STATUS[int(c["status"])]
    if int(c["status"]) == HELD and engine.now_ms >= int(t["use_until"]):
        status = "expired"
    checkout = int(c["checkout"])
    return {
        "coupon": coupon_id, "template": int(c["template"]) + 1, "kind": TEMPLATE_KINDS[int(t["kind"])],
        "merchant": _merchant_id(engine, int(t["merchant"])), "buyer": int(engine.b_id.data[int(c["buyer"])]),
        "source": string_of([c["source0"], c["source1"], c["source2"], c["source3"]]), "status": status,
        "discount_fen": int(t["discount"]), "min_spend_fen": int(t["min_spend"]),
        "use_from": int(t["use_from"]), "use_until": int(t["use_until"]), "granted_at": int(c["granted_at"]),
        "checkout": checkout or None,
    }


def buyer_coupons(engine: Any, buyer_id: int) -> dict[str, Any]:
    """A buyer's coupons, newest first (none for a buyer never seen)."""
    out: list[dict[str, Any]] = []
    if 0 < buyer_id < 2**63:
        row = int(engine.buyer_index.lookup(np.array([buyer_id], dtype=np.uint64))[0])
        if row >= 0:
            link = int(engine.buyers.rows[row]["promo"])
            c = int(engine.promos.buyer_promos.rows[link - 1]["coupon_head"]) - 1 if link else -1
            coupons = engine.promos.coupons.rows
            while c >= 0:
                view = coupon(engine, c + 1)
                assert view is not None  # a chain holds coupons that exist
                out.append(view)
                c = int(coupons[c]["next_of_buyer"]) - 1
    return {"buyer": buyer_id, "coupons": out}


def deal(engine: Any, deal_id: int) -> dict[str, Any] | None:
    deals = engine.promos.deals
    if not 1 <= deal_id <= deals.size:
        return None
    d = deals.rows[deal_id - 1]
    taken, sold, qty = int(d["taken"]), int(d["sold"]), int(d["qty"])
    sold_out_at = int(d["sold_out_at"])
    return {
        "deal": deal_id, "sku": int(engine.catalog.sku_id[int(d["sku"])]), "kind": DEAL_KINDS[int(d["kind"])],
        "price_fen": int(d["price"]), "qty": qty, "per_buyer_max": int(d["per_buyer_max"]),
        "from": int(d["opens"]), "until": int(d["closes"]), "sold": sold, "reserved": taken - sold,
        "left": qty - taken, "sold_out_at": None if sold_out_at == NEVER else sold_out_at,
    }


def threshold(engine: Any, threshold_id: int) -> dict[str, Any] | None:
    thresholds = engine.promos.thresholds
    if not 1 <= threshold_id <= thresholds.size:
        return None
    t = thresholds.rows[threshold_id - 1]
    start, count = int(t["merchant_start"]), int(t["merchants"])
    rows = engine.promos.threshold_merchants.data[start:start + count]
    return {"threshold": threshold_id, "every_fen": int(t["every"]), "off_fen": int(t["off"]),
            "merchants": [int(m) for m in engine.catalog.merchant_id[rows]],
            "from": int(t["opens"]), "until": int(t["closes"])}


def figures(engine: Any) -> dict[str, Any]:
    """The live figures /v1/stats shows under `promotions`."""
    f = engine.promos.figures.data
    return {"discounts_fen": {kind: int(f[k]) for k, kind in enumerate(DISCOUNT_KINDS)},
            "coupons_granted": int(f[F_GRANTED]), "coupons_used": int(f[F_USED]),
            "deals_sold_out": int(f[F_SOLD_OUT]), **budgets_left(engine),
            "deals_sold_out_latest": deals_sold_out_latest(engine)}


def budgets_left(engine: Any) -> dict[str, dict[str, int]]:
    """By template kind: `coupons_left`, the coupons the templates may still
    grant (their count budget, and their fen budget where they have one; none
    once their grant window has closed), and `coupon_budget_left_fen`, what
    those coupons are worth at face value."""
    table = engine.promos.coupon_templates
    t = table.rows[:table.size]
    discount = t["discount"]
    left = t["budget_count"] - t["granted"]
    by_fen = (t["budget_fen"] - t["granted"] * discount) // np.maximum(discount, 1)
    left = np.where(t["budget_fen"] > 0, np.minimum(left, by_fen), left)
    left = np.where(engine.now_ms < t["grant_until"], left, 0)
    kinds = list(enumerate(TEMPLATE_KINDS))
    return {"coupons_left": {kind: int(left[t["kind"] == k].sum()) for k, kind in kinds},
            "coupon_budget_left_fen": {kind: int((left * discount)[t["kind"] == k].sum()) for k, kind in kinds}}


def deals_sold_out_latest(engine: Any) -> list[dict[str, Any]]:
    """The deals that sold out last, newest first (as many as the stats' top lists)."""
    table = engine.promos.deals
    at = table.rows[:table.size]["sold_out_at"]
    sold_out = np.flatnonzero(at != NEVER)
    latest = sold_out[np.argsort(-at[sold_out], kind="stable")][:limits.stats_top_n]
    out = []
    for row in latest.tolist():
        view = deal(engine, row + 1)
        assert view is not None  # a row of the table
        out.append({key: view[key] for key in ("deal", "sku", "kind", "sold_out_at")})
    return out


# A command that creates a thing answers the thing as it was created (its
# counters at zero), whatever later commands of its batch did to it, so that
# a retry reads the same answer as the first try did.  A template's
# budget_count and a deal's qty are read from the command as sent: a
# coupon_budget or a deal_qty may have moved them since.
def template_as_created(engine: Any, template_id: int, values: Values) -> dict[str, Any] | None:
    view = template(engine, template_id)
    if view is not None:
        budget = values["budget_count"]
        view |= {"budget_count": budget, "granted": 0, "used": 0, "discount_given_fen": 0,
                 "budget_count_left": budget, "budget_fen_left": view["budget_fen"]}
    return view


def deal_as_created(engine: Any, deal_id: int, values: Values) -> dict[str, Any] | None:
    view = deal(engine, deal_id)
    if view is not None:
        view |= {"qty": values["qty"], "sold": 0, "reserved": 0, "left": values["qty"], "sold_out_at": None}
    return view


def coupon_as_created(engine: Any, coupon_id: int) -> dict[str, Any] | None:
    view = coupon(engine, coupon_id)
    if view is not None:
        expired = view["granted_at"] >= view["use_until"]
        view |= {"status": "expired" if expired else "held", "checkout": None}
    return view


# the answer of each command that creates a thing, read from its id alone, by op
CREATED = {"threshold_discount": threshold, "grant": coupon_as_created}
# the answer of each command that reads what it sent too, by op: (engine, its
# path id, its values as sent, its result's ref) -> body.  Operators' commands
# alone: decoding a command's values costs more than a grant's answer may.
FROM_SENT: dict[str, Callable[[Any, int, Values, int], dict[str, Any] | None]] = {
    "coupon_template": lambda engine, _target, values, ref: template_as_created(engine, ref, values),
    "deal": lambda engine, _target, values, ref: deal_as_created(engine, ref, values),
    "coupon_budget": lambda _engine, target, values, ref: answers.budget_moved(target, values, ref),
    "deal_qty": lambda _engine, target, values, ref: answers.qty_moved(target, values, ref),
}
