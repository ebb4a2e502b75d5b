"""A replay of the day's first hours is compared with the same hours of the imitated
year everywhere (years.targets, the report, the progress bar, the start line), and a
replay that fell behind its schedule says its per-second peaks are not reliable."""

from __future__ import annotations

import re

import numpy as np
import pytest

from double11.report import html_report, rows, text_report
from double11.report.figures import report_hours
from double11.simulator import plan as plans
from double11.simulator.curve import payment_curve
from double11.simulator.progress import progress_line
from double11.simulator.schedule import lag_warning, planned, start_line
from double11.simulator.tally import Tally
from double11.simulator.years import YEARS, share_of_day, targets

START = 1_510_329_600_000
SCALE = 1e-4
Y2017, Y2016 = YEARS[2017], YEARS[2016]


def by_key(table):
    return {r.key: r for r in table}


def first_hour_stats(**over) -> dict:
    """What the server says after replaying 2017's first hour at 1/10,000, right on target."""
    gmv = int(round(Y2017.gmv_fen * 0.336 * SCALE))  # RMB 5.65M: 2017's first hour, scaled
    s = {
        "at": START + 3_600_000 + 4_000, "festival_start": START, "scale": SCALE, "speedup": 60.0,
        "gmv_fen": gmv, "gmv_usd_cents": gmv * 100 // 665,
        "checkouts": 63_000, "orders": 70_000, "payments": int(round(Y2017.payments * 0.336 * SCALE)),
        "peak_orders_per_s": {"value": 33, "at": START + 321_000},
        "peak_payments_per_s": {"value": 26, "at": START + 322_000},
        "mobile_share": 0.93, "merchant_clubs": [], "countries": 180, "buyers": 40_000, "new_buyers": 9_000,
        "gmv_by_hour_fen": [gmv] + [0] * 23,
    }
    s.update(over)
    return s


def test_the_whole_day_targets_are_the_published_figures():
    t = targets(Y2017, 24)
    assert (t.gmv_fen, t.payments, t.peak_payments_per_s, t.peak_second) == (
        Y2017.gmv_fen, Y2017.payments, 256_000, 322)
    assert (t.first_hour_share, t.mobile_share, t.previous_gmv_fen) == (0.336, 0.90, Y2016.gmv_fen)
    assert t.countries == 192 and t.merchant_clubs == (167, 17, 6)


def test_the_first_hour_targets_are_2017s_first_hour():
    t = targets(Y2017, 1)
    assert t.gmv_fen == pytest.approx(Y2017.gmv_fen * 0.336)  # US$8.5bn of 25.3bn
    assert t.previous_gmv_fen == pytest.approx(Y2016.gmv_fen * 0.330)  # 2016's own first hour
    assert t.growth == pytest.approx(0.336 * 168.2 / (0.330 * 120.7) - 1)
    assert t.payments == pytest.approx(Y2017.payments * 0.336)
    assert t.mobile_share == pytest.approx(0.93)  # the first hour's, not the day's 90%
    assert (t.peak_payments_per_s, t.peak_second) == (256_000, 322)  # the peak falls inside it
    assert t.countries is None and t.merchant_clubs is None  # published for the whole day only


def test_hours_of_the_day_follow_the_published_hourly_shares_and_the_midnight_rush():
    assert share_of_day(Y2017, 2) == pytest.approx(0.376)
    assert share_of_day(Y2017, 24) == 1.0
    # inside an hour the curve's shape: the rush puts more than a fifth of the first hour in its first fifth
    assert share_of_day(Y2017, 0.2) == pytest.approx(float(payment_curve(Y2017)[:720].sum()))
    assert share_of_day(Y2017, 0.2) > 0.2 * 0.336
    shares = [share_of_day(Y2017, h) for h in (0.1, 0.5, 1, 1.5, 3, 12, 23.5)]
    assert shares == sorted(shares)
    t = targets(Y2017, 2)
    assert t.first_hour_share == pytest.approx(0.336 / 0.376)
    assert sum(t.hourly_permille) == pytest.approx(376)


def test_a_run_that_ends_before_the_published_peak_is_compared_with_the_curve_before_its_end():
    t = targets(Y2017, 0.05)  # three minutes: 2017's peak came at 00:05:22
    assert t.peak_second < 180 and 0 < t.peak_payments_per_s < 256_000
    assert {"peak_payments_per_s", "peak_second"} <= set(t.derived)


def test_the_report_of_a_one_hour_run_compares_with_2017s_first_hour():
    r = by_key(rows(first_hour_stats(), 2017, SCALE, {"hours": 1, "max_lag_ms": 0}))
    assert r["gmv"].target == "RMB 56.5 bn" and r["gmv"].ratio == pytest.approx(1.0, abs=0.001)
    assert r["growth"].target == "+42%" and r["growth"].ratio == pytest.approx(1.0, abs=0.001)
    assert "first hour" not in " ".join(r)  # a one-hour run is all first hour
    assert r["mobile"].target == "93.0%" and r["mobile"].ratio == pytest.approx(1.0)
    assert r["payments"].label == "payments in the first 1 h" and r["payments"].ratio == pytest.approx(1.0, abs=0.001)
    assert r["peak_payments_per_s"].target == "256,000" and r["peak_payments_per_s"].ratio == pytest.approx(260 / 256)
    assert r["countries"].ratio is None and "whole day" in r["countries"].note
    # against the whole day the same run would read -47% and x0.34
    whole = by_key(rows(first_hour_stats(), 2017, SCALE, {"hours": 24}))
    assert whole["gmv"].ratio == pytest.approx(0.336, abs=0.001)


