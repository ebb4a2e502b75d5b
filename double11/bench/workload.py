"""Realistic command batches for the benchmark, generated with NumPy.

Zipf-hot SKUs (row order is popularity rank, see double11.catalog.generate),
1 to 3 lines per checkout, 90% mobile, buyers from 192 countries (mostly CN).
Batches are built directly in the compact wire form, as a gateway would send.
"""

from __future__ import annotations

import numpy as np

from double11 import geo
from double11.catalog.generate import popularity_weights
from double11.engine.batch import Channel, CommandBatch, Op

_COUNTRY_CODES = np.array([geo.encode(c) for c in geo.ALPHA2[:249]], dtype=np.uint16)


class Workload:
    def __init__(self, sku_ids: np.ndarray, seed: int = 11, buyers: int = 50_000_000, key_space: int = 0):
        self.rng = np.random.default_rng(seed)
        self.sku_ids = sku_ids.astype(np.int64)
        # a pool of Zipf draws, made once: a batch then costs one gather, not a
        # binary search per line over a million-entry CDF
        cdf = np.cumsum(popularity_weights(len(sku_ids)))
        pool = np.searchsorted(cdf, self.rng.random(1 << 22) * cdf[-1])
        self.sku_pool = self.sku_ids[np.minimum(pool, len(sku_ids) - 1)]
        self.buyers = buyers
        cn = geo.encode("CN")
        countries = np.array(sorted(set(_COUNTRY_CODES.tolist()) - {cn}), dtype=np.uint16)[:191]
        self.countries = np.r_[np.uint16(cn), countries]
        weights = np.r_[0.85, np.full(len(countries), 0.15 / len(countries))]
        self.country_cdf = np.cumsum(weights)
        # idempotency keys: unique per generator (seeded high bits keep several clients apart)
        self.next_key = (key_space << 40) + 1

    def drop_skus(self, sku_ids: np.ndarray) -> None:
        """Stops drawing these SKUs (sold out: the app shows them greyed out);
        the rest keep their relative popularity."""
        keep = ~np.isin(self.sku_pool, sku_ids)
        if keep.any():
            self.sku_pool = self.sku_pool[keep]

    def fresh_keys(self, n: int) -> np.ndarray:
        keys = np.arange(self.next_key, self.next_key + n, dtype=np.uint64)
        self.next_key += n
        return keys

    def checkouts(self, n: int) -> CommandBatch:
        rng = self.rng
        lines = rng.choice(np.array([1, 2, 3], dtype=np.uint8), size=n, p=[0.6, 0.3, 0.1])
        total = int(lines.sum())
        skus = self.sku_pool[rng.integers(0, len(self.sku_pool), size=total)]
        return CommandBatch(
            op=np.full(n, Op.checkout, dtype=np.uint8),
            invalid=np.zeros(n, dtype=np.uint8),
            channel=np.where(rng.random(n) < 0.9, Channel.mobile, Channel.pc).astype(np.uint8),
            lines=lines,
            country=self.countries[np.searchsorted(self.country_cdf, rng.random(n) * self.country_cdf[-1])],
            key=self.fresh_keys(n),
            target=rng.integers(1, self.buyers, size=n, dtype=np.int64),
            amount=np.zeros(n, dtype=np.int64),
            sku=skus,
            qty=rng.choice(np.array([1, 1, 1, 2, 3], dtype=np.int32), size=total),
        )

    def pays(self, checkout_ids: np.ndarray, amounts: np.ndarray) -> CommandBatch:
        n = len(checkout_ids)
        return CommandBatch(
            op=np.full(n, Op.pay, dtype=np.uint8),
            invalid=np.zeros(n, dtype=np.uint8),
            channel=np.zeros(n, dtype=np.uint8),
            lines=np.zeros(n, dtype=np.uint8),
            country=np.zeros(n, dtype=np.uint16),
            key=self.fresh_keys(n),
            target=checkout_ids.astype(np.int64),
            amount=amounts.astype(np.int64),
            sku=np.zeros(0, dtype=np.int64),
            qty=np.zeros(0, dtype=np.int32),
        )
