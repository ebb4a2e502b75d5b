"""The catalog as columns: one NumPy array per field, one row per entity.

Ids are 64-bit integers chosen by the platform's users; names live here and
nowhere else.  The engine only ever sees row numbers (dense indexes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MARKETPLACES: tuple[str, ...] = ("tmall", "taobao", "juhuasuan", "aliexpress", "tmall_global")


@dataclass
class Catalog:
    # merchants: id, name, marketplace (index into MARKETPLACES), home country (geo code)
    merchant_id: np.ndarray  # int64
    merchant_name: list[str]
    merchant_marketplace: np.ndarray  # uint8
    merchant_country: np.ndarray  # uint16, double11.geo encoding
    # brands: id, name, international?, origin country (geo code)
    brand_id: np.ndarray  # int64
    brand_name: list[str]
    brand_international: np.ndarray  # bool
    brand_origin: np.ndarray  # uint16
    # skus: id, merchant id, brand id, price, stock
    sku_id: np.ndarray  # int64
    sku_merchant: np.ndarray  # int64 (a merchant id)
    sku_brand: np.ndarray  # int64 (a brand id)
    sku_price_fen: np.ndarray  # int64
    sku_stock: np.ndarray  # int64
    # buyers who bought before this festival (optional): they are not "new buyers"
    returning_buyers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # product names, by SKU row (optional: a catalog without them names each "SKU <id>")
    sku_name: list[str] | None = None

    @property
    def merchants(self) -> int:
        return len(self.merchant_id)

    @property
    def brands(self) -> int:
        return len(self.brand_id)

    @property
    def skus(self) -> int:
        return len(self.sku_id)

    def sku_name_at(self, row: int) -> str:
        """The product name of the SKU at `row`.  (A catalog pickled before
        SKUs had names has no `sku_name` at all: the same derived names.)"""
        names = getattr(self, "sku_name", None)
        return names[row] if names is not None else f"SKU {int(self.sku_id[row])}"
