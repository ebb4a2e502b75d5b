"""The reference model (tests/model/reference.py) and a tiny hand-made catalog."""

from __future__ import annotations

import numpy as np

from double11 import geo
from double11.catalog import Catalog

# sku id -> (merchant id, brand id, price fen, stock)
SMALL_SKUS: dict[int, tuple[int, int, int, int]] = {
    101: (30, 1, 1999, 3),
    102: (10, 2, 100, 5),
    103: (20, 1, 25000, 2),
    104: (30, 2, 350, 4),
    105: (10, 1, 12345, 1),
    106: (20, 2, 799, 0),
}
MERCHANTS = (10, 20, 30)
BRANDS = (1, 2)
RETURNING_BUYERS = (1, 2)
UNKNOWN_SKU = 999


def small_catalog(stock: dict[int, int] | None = None) -> Catalog:
    """Six SKUs of three merchants (ids 10, 20, 30) and two brands; small stock.
    `stock` overrides the stock of some SKUs."""
    stock = stock or {}
    ids = sorted(SMALL_SKUS)
    return Catalog(
        merchant_id=np.array(MERCHANTS, dtype=np.int64),
        merchant_name=["Ten Store", "Twenty Store", "Thirty Store"],
        merchant_marketplace=np.array([0, 1, 4], dtype=np.uint8),
        merchant_country=np.array([geo.encode("CN"), geo.encode("CN"), geo.encode("US")], dtype=np.uint16),
        brand_id=np.array(BRANDS, dtype=np.int64),
        brand_name=["Apple", "Xiaomi"],
        brand_international=np.array([True, False], dtype=bool),
        brand_origin=np.array([geo.encode("US"), geo.encode("CN")], dtype=np.uint16),
        sku_id=np.array(ids, dtype=np.int64),
        sku_merchant=np.array([SMALL_SKUS[s][0] for s in ids], dtype=np.int64),
        sku_brand=np.array([SMALL_SKUS[s][1] for s in ids], dtype=np.int64),
        sku_price_fen=np.array([SMALL_SKUS[s][2] for s in ids], dtype=np.int64),
        sku_stock=np.array([stock.get(s, SMALL_SKUS[s][3]) for s in ids], dtype=np.int64),
        returning_buyers=np.array(RETURNING_BUYERS, dtype=np.int64),
    )


# command builders ------------------------------------------------------------
T0 = 1_510_329_600_000 + 10 * 3_600_000  # 2017-11-11 10:00 UTC+8


def co(key: str, lines, buyer: int = 7, country: str = "CN", channel: str = "mobile",
       coupons: list[int] | None = None) -> dict:
    """checkout; lines as [(sku, qty), ...]; no "coupons" key when coupons is None"""
    cmd = {
        "op": "checkout",
        "idempotency_key": key,
        "buyer": buyer,
        "country": country,
        "channel": channel,
        "lines": [{"sku": s, "qty": q} for s, q in lines],
    }
    if coupons is not None:
        cmd["coupons"] = list(coupons)
    return cmd


def pay(key: str, checkout: int, amount_fen: int) -> dict:
    return {"op": "pay", "idempotency_key": key, "checkout": checkout, "amount_fen": amount_fen}


def cancel(key: str, checkout: int) -> dict:
    return {"op": "cancel", "idempotency_key": key, "checkout": checkout}


def confirm(key: str, order: int) -> dict:
    return {"op": "confirm", "idempotency_key": key, "order": order}


def refund(key: str, order: int) -> dict:
    return {"op": "refund", "idempotency_key": key, "order": order}


def restock(key: str, sku: int, qty: int) -> dict:
    return {"op": "restock", "idempotency_key": key, "sku": sku, "qty": qty}


def release(key: str, sku: int, qty: int) -> dict:
    """quotas: take qty unsold units out of the SKU's stock"""
    return {"op": "release", "idempotency_key": key, "sku": sku, "qty": qty}


# promotions (docs/promotions.md) -------------------------------------------------
HOUR_MS = 3_600_000


def template(key: str, kind: str = "platform", discount_fen: int = 1000, min_spend_fen: int = 0,
             budget_count: int = 100, merchant: int | None = None, budget_fen: int | None = None,
             per_buyer_max: int | None = None, grant_from: int = T0 - HOUR_MS, grant_until: int = T0 + HOUR_MS,
             use_from: int = T0 - HOUR_MS, use_until: int = T0 + 2 * HOUR_MS) -> dict:
    """coupon_template; merchant, budget_fen and per_buyer_max are left out when None"""
    cmd: dict = {"op": "coupon_template", "idempotency_key": key, "kind": kind}
    if merchant is not None:
        cmd["merchant"] = merchant
    cmd.update(discount_fen=discount_fen, min_spend_fen=min_spend_fen, budget_count=budget_count)
    if budget_fen is not None:
        cmd["budget_fen"] = budget_fen
    if per_buyer_max is not None:
        cmd["per_buyer_max"] = per_buyer_max
    cmd.update(grant_from=grant_from, grant_until=grant_until, use_from=use_from, use_until=use_until)
    return cmd


def threshold(key: str, every_fen: int, off_fen: int, merchants: list[int] | None = None,
              start: int = T0 - HOUR_MS, until: int = T0 + HOUR_MS) -> dict:
    """threshold_discount; no "merchants" key when None ("from" is a keyword: start)"""
    cmd: dict = {"op": "threshold_discount", "idempotency_key": key, "every_fen": every_fen, "off_fen": off_fen}
    if merchants is not None:
        cmd["merchants"] = list(merchants)
    cmd.update({"from": start, "until": until})
    return cmd


def deal(key: str, sku: int, price_fen: int, qty: int, per_buyer_max: int = 1, start: int = T0 - HOUR_MS,
         until: int = T0 + HOUR_MS, kind: str = "flash") -> dict:
    return {"op": "deal", "idempotency_key": key, "sku": sku, "price_fen": price_fen, "qty": qty,
            "per_buyer_max": per_buyer_max, "from": start, "until": until, "kind": kind}


def grant(key: str, template: int, buyer: int = 7, source: str = "game:catch-the-cat") -> dict:
    return {"op": "grant", "idempotency_key": key, "template": template, "buyer": buyer, "source": source}


def coupon_budget(key: str, template: int, count: int) -> dict:
    """count coupons added to the template's budget (negative: taken out)"""
    return {"op": "coupon_budget", "idempotency_key": key, "template": template, "count": count}


def deal_qty(key: str, deal: int, qty: int) -> dict:
    """qty units added to the deal (negative: taken out)"""
    return {"op": "deal_qty", "idempotency_key": key, "deal": deal, "qty": qty}


def code_of(result: dict) -> str:
    """'ok' for a 2xx, else the error code."""
    if result["status"] < 400:
        return "ok"
    return result["body"]["error"]["code"]
