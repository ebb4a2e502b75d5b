"""Realistic command batches for the benchmark, generated with NumPy.

Zipf-hot SKUs (row order is popularity rank, see double11.catalog.generate),
1 to 3 lines per checkout, 90% mobile, buyers from 192 countries (mostly CN).
Batches are built directly in the compact wire form, as a gateway would send.
The promotions mix (bench/promotions.py) adds grants, and checkouts spending
coupons (their ids in the batch's args).
"""

from __future__ import annotations

import numpy as np

from double11 import geo
from double11.catalog.generate import popularity_weights
from double11.engine.batch import Channel, CommandBatch, Op
from double11.promotions.spec import GRANT
from double11.spec import string_words

_COUNTRY_CODES = np.array([geo.encode(c) for c in geo.ALPHA2[:249]], dtype=np.uint16)
# a grant's args, where its declaration lays them out
_GRANT_ARGS = sum(f.arg_words for f in GRANT.arg_fields)
_GRANT_BUYER, _GRANT_SOURCE = GRANT.arg_at("buyer"), GRANT.arg_at("source")
_SOURCE_WORDS = GRANT.field("source").arg_words


class Workload:
    def __init__(self, sku_ids: np.ndarray, seed: int = 11, buyers: int = 50_000_000, key_space: int = 0):
        self.rng = np.random.default_rng(seed)
        self.sku_ids = sku_ids.astype(np.int64)
        # a pool of Zipf draws, made once: a batch then costs one gather, not a
        # binary search per line over a million-entry CDF
        cdf = np.cumsum(popularity_weights(len(sku_ids)))
        self.row_pool = np.minimum(np.searchsorted(cdf, self.rng.random(1 << 22) * cdf[-1]), len(sku_ids) - 1)
        self.dropped = np.zeros(len(sku_ids), dtype=bool)  # by row: sold out, no longer drawn
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
        the rest keep their relative popularity.  Marked, not taken out of
        the pool: filtering the pool's 4 million draws took about 70 ms, a
        stall of the load's event loop (every client's) at each sell-out."""
        dropped = self.dropped | np.isin(self.sku_ids, sku_ids)
        if not dropped.all():  # something is left to draw
            self.dropped = dropped

    def draw_skus(self, n: int) -> np.ndarray:
        """n SKU ids from the pool, none dropped (a dropped draw is drawn again)."""
        rows = self.row_pool[self.rng.integers(0, len(self.row_pool), size=n)]
        again = np.flatnonzero(self.dropped[rows])
        while len(again):
            rows[again] = self.row_pool[self.rng.integers(0, len(self.row_pool), size=len(again))]
            again = again[self.dropped[rows[again]]]
        return self.sku_ids[rows]

    def fresh_keys(self, n: int) -> np.ndarray:
        keys = np.arange(self.next_key, self.next_key + n, dtype=np.uint64)
        self.next_key += n
        return keys

    def checkouts(self, n: int) -> CommandBatch:
        rng = self.rng
        lines = rng.choice(np.array([1, 2, 3], dtype=np.uint8), size=n, p=[0.6, 0.3, 0.1])
        total = int(lines.sum())
        skus = self.draw_skus(total)
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
        return self._without_lines(int(Op.pay), checkout_ids, amounts)

    def _without_lines(self, op: int, target: np.ndarray, amount: np.ndarray,
                       args_each: int = 0, arg: np.ndarray | None = None) -> CommandBatch:
        """Commands of one op with no lines (a payment, a grant), fresh keys."""
        n = len(target)
        return CommandBatch(
            op=np.full(n, op, dtype=np.uint8),
            invalid=np.zeros(n, dtype=np.uint8),
            channel=np.zeros(n, dtype=np.uint8),
            lines=np.zeros(n, dtype=np.uint8),
            country=np.zeros(n, dtype=np.uint16),
            key=self.fresh_keys(n),
            target=target.astype(np.int64),
            amount=amount.astype(np.int64),
            sku=np.zeros(0, dtype=np.int64),
            qty=np.zeros(0, dtype=np.int32),
            args=np.full(n, args_each, dtype=np.uint8),
            arg=np.zeros(0, dtype=np.int64) if arg is None else arg,
        )

    def grants(self, templates: np.ndarray, buyers: np.ndarray, source: str) -> CommandBatch:
        """A coupon of each template for the buyer beside it, won at `source`."""
        n = len(templates)
        arg = np.empty((n, _GRANT_ARGS), dtype=np.int64)
        arg[:, _GRANT_BUYER] = buyers
        arg[:, _GRANT_SOURCE:_GRANT_SOURCE + _SOURCE_WORDS] = string_words(source, _SOURCE_WORDS)
        return self._without_lines(GRANT.number, templates, np.zeros(n, dtype=np.int64), _GRANT_ARGS, arg.ravel())


def spending(checkouts: CommandBatch, coupons: np.ndarray) -> CommandBatch:
    """The checkouts, each spending the coupons of its row of `coupons`
    (n x k ids, 0: none), in that order, as its args."""
    held = coupons > 0
    c = checkouts
    return CommandBatch(op=c.op, invalid=c.invalid, channel=c.channel, lines=c.lines, country=c.country, key=c.key,
                        target=c.target, amount=c.amount, sku=c.sku, qty=c.qty,
                        args=held.sum(axis=1).astype(np.uint8), arg=coupons[held].astype(np.int64))
