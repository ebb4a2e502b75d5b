"""Who buys, from where, on what, and what becomes of each checkout: pure functions
drawing from a seeded numpy Generator, so a seed gives the same day every time."""

from __future__ import annotations

import numpy as np

from double11 import geo, limits
from double11.simulator.years import YearProfile

# Share of checkouts by buyer's country or region.  Mainland China dominates; Hong
# Kong, Taiwan and Macau, the overseas Chinese and AliExpress markets follow; every
# other reachable place shares the rest.
COUNTRY_WEIGHTS: dict[str, float] = {
    "CN": 0.950, "HK": 0.0100, "TW": 0.0070, "MO": 0.0020, "US": 0.0040,
    "SG": 0.0020, "MY": 0.0020, "AU": 0.0020, "CA": 0.0015, "JP": 0.0012,
    "KR": 0.0012, "GB": 0.0010, "RU": 0.0015, "DE": 0.0006, "FR": 0.0006,
    "TH": 0.0008, "NZ": 0.0005, "ES": 0.0005, "BR": 0.0005, "IT": 0.0004,
}
# Uninhabited places and the smallest territories: buyers do not come from there,
# which leaves the ~196 countries and regions that a festival like 2017's reaches.
UNREACHED = frozenset(
    "AQ BV HM TF UM GS IO PN NF CX CC TK NU WF SJ AX BL MF PM SH FK MS KP EH VA TV NR BQ "  # noqa: SIM905
    "SX YT AI VG KY TC BM GI MC SM LI AD IM JE GG FO GL CK MH PW FM KI AS GU MP VI".split()
)
MIN_BUYERS_PER_COUNTRY = 4  # reach is not a figure that scales: every place keeps a few buyers

CHECKOUTS_PER_BUYER = 1.6
NEW_BUYER_SHARE = 0.3  # of the day's buyers, never bought before

# What becomes of an accepted checkout.  The paid share is the year's
# payments/orders peak ratio; unpaid ones are mostly abandoned (they expire).
PAY, CANCEL, ABANDON = 0, 1, 2
CANCEL_SHARE = 0.06
PAY_DELAY_MEDIAN_S, PAY_DELAY_SIGMA, PAY_DELAY_MAX_S = 20.0, 0.8, 600.0
CANCEL_DELAY_MEDIAN_S, CANCEL_DELAY_MAX_S = 90.0, 800.0
# After payment, per order: refunded, or confirmed (which settles the merchant).
REFUND_SHARE = 0.03
CONFIRM_SHARE = 0.5
REFUND_DELAY_S = (600, 3 * 3600)
CONFIRM_DELAY_S = (3600, 10 * 3600)
MAX_UNITS = limits.checkout_lines_max
MAX_PRICE_TILT = 2.0


def reachable_countries() -> tuple[str, ...]:
    return tuple(c for c in geo.ALPHA2 if c not in UNREACHED)


def country_weights() -> tuple[tuple[str, ...], np.ndarray]:
    codes = reachable_countries()
    rest = [c for c in codes if c not in COUNTRY_WEIGHTS]
    tail = (1.0 - sum(COUNTRY_WEIGHTS.values())) / len(rest)
    weights = np.array([COUNTRY_WEIGHTS.get(c, tail) for c in codes])
    return codes, weights / weights.sum()


