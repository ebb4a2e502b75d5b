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


def co(key: str, lines, buyer: int = 7, country: str = "CN", channel: str = "mobile") -> dict:
    """checkout; lines as [(sku, qty), ...]"""
    return {
        "op": "checkout",
        "idempotency_key": key,
        "buyer": buyer,
        "country": country,
        "channel": channel,
        "lines": [{"sku": s, "qty": q} for s, q in lines],
    }


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


def code_of(result: dict) -> str:
    """'ok' for a 2xx, else the error code."""
    if result["status"] < 400:
        return "ok"
    return result["body"]["error"]["code"]
