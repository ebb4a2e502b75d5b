"""The day's plan: every checkout the simulated buyers will attempt, when, by whom,
of what, and what they will do next.  Built in one go from (profile, scale, seed,
catalog) by pure functions; the HTTP client only replays it.

Scale: the plan carries `scale` of the real festival's checkouts, at real prices,
so GMV, counts and per-second rates times 1/scale estimate the real day's, while
shares (mobile, growth, first hour) and reach (countries) are compared as they are.
Merchant clubs are compared at thresholds times scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from double11.catalog.generate import popularity_weights as catalog_popularity
from double11.catalog.model import Catalog
from double11.simulator import curve, mixes, promotions
from double11.simulator.years import CLUB_THRESHOLDS_FEN, YearProfile


def popularity_weights(n: int) -> np.ndarray:
    """The catalog's own popularity law (SKU rows are in rank order)."""
    w = np.asarray(catalog_popularity(n), dtype=np.float64)
    return w / w.sum() if n else w


@dataclass
class CatalogView:
    """What the simulator needs from the catalog: SKUs in popularity order."""

    sku_id: np.ndarray
    price_fen: np.ndarray
    merchant: np.ndarray  # merchant id per SKU
    stock: np.ndarray
    returning_buyers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, catalog: Catalog) -> CatalogView:
        return cls(
            sku_id=np.asarray(catalog.sku_id, np.int64),
            price_fen=np.asarray(catalog.sku_price_fen, np.int64),
            merchant=np.asarray(catalog.sku_merchant, np.int64),
            stock=np.asarray(catalog.sku_stock, np.int64),
            returning_buyers=np.asarray(catalog.returning_buyers, np.int64),
        )

    def __post_init__(self) -> None:
        self.weights = popularity_weights(len(self.sku_id))  # row order is popularity rank


@dataclass
class Plan:
    profile: YearProfile
    scale: float
    seed: int
    at_ms: np.ndarray  # checkout instant, ms after the festival's midnight, sorted
    buyer: np.ndarray  # buyer id
    buyer_new: np.ndarray  # first purchase ever?
    country: np.ndarray  # index into countries
    countries: tuple[str, ...]
    mobile: np.ndarray
    fate: np.ndarray  # mixes.PAY / CANCEL / ABANDON
    next_at_ms: np.ndarray  # when the pay or cancel is due (-1 for abandoned)
    line_offsets: np.ndarray
    line_rows: np.ndarray  # SKU rows of the catalog view
    line_qty: np.ndarray
    value_fen: np.ndarray  # at catalog prices
    weights: np.ndarray  # chance of each SKU row per unit bought (substitutes come from it too)
    promotions: promotions.Promotions | None = None  # 2017's promotions; None: a day at list prices

    def __len__(self) -> int:
        return len(self.at_ms)


def paid_checkouts_for(profile: YearProfile, scale: float, mean_value_fen: float) -> int:
    """Paid checkouts that carry the year's GMV at this scale.  Equals the year's
    payments times scale when the catalog's prices allow the year's mean payment."""
    return int(round(profile.gmv_fen * scale / mean_value_fen))


def build(profile: YearProfile, scale: float, seed: int, view: CatalogView, with_promotions: bool = True) -> Plan:
    """The day's plan.  With 2017's promotions (promotions.py) the GMV is what the
    buyers pay, the list value less the discounts, so the baskets are fitted twice:
    a first draw gives the share of the list value the plan's promotions take off,
    and the day is drawn again with its baskets worth that much more at list prices
    (the same seed: the same buyers and moments, a little more in the baskets)."""
    if not 0 < scale <= 1:
        raise ValueError("scale must be in (0, 1]")
    plan = _draw(profile, scale, seed, view, profile.mean_payment_fen)
    if not with_promotions or len(plan) == 0:
        return plan
    plan.promotions = _promotions(plan, view)
    share = discount_share(plan, view)
    if 0 < share < 1:
        plan = _draw(profile, scale, seed, view, profile.mean_payment_fen / (1 - share))
        plan.promotions = _promotions(plan, view)
    return plan


def _promotions(plan: Plan, view: CatalogView) -> promotions.Promotions:
    # from a generator of their own, so the traffic is the same day with or without them
    return promotions.build(plan.at_ms, plan.buyer, plan.fate, plan.line_offsets, plan.line_rows, plan.line_qty,
                            view.price_fen, view.merchant, view.stock, np.random.default_rng([plan.seed, 22]))


def planned_discounts(plan: Plan, view: CatalogView) -> tuple[dict[str, int], np.ndarray]:
    """The paid checkouts' discounts, by kind and per checkout, if everything goes as
    planned (promotions.expected_discounts; zeros without promotions)."""
    if plan.promotions is None:
        return dict.fromkeys(promotions.DISCOUNT_KINDS, 0), np.zeros(len(plan), np.int64)
    return promotions.expected_discounts(plan.at_ms, plan.buyer, plan.fate, plan.line_offsets, plan.line_rows,
                                         plan.line_qty, view.price_fen, view.merchant, plan.promotions)


def discount_share(plan: Plan, view: CatalogView) -> float:
    """The share of the paid checkouts' list value that the planned discounts take off."""
    listed = int(plan.value_fen[plan.fate == mixes.PAY].sum())
    return sum(planned_discounts(plan, view)[0].values()) / listed if listed else 0.0