def allocate(n: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Counts per category summing to n, proportional to weights (largest remainder),
    each at least `minimum` where n allows (taken from the largest category)."""
    exact = n * weights
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    minimum = min(minimum, n // (2 * len(weights)))
    if minimum:
        lift = np.maximum(minimum - counts, 0)
        counts += lift
        counts[np.argmax(counts)] -= int(lift.sum())
    return counts


def buyer_countries(n_buyers: int, rng: np.random.Generator) -> np.ndarray:
    """Each buyer's country as an index into reachable_countries()."""
    _, weights = country_weights()
    counts = allocate(n_buyers, weights, MIN_BUYERS_PER_COUNTRY)
    return rng.permutation(np.repeat(np.arange(len(weights)), counts))


def buyer_ids(n_buyers: int, returning_pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ids, is_new).  Returning buyers come from the catalog's list of past buyers;
    new ones get ids above every past buyer's."""
    n_returning = min(int(round(n_buyers * (1 - NEW_BUYER_SHARE))), len(returning_pool))
    returning = rng.choice(returning_pool, size=n_returning, replace=False) if n_returning else np.zeros(0, np.int64)
    first_new = int(returning_pool.max()) + 1 if len(returning_pool) else 1
    new = np.arange(first_new, first_new + n_buyers - n_returning, dtype=np.int64)
    ids = np.concatenate([returning.astype(np.int64), new])
    is_new = np.concatenate([np.zeros(n_returning, bool), np.ones(len(new), bool)])
    order = rng.permutation(n_buyers)
    return ids[order], is_new[order]


def checkout_buyers(n_checkouts: int, n_buyers: int, rng: np.random.Generator) -> np.ndarray:
    """Buyer index of each checkout: every buyer checks out at least once."""
    first = rng.permutation(n_buyers)[:n_checkouts]
    more = rng.integers(0, n_buyers, size=max(n_checkouts - n_buyers, 0))
    return rng.permutation(np.concatenate([first, more]))


def mobile_flags(at_ms: np.ndarray, profile: YearProfile, rng: np.random.Generator) -> np.ndarray:
    """Mobile or not per checkout.  The first hour is more mobile than the day (93% vs
    90% in 2017); the other hours take the rest so the day's share comes out right."""
    first = profile.first_hour_share
    later = (profile.mobile_share - first * profile.mobile_share_first_hour) / (1 - first)
    p = np.where(at_ms < 3_600_000, profile.mobile_share_first_hour, later)
    return rng.random(len(at_ms)) < p


def shopping_weights(profile: YearProfile, prices_fen: np.ndarray, popularity: np.ndarray,
                     target_fen: float | None = None) -> tuple[np.ndarray, float]:
    """(chance of each SKU row per unit bought, mean units per checkout), fitted so the
    mean checkout is worth the year's mean payment (GMV / payments), or `target_fen`
    at list prices: then both the GMV and the payment counts land near the year's.
    Where the catalog's popular items are dearer than that, festival buyers lean to
    the cheaper ones (popularity times price ** -tilt); where cheaper, they buy more
    units per checkout."""
    target = profile.mean_payment_fen if target_fen is None else target_fen
    prices = prices_fen.astype(np.float64)

    def tilted(tilt: float) -> np.ndarray:
        w = popularity * prices ** -tilt
        return w / w.sum()

    def mean_price(tilt: float) -> float:
        return float(np.dot(prices, tilted(tilt)))

    tilt = 0.0
    if mean_price(0.0) > target:
        lo, hi = 0.0, MAX_PRICE_TILT
        for _ in range(50):  # mean price falls as the tilt grows
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mean_price(mid) > target else (lo, mid)
        tilt = hi
    weights = tilted(tilt)
    return weights, float(np.clip(target / np.dot(prices, weights), 1.0, 4.0))


def baskets(n: int, weights: np.ndarray, mean_units: float, rng: np.random.Generator):
    """Lines of n checkouts as (offsets, sku_rows, qty): units drawn by popularity,
    the same SKU twice in one checkout becomes one line of qty 2."""
    units = np.minimum(1 + rng.poisson(mean_units - 1.0, size=n), MAX_UNITS)
    owner = np.repeat(np.arange(n, dtype=np.int64), units)
    rows = draw_rows(weights, len(owner), rng)
    key = owner * len(weights) + rows
    uniq, qty = np.unique(key, return_counts=True)  # sorted by checkout, then row
    line_owner, line_rows = uniq // len(weights), uniq % len(weights)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(line_owner, minlength=n), out=offsets[1:])
    return offsets, line_rows.astype(np.int64), qty.astype(np.int64)


def draw_rows(weights: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(weights) - 1)


def unpaid_fates(n: int, profile: YearProfile, rng: np.random.Generator) -> np.ndarray:
    """CANCEL or ABANDON for each of n checkouts that will not be paid."""
    cancel_p = CANCEL_SHARE / (1.0 - profile.conversion)
    return np.where(rng.random(n) < cancel_p, CANCEL, ABANDON).astype(np.int8)


def pay_delays_ms(n: int, rng: np.random.Generator) -> np.ndarray:
    """Think time between checkout and payment (lognormal, capped well inside the timeout)."""
    s = np.minimum(PAY_DELAY_MEDIAN_S * np.exp(PAY_DELAY_SIGMA * rng.standard_normal(n)), PAY_DELAY_MAX_S)
    return (s * 1000).astype(np.int64)


def cancel_delays_ms(n: int, rng: np.random.Generator) -> np.ndarray:
    s = np.minimum(CANCEL_DELAY_MEDIAN_S * np.exp(rng.standard_normal(n)), CANCEL_DELAY_MAX_S)
    return (s * 1000).astype(np.int64)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, stable hash for per-order decisions made late."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def order_fate(seed: int, checkout_index: int, order_index: int) -> tuple[str | None, int]:
    """('refund' | 'confirm' | None, delay_ms after payment) of one order of a paid
    checkout; decided by hashing, since orders exist only once the server made them."""
    h = _mix64((seed << 40) ^ (checkout_index << 8) ^ order_index)
    u = (h >> 11) / float(1 << 53)
    v = (h & 0x7FF) / 2048.0
    if u < REFUND_SHARE:
        lo, hi = REFUND_DELAY_S
        return "refund", int((lo + v * (hi - lo)) * 1000)
    if u < REFUND_SHARE + CONFIRM_SHARE:
        lo, hi = CONFIRM_DELAY_S
        return "confirm", int((lo + v * (hi - lo)) * 1000)
    return None, 0


# 2017's merchant clubs (6 above RMB 1 bn, 17 above 500 M, 167 above 100 M of RMB 168.2 bn)
# fit a Zipf law over merchants ranked by GMV, share(r) = C * r ** -s: (17/6)^s = 2 and
# (167/6)^s = 10 both give s = 0.68, and share(6) = 0.6% gives C = 0.0202.
MERCHANT_GMV_EXPONENT = 0.68
MERCHANT_GMV_TOP_SHARE = 0.0202


def cap_merchants(weights: np.ndarray, prices_fen: np.ndarray, merchant: np.ndarray,
                  exponent: float = MERCHANT_GMV_EXPONENT, top: float = MERCHANT_GMV_TOP_SHARE) -> np.ndarray:
    """Rescales the chance of each SKU so that no merchant's expected GMV share
    exceeds 2017's law for its rank; what the biggest lose goes to all the
    others in proportion to what they sell (water-filling), so within and
    across the other merchants hot items stay as hot as the catalog makes them.
    A generated catalog gives its flagship stores far more of the day than
    2017's biggest merchants had (one store took a fifth of the GMV)."""
    _, owner = np.unique(merchant, return_inverse=True)
    gmv = np.bincount(owner, weights=weights * prices_fen.astype(np.float64))
    if gmv.sum() <= 0:
        return weights
    order = np.argsort(-gmv, kind="stable")
    current = gmv[order] / gmv.sum()
    cap = top * np.arange(1, len(current) + 1, dtype=np.float64) ** -exponent
    lo, hi = 1.0, 1.0
    while np.minimum(current * hi, cap).sum() < 1.0 and hi < 1e12:
        hi *= 2
    if np.minimum(current * hi, cap).sum() < 1.0:
        return weights  # too few merchants to hold the day under the caps: leave as is
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(current * mid, cap).sum() < 1.0 else (lo, mid)
    share = np.empty(len(gmv))
    share[order] = np.minimum(current * hi, cap)
    factor = share / np.where(gmv > 0, gmv, 1.0)
    capped = weights * factor[owner]
    return capped / capped.sum()
