"""The traffic model as pure functions: the day's curve, the mixes, the plan.
With the 2017 parameters and the scale undone, the day lands near 2017's figures."""

from __future__ import annotations

import numpy as np
import pytest

from double11.catalog.generate import generate_catalog
from double11.simulator import curve, mixes
from double11.simulator import plan as plans
from double11.simulator.years import YEARS, profile

Y2017 = profile(2017)
SMALL_SCALE = 1e-4  # ~190,000 checkouts: builds in a second, and the peak second stands out


@pytest.fixture(scope="module")
def view():
    return plans.CatalogView.of(generate_catalog(merchants=2000, skus=20000, seed=11, returning_buyers=200_000))


@pytest.fixture(scope="module")
def day(view):
    p = plans.build(Y2017, SMALL_SCALE, 7, view)
    return p, plans.expected_figures(p, view)


def test_the_curve_covers_the_day_once():
    c = curve.payment_curve(Y2017)
    assert len(c) == 86_400 and c.sum() == pytest.approx(1.0) and (c > 0).all()


@pytest.mark.parametrize("year", sorted(YEARS))
def test_each_hour_carries_its_published_share(year):
    c = curve.payment_curve(profile(year))
    hours = c.reshape(24, 3600).sum(axis=1) * 1000
    assert hours == pytest.approx(np.array(profile(year).hourly_permille, dtype=float), abs=1e-6)


def test_the_first_hour_carries_a_third_of_the_day():
    assert curve.payment_curve(Y2017)[:3600].sum() == pytest.approx(8.5 / 25.3, abs=0.002)


def test_the_payment_peak_is_256000_per_second_at_00_05_22():
    c = curve.payment_curve(Y2017)
    assert curve.peak_second(c) == 5 * 60 + 22
    assert c.max() * Y2017.payments == pytest.approx(256_000, rel=1e-6)
    # the peak second stands out from its neighbours, so it is still the peak at small scale
    assert c[322] > 1.02 * max(c[321], c[323])


def test_afternoon_and_evening_waves_and_a_last_hour_rush():
    hours = curve.payment_curve(Y2017).reshape(24, 3600)
    per_hour = hours.sum(axis=1)
    assert per_hour[10] > per_hour[6] and per_hour[10] > per_hour[15]  # late-morning / afternoon wave
    assert per_hour[21] > per_hour[17]  # evening wave
    assert hours[23, -60:].sum() > 1.5 * hours[23, :60].sum()  # the rush to midnight
    assert hours[1, 0] == pytest.approx(hours[0, -1], rel=0.05)  # no cliff at 01:00