def _draw(profile: YearProfile, scale: float, seed: int, view: CatalogView, mean_list_fen: float) -> Plan:
    """The day's traffic, its mean checkout worth `mean_list_fen` at list prices."""
    rng = np.random.default_rng(seed)
    weights, _ = mixes.shopping_weights(profile, view.price_fen, view.weights, mean_list_fen)
    weights = mixes.cap_merchants(weights, view.price_fen, view.merchant)
    # units per checkout refitted so the mean checkout is still the target
    mean_units = float(np.clip(mean_list_fen / np.dot(view.price_fen, weights), 1.0, 4.0))
    # paid checkouts: the year's GMV over what each will pay (its list value less the discounts)
    paid_value = mean_units * float(np.dot(view.price_fen, weights)) * profile.mean_payment_fen / mean_list_fen
    n_paid = paid_checkouts_for(profile, scale, paid_value)
    n_unpaid = int(round(n_paid * (1 - profile.conversion) / profile.conversion))
    n = n_paid + n_unpaid
    day = curve.payment_curve(profile)
    # Payments follow the curve exactly (sampled apart from the unpaid ones, so each
    # second gets its expected count); a paid checkout was made its think-time
    # earlier, except right after midnight, where buyers pay faster.
    pay_at = curve.sample_times_ms(day, n_paid, rng)
    think = mixes.pay_delays_ms(n_paid, rng)
    paid_at = pay_at - np.minimum(think, pay_at // 2)
    unpaid_at = curve.sample_times_ms(day, n_unpaid, rng)
    unpaid_fate = mixes.unpaid_fates(n_unpaid, profile, rng)
    cancel_at = np.where(unpaid_fate == mixes.CANCEL, unpaid_at + mixes.cancel_delays_ms(n_unpaid, rng), -1)
    at = np.concatenate([paid_at, unpaid_at])
    fate = np.concatenate([np.full(n_paid, mixes.PAY, np.int8), unpaid_fate])
    next_at = np.concatenate([pay_at, cancel_at])
    order = np.argsort(at, kind="stable")
    at, fate, next_at = at[order], fate[order], next_at[order]

    n_buyers = max(1, int(round(n / mixes.CHECKOUTS_PER_BUYER)))
    ids, is_new = mixes.buyer_ids(n_buyers, view.returning_buyers, rng)
    home = mixes.buyer_countries(n_buyers, rng)
    who = mixes.checkout_buyers(n, n_buyers, rng)
    offsets, rows, qty = mixes.baskets(n, weights, mean_units, rng)
    line_value = view.price_fen[rows] * qty
    value = np.add.reduceat(line_value, offsets[:-1]) if n else np.zeros(0, np.int64)
    return Plan(
        profile=profile, scale=scale, seed=seed, at_ms=at,
        buyer=ids[who], buyer_new=is_new[who], country=home[who],
        countries=mixes.reachable_countries(),
        mobile=mixes.mobile_flags(at, profile, rng), fate=fate, next_at_ms=next_at,
        line_offsets=offsets, line_rows=rows, line_qty=qty, value_fen=value, weights=weights,
    )


def expected_figures(plan: Plan, view: CatalogView) -> dict:
    """The day's figures if every step of the plan is accepted as planned (stock
    permitting), raw and with the scale undone: what the tests and the report compare.
    GMV is what the buyers pay: each checkout's list value less the discounts the
    plan expects it to get (planned_discounts); a merchant's share of a checkout's
    discounts is taken pro rata to its lines' list value (the server allocates each
    kind to the lines it applies to, so a merchant's own figure may differ a little)."""
    paid = plan.fate == mixes.PAY
    by_kind, off = planned_discounts(plan, view)
    payable = plan.value_fen - off
    pay_s = plan.next_at_ms[paid] // 1000
    gmv = int(payable[paid].sum())
    by_hour = np.bincount(pay_s // 3600, weights=payable[paid], minlength=24)
    pay_per_s = np.bincount(pay_s, minlength=curve.DAY_S)
    orders_per_s = np.bincount(plan.at_ms // 1000, minlength=curve.DAY_S)
    mobile_gmv = int(payable[paid & plan.mobile].sum())
    # merchant GMV: each paid line to its SKU's merchant, less its share of its checkout's discounts
    line_owner = np.repeat(np.arange(len(plan)), np.diff(plan.line_offsets))
    line_paid = paid[line_owner]
    line_value = view.price_fen[plan.line_rows] * plan.line_qty
    line_payable = line_value * (payable / np.maximum(plan.value_fen, 1))[line_owner]
    merchant_gmv = _sum_by(view.merchant[plan.line_rows[line_paid]], line_payable[line_paid])
    clubs = [int((merchant_gmv >= t * plan.scale).sum()) for t in CLUB_THRESHOLDS_FEN]
    undo = 1.0 / plan.scale
    return {
        "checkouts": len(plan),
        "payments": int(paid.sum()),
        "gmv_fen": gmv,
        "gmv_fen_full_scale": gmv * undo,
        "list_value_fen": int(plan.value_fen[paid].sum()),
        "discounts_fen": by_kind,
        "first_hour_share": float(by_hour[0] / gmv) if gmv else 0.0,
        "gmv_by_hour_fen": [int(x) for x in by_hour],
        "mobile_share": mobile_gmv / gmv if gmv else 0.0,
        "countries": len(np.unique(plan.country[paid])),
        "buyers": len(np.unique(plan.buyer[paid])),
        "new_buyers": len(np.unique(plan.buyer[paid & plan.buyer_new])),
        "peak_payments_per_s": int(pay_per_s.max()),
        "peak_payments_at_s": int(pay_per_s.argmax()),
        "peak_payments_per_s_full_scale": float(pay_per_s.max() * undo),
        "peak_orders_per_s": int(orders_per_s.max()),
        "peak_orders_per_s_full_scale": float(orders_per_s.max() * undo),
        "merchant_clubs_scaled_thresholds": clubs,
    }


def _sum_by(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    return np.bincount(inverse, weights=values, minlength=len(uniq))
