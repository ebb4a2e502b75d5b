"""Pages of a catalog's SKUs in id order, all of them or one merchant's
(GET /v1/skus).  Catalog rows are in popularity order, not id order, so the
listing keeps the rows sorted by id once (and by merchant then id for the
merchant filter): a page is then two binary searches and a slice, whatever
the catalog's size.  The catalog never changes after a festival starts."""

from __future__ import annotations

import numpy as np

from double11.catalog.model import Catalog


class SkuListing:
    __slots__ = ("_by_id", "_ids", "_by_merchant", "_merchants", "_merchant_ids")

    def __init__(self, catalog: Catalog) -> None:
        self._by_id = np.argsort(catalog.sku_id, kind="stable")
        self._ids = catalog.sku_id[self._by_id]
        # stable: within a merchant, rows stay in id order
        within = np.argsort(catalog.sku_merchant[self._by_id], kind="stable")
        self._by_merchant = self._by_id[within]
        self._merchants = catalog.sku_merchant[self._by_merchant]
        self._merchant_ids = catalog.sku_id[self._by_merchant]

    def page(self, after: int, limit: int, merchant: int | None = None) -> tuple[np.ndarray, int | None]:
        """The catalog rows of the first `limit` SKUs with an id over `after`
        (of `merchant` only, if given), in id order, and the id to pass as
        the next page's `after` (None when no SKU is left)."""
        if merchant is None:
            rows, ids = self._by_id, self._ids
        else:
            lo = int(np.searchsorted(self._merchants, merchant, side="left"))
            hi = int(np.searchsorted(self._merchants, merchant, side="right"))
            rows, ids = self._by_merchant[lo:hi], self._merchant_ids[lo:hi]
        start = int(np.searchsorted(ids, after, side="right"))
        stop = min(start + limit, len(ids))
        return rows[start:stop], (int(ids[stop - 1]) if stop < len(ids) else None)
