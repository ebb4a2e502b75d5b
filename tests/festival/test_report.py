"""The end-of-day report renders from a stats dict (GET /v1/stats), with the scale undone."""

from __future__ import annotations

import re

import httpx
import pytest

from double11.report import cli, figures, html_report, rows, text_report

START = 1_510_329_600_000
SCALE = 1e-4


def stats_at_scale(**over) -> dict:
    """What the server says after a simulated 2017 at 1/10,000."""
    gmv = 1_682_000_000  # fen: RMB 16.82M, i.e. RMB 168.2bn at full size
    by_hour = [int(gmv * p / 1000) for p in (336, 40, 20, 12, 8, 6, 8, 14, 24, 34, 38, 38,
                                             36, 34, 32, 30, 30, 30, 32, 36, 40, 44, 36, 42)]
    s = {
        "at": START + 86_400_000, "festival_start": START,
        "gmv_fen": gmv, "gmv_usd_cents": gmv * 100 // 665, "cny_per_usd": "6.65",
        "checkouts": 188_000, "orders": 200_000, "payments": 148_000,
        "orders_per_s": 0, "payments_per_s": 0,
        "peak_orders_per_s": {"value": 33, "at": START + 321_000},
        "peak_payments_per_s": {"value": 26, "at": START + 322_000},
        "mobile_gmv_fen": gmv * 9 // 10, "mobile_share": 0.9,
        "merchant_clubs": [{"threshold_fen": t, "merchants": 0} for t in (10**10, 5 * 10**10, 10**11)],
        "top_brands": [{"brand": 1, "name": "Apple", "international": True, "gmv_fen": 90_000_000},
                       {"brand": 9, "name": "Xiaomi", "international": False, "gmv_fen": 50_000_000}],
        "top_merchants": [{"merchant": 1, "name": "Apple Flagship Store", "marketplace": "tmall",
                           "gmv_fen": 80_000_000}],
        "countries": 195, "top_countries": [{"country": "CN", "gmv_fen": gmv * 95 // 100}],
        "buyers": 100_000, "new_buyers": 30_000,
        "gmv_by_hour_fen": by_hour, "refunded_fen": 0, "settled_fen": 0,
        "previous": {"year": 2016, "gmv_fen": 12_070_000_000_000, "gmv_same_moment_fen": 12_070_000_000_000,
                     "growth": -0.99, "growth_same_moment": -0.99},
    }
    s.update(over)
    return s


def by_key(table):
    return {r.key: r for r in table}


def test_amounts_counts_and_rates_are_compared_with_the_scale_undone():
    r = by_key(rows(stats_at_scale(), 2017, SCALE))
    assert r["gmv"].ratio == pytest.approx(1.0, abs=0.001)
    assert r["gmv"].full == "RMB 168.2 bn" and r["gmv"].target == "RMB 168.2 bn"
    assert r["growth"].full == "+39%"
    assert r["peak_payments_per_s"].full == "260,000"
    assert r["peak_payments_per_s"].ours == "26 at 00:05:22"
    assert r["payments"].ratio == pytest.approx(1.0)


def test_shares_moments_and_reach_are_compared_as_they_are():
    r = by_key(rows(stats_at_scale(), 2017, SCALE))
    assert r["mobile"].ratio == pytest.approx(1.0)
    assert r["first_hour"].ratio == pytest.approx(1.0, abs=0.01)
    assert r["peak_moment"].ours == r["peak_moment"].target == "00:05:22"
    assert r["countries"].ratio == pytest.approx(195 / 192)


def test_the_servers_scale_wins_over_the_callers():
    assert figures.effective_scale({"scale": 0.001}, SCALE) == 0.001
    assert figures.effective_scale({}, None, {"scale": 0.01}) == 0.01
    assert figures.effective_scale({}, None) == 1.0


def test_merchant_clubs_come_from_the_simulator_when_the_server_counts_at_full_size():
    summary = {"scale": SCALE, "merchant_clubs_scaled_thresholds": [160, 18, 6]}
    r = by_key(rows(stats_at_scale(), 2017, None, summary))
    assert [r[f"club_{k}"].ours for k in range(3)] == ["160", "18", "6"]
    assert r["club_2"].ratio == pytest.approx(1.0)
    assert "simulator" in r["club_0"].note
    # without the simulator's counts they are not compared
    assert by_key(rows(stats_at_scale(), 2017, SCALE))["club_0"].ratio is None


def test_merchant_clubs_come_from_the_server_when_its_thresholds_are_scaled():
    clubs = [{"threshold_fen": int(t * SCALE), "merchants": m}
             for t, m in ((10**10, 150), (5 * 10**10, 20), (10**11, 7))]
    r = by_key(rows(stats_at_scale(merchant_clubs=clubs, scale=SCALE), 2017))
    assert [r[f"club_{k}"].ours for k in range(3)] == ["150", "20", "7"]


def test_text_report_reads_like_the_press_release():
    text = text_report(stats_at_scale(), 2017, SCALE)
    assert "RMB 16,820,000 of GMV by 24:00:00" in text
    assert "about RMB 168.2 billion at full size" in text
    assert re.search(r"paid on mobile\s+90\.0%\s+90\.0%", text)
    assert "Apple (intl), Xiaomi" in text


def test_html_report_is_self_contained_with_a_bar_per_hour():
    page = html_report(stats_at_scale(), 2017, SCALE)
    assert page.count("<svg") == 1 and page.count("<rect") == 24
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert 'id="row-gmv"' in page and "international" in page
    assert "<script" not in page


def test_report_for_2016_compares_with_2015():
    r = by_key(rows(stats_at_scale(gmv_fen=1_207_000_000), 2016, SCALE))
    assert r["gmv"].ratio == pytest.approx(1.0, abs=0.001)
    assert r["growth"].target == "+32%"
    assert r["club_0"].target == "-"


def test_report_command_reads_the_server_and_writes_the_page(tmp_path, monkeypatch, capsys):
    stats = stats_at_scale(scale=SCALE)

    def fake_get(url, timeout):
        assert url == "http://festival.test/v1/stats"
        return httpx.Response(200, json=stats, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    out = tmp_path / "r.html"
    assert cli.report_main(["--url", "http://festival.test/", "--out", str(out)]) == 0
    assert "<svg" in out.read_text()
    assert "RMB 168.2 bn" in capsys.readouterr().out


def with_promotions(**over) -> dict:
    """stats_at_scale's day with 2017's promotions in its live figures."""
    promotions = {"discounts_fen": {"deal": 40_000_000, "store_coupon": 10_000_000, "threshold": 60_000_000,
                                    "platform_coupon": 8_000_000},
                  "coupons_granted": 50_000, "coupons_used": 20_000, "deals_sold_out": 4,
                  "coupons_left": {"store": 100, "platform": 2_000},
                  "coupon_budget_left_fen": {"store": 80_000, "platform": 1_000_000},
                  "deals_sold_out_latest": [
                      {"deal": 7, "sku": 1201, "kind": "flash", "sold_out_at": START + 10 * 3_600_000 + 754_000},
                      {"deal": 1, "sku": 1200, "kind": "flash", "sold_out_at": START + 201_000}]}
    return stats_at_scale(promotions=promotions, **over)


def test_the_report_shows_the_discount_given_by_kind_and_the_coupons():
    r = by_key(rows(with_promotions(), 2017, SCALE))
    assert r["discounts"].ours == "RMB 1,180,000" and r["discounts"].full == "RMB 11.8 bn"
    # GMV is what was paid: the list value is GMV plus the discounts
    assert "6.6% of the list value" in r["discounts"].note  # 11.8 / (168.2 + 11.8)
    assert r["discount_threshold"].ours == "RMB 600,000" and "50.8% of the discount" in r["discount_threshold"].note
    assert r["discount_deal"].full == "RMB 4.0 bn" and r["discount_platform_coupon"].ours == "RMB 80,000"
    assert r["coupons"].ours == "50,000 / 20,000" and r["coupons"].full == "500,000,000 / 200,000,000"
    assert "40.0% of those granted" in r["coupons"].note
    assert r["deals_sold_out"].ours == "4"
    assert all(r[k].ratio is None for k in ("discounts", "coupons", "deals_sold_out"))  # 2017 published none


def test_the_reports_list_the_deals_that_sold_out_last_with_their_moment():
    text = text_report(with_promotions(), 2017, SCALE)
    assert "deals sold out last: flash deal 7 on SKU 1201 at 10:12:34, flash deal 1 on SKU 1200 at 00:03:21" in text
    assert re.search(r"by cross-store threshold\s+RMB 600,000\s+RMB 6.0 bn", text)
    page = html_report(with_promotions(), 2017, SCALE)
    assert 'id="row-discount_store_coupon"' in page and 'id="row-coupons"' in page
    assert page.index('data-deal="7"') < page.index('data-deal="1"') and "sold out at 10:12:34" in page


def test_a_server_without_promotions_gets_no_promotion_rows():
    assert not any(r.key.startswith(("discount", "coupons")) for r in rows(stats_at_scale(), 2017, SCALE))
    assert "deals sold out" not in text_report(stats_at_scale(), 2017, SCALE)
