"""The live festival figures, kept exact as each batch is applied.

Everything a big screen shows is a running total updated once per batch with
a few vectorized adds; reading the figures costs O(merchants) at most.
"""

from __future__ import annotations

import numpy as np

from double11 import geo, limits
from double11.catalog.model import MARKETPLACES, Catalog
from double11.config import FestivalConfig
from double11.engine import transitions as tx

HOUR_MS = 3_600_000
UTC8_MS = 8 * HOUR_MS
CLUB_THRESHOLDS_FEN = (100_000_000 * 100, 500_000_000 * 100, 1_000_000_000 * 100)


class PerSecond:
    """Counts per second of festival time, with the peak and when it happened."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.peak = 0
        self.peak_second: int | None = None

    def add(self, now_ms: int, count: int) -> None:
        if count <= 0:
            return
        second = now_ms // 1000
        value = self.counts.get(second, 0) + count
        self.counts[second] = value
        if value > self.peak:
            self.peak, self.peak_second = value, second

    def last_full_second(self, now_ms: int) -> int:
        return self.counts.get(now_ms // 1000 - 1, 0)


class FestivalStats:
    def __init__(self, catalog: Catalog, config: FestivalConfig):
        self.config = config
        self.gmv_fen = 0
        self.mobile_gmv_fen = 0
        self.refunded_fen = 0
        self.settled_fen = 0
        self.checkouts = 0
        self.orders = 0
        self.payments = 0
        self.buyers = 0
        self.new_buyers = 0
        self.merchant_gmv = np.zeros(catalog.merchants, dtype=np.int64)
        self.brand_gmv = np.zeros(catalog.brands, dtype=np.int64)
        self.country_gmv = np.zeros(geo.COUNTRY_SLOTS, dtype=np.int64)
        self.gmv_by_hour = np.zeros(24, dtype=np.int64)
        self.checkouts_per_s = PerSecond()
        self.payments_per_s = PerSecond()

    def on_batch(self, now_ms: int, totals: np.ndarray) -> None:
        """Adds what a batch added (`totals`, rows as in engine.transitions);
        the per-merchant, brand and country figures were added in place."""
        checkouts, payments, gmv = int(totals[tx.T_CHECKOUTS]), int(totals[tx.T_PAYMENTS]), int(totals[tx.T_GMV])
        self.checkouts += checkouts
        self.orders += int(totals[tx.T_ORDERS])
        self.payments += payments
        self.gmv_fen += gmv
        self.mobile_gmv_fen += int(totals[tx.T_MOBILE_GMV])
        self.gmv_by_hour[((now_ms + UTC8_MS) // HOUR_MS) % 24] += gmv
        self.buyers += int(totals[tx.T_BUYERS])
        self.new_buyers += int(totals[tx.T_NEW_BUYERS])
        self.settled_fen += int(totals[tx.T_SETTLED])
        self.refunded_fen += int(totals[tx.T_REFUNDED])
        self.checkouts_per_s.add(now_ms, checkouts)
        self.payments_per_s.add(now_ms, payments)

    def view(self, catalog: Catalog, now_ms: int) -> dict:
        cfg = self.config
        prev = cfg.previous
        same_moment = _share_at(prev.hourly_permille, now_ms - cfg.festival_start_ms, prev.gmv_fen)
        return {
            "at": now_ms,
            "festival_start": cfg.festival_start_ms,
            "gmv_fen": self.gmv_fen,
            "gmv_usd_cents": self.gmv_fen * cfg.cny_per_usd_den // cfg.cny_per_usd_num,
            "cny_per_usd": _fraction_text(cfg.cny_per_usd_num, cfg.cny_per_usd_den),
            "checkouts": self.checkouts,
            "orders": self.orders,
            "payments": self.payments,
            "orders_per_s": self.checkouts_per_s.last_full_second(now_ms),
            "payments_per_s": self.payments_per_s.last_full_second(now_ms),
            "peak_orders_per_s": _peak(self.checkouts_per_s),
            "peak_payments_per_s": _peak(self.payments_per_s),
            "mobile_gmv_fen": self.mobile_gmv_fen,
            "mobile_share": self.mobile_gmv_fen / self.gmv_fen if self.gmv_fen else 0.0,
            "scale": cfg.scale,
            "merchant_clubs": [
                {"threshold_fen": t, "merchants": int(np.count_nonzero(self.merchant_gmv >= t))}
                for t in (t * cfg.scale_num // cfg.scale_den for t in CLUB_THRESHOLDS_FEN)
            ],
            "top_brands": [
                {"brand": int(catalog.brand_id[r]), "name": catalog.brand_name[r],
                 "international": bool(catalog.brand_international[r]), "gmv_fen": int(self.brand_gmv[r])}
                for r in _top(self.brand_gmv)
            ],
            "top_merchants": [
                {"merchant": int(catalog.merchant_id[r]), "name": catalog.merchant_name[r],
                 "marketplace": MARKETPLACES[catalog.merchant_marketplace[r]], "gmv_fen": int(self.merchant_gmv[r])}
                for r in _top(self.merchant_gmv)
            ],
            "countries": int(np.count_nonzero(self.country_gmv)),
            "top_countries": [
                {"country": geo.decode(int(r)), "gmv_fen": int(self.country_gmv[r])} for r in _top(self.country_gmv)
            ],
            "buyers": self.buyers,
            "new_buyers": self.new_buyers,
            "gmv_by_hour_fen": [int(v) for v in self.gmv_by_hour],
            "refunded_fen": self.refunded_fen,
            "settled_fen": self.settled_fen,
            "previous": {
                "year": prev.year,
                "gmv_fen": prev.gmv_fen,
                "gmv_same_moment_fen": same_moment,
                "growth": self.gmv_fen / prev.gmv_fen - 1 if prev.gmv_fen else 0.0,
                "growth_same_moment": self.gmv_fen / same_moment - 1 if same_moment else 0.0,
            },
        }


def _top(values: np.ndarray) -> np.ndarray:
    n = min(limits.stats_top_n, int(np.count_nonzero(values)))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.argpartition(-values, n - 1)[:n]
    return rows[np.lexsort((rows, -values[rows]))]


def _peak(per_second: PerSecond) -> dict:
    at = None if per_second.peak_second is None else per_second.peak_second * 1000
    return {"value": per_second.peak, "at": at}


def _share_at(hourly_permille: tuple[int, ...], elapsed_ms: int, total_fen: int) -> int:
    """The previous festival's GMV at the same moment of its day (integer fen)."""
    elapsed_ms = max(0, min(elapsed_ms, 24 * HOUR_MS))
    hour, into = divmod(elapsed_ms, HOUR_MS)
    permille_ms = sum(hourly_permille[:hour]) * HOUR_MS
    if hour < 24:
        permille_ms += hourly_permille[hour] * into
    return total_fen * permille_ms // (1000 * HOUR_MS)


def _fraction_text(num: int, den: int) -> str:
    whole, rest = divmod(num, den)
    if rest == 0:
        return str(whole)
    digits = len(str(den)) - 1 if den % 10 == 0 else 6
    return f"{num / den:.{digits}f}"
