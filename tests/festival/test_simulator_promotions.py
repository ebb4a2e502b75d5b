"""2017's promotions in the simulated day: the plan holds them (pure functions of the
seed), the replay creates them before midnight and spends the buyers' coupons, and the
server's live figures, the simulator's summary and the report agree on the discounts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from double11.catalog.generate import generate_catalog
from double11.report import rows, text_report
from double11.simulator import mixes, promotions
from double11.simulator import plan as plans
from double11.simulator.promotions import Coupon, choose_coupons
from double11.simulator.years import profile

Y2017 = profile(2017)
DAY_MS, HOUR_MS = 86_400_000, 3_600_000
SIMULATE = "import sys; from double11.simulator.cli import simulate_main; sys.exit(simulate_main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def view():
    return plans.CatalogView.of(generate_catalog(merchants=500, skus=5000, seed=3, returning_buyers=20_000))


@pytest.fixture(scope="module")
def plan(view):
    return plans.build(Y2017, 2e-5, 5, view)


def test_the_plan_holds_2017s_promotions(plan, view):
    promos = plan.promotions
    assert promos is not None
    threshold = promos.threshold_command("k", 1_000)
    assert (threshold["every_fen"], threshold["off_fen"]) == (40_000, 5_000)  # every RMB 400, RMB 50 off
    assert (threshold["from"], threshold["until"]) == (1_000, 1_000 + DAY_MS) and "merchants" not in threshold
    stores = [t for t in promos.templates if t.kind == "store"]
    assert 0 < len(stores) <= promotions.STORE_COUPON_MERCHANTS
    assert len({t.merchant for t in stores}) == len(stores) and {t.merchant for t in stores} <= set(view.merchant)
    assert all(t.discount_fen * 10 == t.min_spend_fen and t.source == "store-page" for t in stores)
    by_source = {t.source: k for k, t in enumerate(promos.templates) if t.kind == "platform"}
    assert set(by_source) == {"game:ar-catch-the-cat", "game:trivia"}
    assert all(t.min_spend_fen == 0 for t in promos.templates if t.kind == "platform")  # red packets are like cash


def test_red_packets_come_before_and_during_the_day_within_their_budgets(plan):
    promos = plan.promotions
    assert (np.diff(promos.grant_at_ms) >= 0).all()
    ar = next(k for k, t in enumerate(promos.templates) if t.source == "game:ar-catch-the-cat")
    trivia = next(k for k, t in enumerate(promos.templates) if t.source == "game:trivia")
    ar_at = promos.grant_at_ms[promos.grant_template == ar]
    assert (ar_at < 0).any() and ((ar_at >= 0) & (ar_at < DAY_MS)).any()
    trivia_hours = set((promos.grant_at_ms[promos.grant_template == trivia] // HOUR_MS).tolist())
    assert trivia_hours == {-4, 10, 20}  # the eve's round at 20:00, then 10:00 and 20:00 on the day
    for k, t in enumerate(promos.templates):
        mine = promos.grant_template == k
        assert mine.sum() == t.budget_count  # every planned grant fits the budget, none is left over
        assert max(Counter(promos.grant_buyer[mine].tolist()).values()) <= t.per_buyer_max
    assert set(promos.grant_buyer.tolist()) <= set(plan.buyer.tolist())
    assert promos.spends_coupons.mean() == pytest.approx(promotions.SPEND_SHARE, abs=0.03)


def test_deals_are_on_the_hottest_skus_at_set_hours_below_list_price(plan, view):
    deals = plan.promotions.deals
    flash = [d for d in deals if d.kind == "flash"]
    assert {d.sku_row for d in flash} == {0, 1, 2}  # rows are popularity ranks
    assert {d.from_ms // HOUR_MS for d in flash} == {0, 10, 20}  # the midnight rush first
    assert all(d.per_buyer_max == 1 for d in flash)
    assert {d.from_ms // HOUR_MS for d in deals if d.kind == "livestream"} == {20}  # the evening
    assert {d.kind for d in deals} == {"flash", "livestream", "group_buy"}
    for d in deals:
        assert 1 <= d.price_fen < view.price_fen[d.sku_row] and 1 <= d.qty <= max(1, view.stock[d.sku_row])
    # no two deals on one SKU have windows that meet (the server refuses those)
    for row in {d.sku_row for d in deals}:
        windows = sorted((d.from_ms, d.until_ms) for d in deals if d.sku_row == row)
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))
    # flash deals are made to sell out: fewer units than the window's checkouts ask
    first = next(d for d in flash if d.sku_row == 0 and d.from_ms == 0)
    line_at = np.repeat(plan.at_ms, np.diff(plan.line_offsets))
    asked = ((plan.line_rows == 0) & (line_at < first.until_ms)).sum()
    assert first.qty < asked


def test_the_same_seed_gives_the_same_promotions(view):
    a, b = plans.build(Y2017, 1e-5, 3, view), plans.build(Y2017, 1e-5, 3, view)
    c = plans.build(Y2017, 1e-5, 4, view)
    assert a.promotions.templates == b.promotions.templates and a.promotions.deals == b.promotions.deals
    for field in ("grant_at_ms", "grant_template", "grant_buyer", "spends_coupons"):
        assert np.array_equal(getattr(a.promotions, field), getattr(b.promotions, field)), field
    assert not np.array_equal(a.promotions.grant_buyer, c.promotions.grant_buyer)
    assert plans.build(Y2017, 1e-5, 3, view, with_promotions=False).promotions is None


def test_expected_gmv_is_the_list_value_less_the_planned_discounts(plan, view):
    f = plans.expected_figures(plan, view)
    assert all(fen > 0 for fen in f["discounts_fen"].values()), f["discounts_fen"]
    assert f["gmv_fen"] == f["list_value_fen"] - sum(f["discounts_fen"].values())
    assert sum(f["gmv_by_hour_fen"]) == pytest.approx(f["gmv_fen"], abs=24)
    # without promotions nothing is taken off: GMV is the list value
    bare = plans.build(Y2017, 2e-5, 5, view, with_promotions=False)
    g = plans.expected_figures(bare, view)
    assert g["gmv_fen"] == g["list_value_fen"] == int(bare.value_fen[bare.fate == mixes.PAY].sum())
    assert set(g["discounts_fen"].values()) == {0}


def test_a_checkout_spends_one_store_coupon_per_merchant_that_reaches_its_minimum():
    wallet = [Coupon(1, "store", 7, 500, 5_000), Coupon(2, "store", 7, 900, 1_000), Coupon(3, "store", 8, 100, 9_000),
              Coupon(4, "platform", None, 500, 0), Coupon(5, "store", 9, 100, 100)]
    chosen = choose_coupons(wallet, {7: 6_000, 8: 8_999})
    assert [c.coupon for c in chosen] == [1, 4]  # 7's first only; 8's minimum not reached; no line of 9
    many = [Coupon(k, "platform", None, 100, 0) for k in range(1, 12)]
    assert len(choose_coupons(many, {})) == 8  # a checkout takes at most 8


def test_a_replay_gives_the_discounts_by_kind_in_the_stats_and_the_report(live_server, tmp_path):
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, "-c", SIMULATE, "--url", live_server.url, "--speedup", "600", "--scale", "2e-5",
         "--seed", "5", "--hours", "0.4", "--catalog", str(live_server.catalog), "--summary", str(summary_path)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    stats = live_server.stats()
    promos, acked = stats["promotions"], summary["promotions"]
    # the operators' threshold, templates and deals were all made, before midnight
    assert summary["answers"]["threshold_discount 201 ok"] == 1
    assert acked["created"] == 1 + summary["answers"]["coupon_template 201 ok"] + summary["answers"]["deal 201 ok"]
    assert acked["coupons_dropped"] == 0 and acked["coupon_checkouts"] > 0
    # what the server counts is exactly what the simulator saw acknowledged
    assert stats["gmv_fen"] == summary["gmv_fen"] and stats["payments"] == summary["payments"]
    assert promos["discounts_fen"] == acked["discounts_fen"]
    assert all(fen > 0 for fen in promos["discounts_fen"].values()), promos["discounts_fen"]
    assert promos["coupons_granted"] == acked["coupons_granted"] > 0
    assert promos["coupons_used"] == acked["coupons_used"] > 0
    assert promos["deals_sold_out"] >= 1 and len(promos["deals_sold_out_latest"]) >= 1
    latest = promos["deals_sold_out_latest"][0]
    assert latest["kind"] == "flash" and latest["sold_out_at"] >= stats["festival_start"]
    assert promos["coupons_left"]["platform"] > 0  # the day's later red packets are still to come

    # the report shows the discount given, by kind, and the coupons, from the same stats
    table = {r.key: r for r in rows(stats, 2017, 2e-5, summary)}
    total = sum(promos["discounts_fen"].values())
    assert table["discounts"].ours == f"RMB {total / 100:,.0f}"
    assert table["discount_threshold"].ours == f"RMB {promos['discounts_fen']['threshold'] / 100:,.0f}"
    assert table["coupons"].ours == f"{promos['coupons_granted']:,} / {promos['coupons_used']:,}"
    text = text_report(stats, 2017, 2e-5, summary)
    assert "discount given" in text and f"flash deal {latest['deal']} on SKU {latest['sku']}" in text