def test_sampled_instants_follow_the_curve_second_by_second():
    c = curve.payment_curve(Y2017)
    n = 100_000
    ms = curve.sample_times_ms(c, n, np.random.default_rng(1))
    per_second = np.bincount(ms // 1000, minlength=86_400)
    assert per_second.sum() == n and (ms[1:] >= ms[:-1]).all()
    assert np.abs(per_second - n * c).max() <= 2  # stratified: no Poisson noise


def test_small_scale_day_lands_near_2017_once_the_scale_is_undone(day):
    _, f = day
    up = 1 / SMALL_SCALE
    assert f["gmv_fen"] * up == pytest.approx(Y2017.gmv_fen, rel=0.05)
    assert f["payments"] * up == pytest.approx(Y2017.payments, rel=0.05)
    assert f["first_hour_share"] == pytest.approx(1 / 3, abs=0.03)
    assert f["mobile_share"] == pytest.approx(0.90, abs=0.02)
    assert f["countries"] >= 192
    assert f["peak_payments_at_s"] == 322
    assert f["peak_payments_per_s"] * up == pytest.approx(256_000, rel=0.05)


def test_most_buyers_are_in_mainland_china_and_some_are_new(day):
    p, f = day
    cn = p.countries.index("CN")
    assert 0.9 < (p.country == cn).mean() < 0.97
    assert 0.2 < f["new_buyers"] / f["buyers"] < 0.4


def test_checkouts_are_paid_cancelled_or_abandoned_in_2017_proportions(day):
    p, _ = day
    assert (p.fate == mixes.PAY).mean() == pytest.approx(Y2017.conversion, abs=0.01)
    assert (p.fate == mixes.CANCEL).mean() == pytest.approx(mixes.CANCEL_SHARE, abs=0.01)
    paid = p.fate == mixes.PAY
    assert (p.next_at_ms[paid] > p.at_ms[paid]).all()
    assert (p.next_at_ms[p.fate == mixes.ABANDON] == -1).all()


def test_baskets_are_valid_checkouts(day, view):
    p, _ = day
    lines = np.diff(p.line_offsets)
    assert lines.min() >= 1 and lines.max() <= 16
    assert p.line_qty.min() >= 1 and p.line_qty.max() <= 999
    assert p.line_rows.max() < len(view.sku_id)
    # hot items first: the most popular tenth of the SKUs gets most of the units
    units = np.bincount(p.line_rows, weights=p.line_qty, minlength=len(view.sku_id))
    assert units[: len(units) // 10].sum() > 0.5 * units.sum()


def test_the_same_seed_gives_the_same_day_and_another_seed_another(view):
    a, b = plans.build(Y2017, 1e-6, 3, view), plans.build(Y2017, 1e-6, 3, view)
    c = plans.build(Y2017, 1e-6, 4, view)
    for field in ("at_ms", "buyer", "country", "mobile", "fate", "next_at_ms", "line_rows", "line_qty"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.line_rows, c.line_rows)


def test_2016_is_imitated_with_its_own_figures(view):
    y = profile(2016)
    p = plans.build(y, 1e-5, 1, view)
    f = plans.expected_figures(p, view)
    assert f["gmv_fen"] * 1e5 == pytest.approx(y.gmv_fen, rel=0.05)
    assert f["mobile_share"] == pytest.approx(0.82, abs=0.03)
    assert y.growth == pytest.approx(0.32, abs=0.01)


def test_allocation_keeps_every_reachable_country():
    codes, weights = mixes.country_weights()
    counts = mixes.allocate(10_000, weights, minimum=4)
    assert counts.sum() == 10_000 and counts.min() >= 4 and len(codes) >= 192


def test_order_fates_are_stable_and_in_proportion():
    fates = [mixes.order_fate(9, i, j) for i in range(4000) for j in range(2)]
    assert fates == [mixes.order_fate(9, i, j) for i in range(4000) for j in range(2)]
    kinds = [f for f, _ in fates]
    assert kinds.count("refund") / len(kinds) == pytest.approx(mixes.REFUND_SHARE, abs=0.01)
    assert kinds.count("confirm") / len(kinds) == pytest.approx(mixes.CONFIRM_SHARE, abs=0.03)


def test_scale_must_be_a_share(view):
    with pytest.raises(ValueError):
        plans.build(Y2017, 0, 1, view)


def test_no_merchant_takes_more_of_the_day_than_2017s_law_allows():
    rng = np.random.default_rng(5)
    merchant = rng.integers(1, 20_001, size=50_000)  # enough merchants to hold a day under the law
    weights = np.asarray(plans.popularity_weights(50_000))  # Zipf over SKUs: a few giants
    prices = rng.integers(1_000, 100_000, size=50_000)
    capped = mixes.cap_merchants(weights, prices, merchant)
    _, owner = np.unique(merchant, return_inverse=True)
    before = np.bincount(owner, weights=weights * prices)
    after = np.bincount(owner, weights=capped * prices)
    after_share = np.sort(after / after.sum())[::-1]
    law = mixes.MERCHANT_GMV_TOP_SHARE * np.arange(1, len(after) + 1) ** -mixes.MERCHANT_GMV_EXPONENT
    assert np.sort(before / before.sum())[::-1][0] > 4 * law[0]  # the catalog alone breaks the law ...
    assert (after_share <= law * (1 + 1e-9)).all()  # ... and no rank exceeds it once capped
    assert capped.sum() == pytest.approx(1.0)
    # within a merchant, the SKUs keep their relative popularity
    m = owner[0]
    mine = owner == m
    assert np.allclose(capped[mine] / capped[mine].sum(), weights[mine] / weights[mine].sum())


def test_the_festival_catalog_gives_merchant_clubs_near_2017():
    from double11 import festival_cmd

    catalog = generate_catalog(merchants=festival_cmd.CATALOG_MERCHANTS, skus=festival_cmd.CATALOG_SKUS, seed=11)
    view = plans.CatalogView.of(catalog)
    figures = plans.expected_figures(plans.build(Y2017, 1e-4, 11, view), view)
    above_100m, above_500m, above_1b = figures["merchant_clubs_scaled_thresholds"]
    assert 120 <= above_100m <= 240 and 10 <= above_500m <= 25 and 3 <= above_1b <= 9  # 2017: 167, 17, 6