def test_a_two_hour_run_compares_its_first_hours_share_with_2017s_same_two_hours():
    gmv = 6_000_000
    stats = first_hour_stats(gmv_fen=gmv, gmv_by_hour_fen=[int(gmv * 336 / 376), gmv - int(gmv * 336 / 376)] + [0] * 22,
                             at=START + 2 * 3_600_000)
    r = by_key(rows(stats, 2017, SCALE, {"hours": 2}))
    assert r["first_hour"].target == "89.4%" and r["first_hour"].ratio == pytest.approx(1.0, abs=0.001)


def test_the_hours_come_from_the_caller_the_simulator_or_the_servers_day_so_far():
    stats = first_hour_stats(at=START + 90 * 60_000)
    assert report_hours(stats, {"hours": 2}, 3) == 3
    assert report_hours(stats, {"hours": 2}) == 2
    assert report_hours(stats) == 1.5
    assert report_hours(first_hour_stats(at=START + 30 * 3_600_000)) == 24  # the day is over
    assert report_hours(first_hour_stats(at=START - 1000)) == 24  # not begun: nothing to cut


def test_the_text_and_html_reports_name_the_hours_compared():
    text = text_report(first_hour_stats(), 2017, SCALE, {"hours": 1})
    assert "compared with the first 1 h of 2017's" in text
    assert "2017, the first 1 h" in text
    assert re.search(r"GMV\s+RMB 5,651,520\s+RMB 56.5 bn\s+RMB 56.5 bn\s+x1.00", text)
    page = html_report(first_hour_stats(), 2017, SCALE, {"hours": 1})
    assert page.count("<circle") == 1  # 2017's shape drawn over the hour run only


def test_the_progress_bar_spans_the_hours_replayed():
    stats = {"festival_start": START, "at": START + 3_600_000, "gmv_fen": 0}
    line = progress_line(stats, Tally(), SCALE, hours=2)
    assert line.startswith("[" + "#" * 12 + "-" * 12 + "] 01:00:00 of 02:00:00")
    assert progress_line(stats, Tally(), SCALE).startswith("[#" + "-" * 23 + "]")


def small_plan() -> plans.Plan:
    rng = np.random.default_rng(0)
    n = 400
    view = plans.CatalogView(sku_id=np.arange(1, n + 1), price_fen=rng.integers(1000, 30000, n),
                             merchant=rng.integers(1, 40, n), stock=np.full(n, 10_000))
    return plans.build(Y2017, 1e-5, 1, view)


def test_the_start_line_counts_what_the_hours_really_send_and_how_long_that_takes():
    plan = small_plan()
    checkouts, payments = planned(plan, 2)
    assert checkouts == int((plan.at_ms < 7_200_000).sum()) < len(plan)
    line = start_line(2017, 1e-5, plan, 2, 60)
    assert f"the first 2 h of 2017 at scale 1e-05: {checkouts:,} checkouts, {payments:,} of them" in line
    assert "60x that takes 2 min" in line
    slow = start_line(2017, 1e-5, plan, 24, 1)
    assert "1x that takes 24 h" in slow and "--speedup 60" in slow and "double11 festival" in slow


def test_the_lag_warning_is_given_past_a_second_of_festival_time():
    assert lag_warning(0, 60) is None and lag_warning(1_000, 60) is None
    warning = lag_warning(26_648, 60)
    assert "26.6 s" in warning and "peaks are not reliable" in warning and "--speedup 30" in warning
    assert "GMV and the counts are exact" in warning


def test_the_report_of_a_lagging_run_warns_and_compares_only_what_stays_exact():
    summary = {"hours": 1, "max_lag_ms": 26_648, "speedup": 60.0}
    r = by_key(rows(first_hour_stats(), 2017, SCALE, summary))
    assert r["peak_payments_per_s"].ratio is None and "not reliable" in r["peak_payments_per_s"].note
    assert r["peak_orders_per_s"].ratio is None
    assert r["gmv"].ratio == pytest.approx(1.0, abs=0.001) and r["payments"].ratio is not None
    assert "warning: the simulator fell up to 26.6 s" in text_report(first_hour_stats(), 2017, SCALE, summary)
    assert 'id="lag-warning"' in html_report(first_hour_stats(), 2017, SCALE, summary)
    # a run that kept up gets no warning
    assert "warning" not in text_report(first_hour_stats(), 2017, SCALE, {"hours": 1, "max_lag_ms": 300})


def test_the_simulators_summary_carries_the_hours_the_pace_and_the_warning():
    summary = Tally(max_lag_ms=5_000, hours=2, speedup=60.0).summary(SCALE)
    assert (summary["hours"], summary["speedup"]) == (2, 60.0)
    assert "not reliable" in summary["lag_warning"]
    assert Tally(hours=2, speedup=60.0).summary(SCALE)["lag_warning"] is None
