"""The promotions' live figures the big screen shows beyond the model's (stats'
`promotions`): the coupons the templates may still grant and their face value, by
kind, and the deals that sold out last, newest first."""

from __future__ import annotations

import pytest
from model import T0, co, deal, grant, small_catalog, template

from double11 import Festival, limits
from double11.config import FestivalConfig

HOUR_MS = 3_600_000


@pytest.fixture
def festival():
    f = Festival.open(small_catalog(stock={101: 50, 104: 50}), config=FestivalConfig(payment_timeout_ms=60_000))
    yield f
    f.close()


def ok(results: list[dict]) -> list[dict]:
    assert all(r["status"] < 300 for r in results), results
    return results


def test_budgets_left_count_what_the_templates_may_still_grant(festival):
    ok(festival.execute([
        template("t1", kind="store", merchant=30, discount_fen=300, min_spend_fen=1000, budget_count=5),
        # its fen budget allows two coupons of 500, whatever its count says
        template("t2", discount_fen=500, budget_count=4, budget_fen=1000, per_buyer_max=2),
        template("t3", discount_fen=100, budget_count=7, grant_until=T0 + 2 * HOUR_MS),
        grant("g1", 1), grant("g2", 2)], T0))
    figures = festival.stats()["promotions"]
    assert figures["coupons_left"] == {"store": 4, "platform": 1 + 7}
    assert figures["coupon_budget_left_fen"] == {"store": 4 * 300, "platform": 500 + 7 * 100}
    # an hour on, the first two templates' grant windows have closed: nothing more to grant from them
    ok(festival.execute([grant("g3", 3, buyer=8)], T0 + HOUR_MS))
    figures = festival.stats()["promotions"]
    assert figures["coupons_left"] == {"store": 0, "platform": 6}
    assert figures["coupon_budget_left_fen"] == {"store": 0, "platform": 600}
    assert figures["coupons_granted"] == 3


def test_the_deals_that_sold_out_last_come_newest_first(festival):
    # six one-unit flash deals on each of two SKUs, one after the other
    step = 60_000
    deals = [deal(f"d{sku}.{k}", sku, price_fen=100, qty=1, start=T0 + k * step, until=T0 + (k + 1) * step)
             for sku in (101, 104) for k in range(6)]
    ok(festival.execute(deals, T0 - 1))
    sold = []
    for k in range(6):
        for n, sku in enumerate((101, 104)):
            at = T0 + k * step + 1_000 * (n + 1)
            ok(festival.execute([co(f"c{sku}.{k}", [(sku, 1)], buyer=100 + k)], at))
            sold.append((sku, at))
    figures = festival.stats()["promotions"]
    assert figures["deals_sold_out"] == 12
    latest = figures["deals_sold_out_latest"]
    assert len(latest) == limits.stats_top_n < 12
    assert [(d["sku"], d["sold_out_at"]) for d in latest] == sold[::-1][:limits.stats_top_n]
    assert all(set(d) == {"deal", "sku", "kind", "sold_out_at"} and d["kind"] == "flash" for d in latest)
    assert latest[0]["deal"] == 12 and latest[1]["deal"] == 6  # SKU 104's last deal, then 101's
