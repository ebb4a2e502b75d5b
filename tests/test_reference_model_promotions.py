"""Unit tests of the reference model's promotions (tests/model/reference.py, docs/promotions.md):
one or more per rule and per refusal code, with the numbers worked by hand."""

from __future__ import annotations

import copy

import pytest
from model import (
    T0,
    UNKNOWN_SKU,
    cancel,
    co,
    code_of,
    confirm,
    coupon_budget,
    deal,
    deal_qty,
    grant,
    pay,
    refund,
    small_catalog,
    template,
)
from model import threshold as threshold_cmd
from model.reference import DISCOUNT_KINDS, ReferenceFestival, allocate

from double11.config import FestivalConfig
from double11.errors import Result
from double11.statuses import HTTP_STATUS

CONFIG = FestivalConfig(payment_timeout_ms=60_000, commission_bps=250)
TIMEOUT = CONFIG.payment_timeout_ms
HOUR = 3_600_000
ZERO = {kind: 0 for kind in DISCOUNT_KINDS}


def fresh(stock: dict[int, int] | None = None) -> ReferenceFestival:
    return ReferenceFestival(small_catalog(stock), CONFIG)


def codes(results: list[dict]) -> list[str]:
    return [code_of(r) for r in results]


def run_ok(m: ReferenceFestival, cmds: list[dict], now: int = T0) -> list[dict]:
    rs = m.execute(cmds, now)
    assert codes(rs) == ["ok"] * len(cmds), codes(rs)
    return rs


def disc(deal_fen: int = 0, store: int = 0, thr: int = 0, platform: int = 0) -> dict[str, int]:
    return {"deal": deal_fen, "store_coupon": store, "threshold": thr, "platform_coupon": platform}


def check_checkout(m: ReferenceFestival, cid: int) -> dict:
    """list - discounts == payable == sum of the orders' payable; each kind sums over
    the orders and over the lines; the order views agree with the checkout's."""
    c = m.checkout(cid)
    assert c is not None
    orders = [m.order(o["order"]) for o in c["orders"]]
    assert all(o is not None for o in orders)
    assert c["amount_fen"] == sum(o["amount_fen"] for o in c["orders"]) == sum(ln["amount_fen"] for ln in c["lines"])
    if "discounts" not in c:
        assert all("discounts" not in x and "list_fen" not in x for x in [*c["lines"], *c["orders"], *orders])
        assert all(ln["amount_fen"] == ln["qty"] * ln["price_fen"] for ln in c["lines"])
        return c
    assert c["list_fen"] - sum(c["discounts"].values()) == c["amount_fen"]
    assert sum(c["discounts"].values()) > 0
    for kind in DISCOUNT_KINDS:
        assert c["discounts"][kind] == sum(o["discounts"][kind] for o in c["orders"])
        assert c["discounts"][kind] == sum(ln["discounts"][kind] for ln in c["lines"])
    for summary, order in zip(c["orders"], orders, strict=True):
        assert order is not None
        assert {k: summary[k] for k in ("amount_fen", "list_fen", "discounts")} == {
            k: order[k] for k in ("amount_fen", "list_fen", "discounts")}
        assert order["list_fen"] - sum(order["discounts"].values()) == order["amount_fen"]
        assert order["amount_fen"] == sum(ln["amount_fen"] for ln in order["lines"])
        assert order["list_fen"] == sum(ln["list_fen"] for ln in order["lines"])
        for kind in DISCOUNT_KINDS:
            assert order["discounts"][kind] == sum(ln["discounts"][kind] for ln in order["lines"])
    for ln in c["lines"]:
        assert ln["list_fen"] == ln["qty"] * ln["price_fen"]
        assert ln["list_fen"] - sum(ln["discounts"].values()) == ln["amount_fen"] >= 0
    assert c["list_fen"] == sum(ln["list_fen"] for ln in c["lines"])
    return c


def got(view: dict | None) -> dict:
    """a view that must exist"""
    assert view is not None
    return view


def check_ledger(m: ReferenceFestival) -> None:
    assert m.ledger()["sum"] == 0
    assert m.stats()["gmv_fen"] == m.paid_amount_total()


# --- allocation -----------------------------------------------------------------------


def test_allocate_rounds_down_and_puts_the_remainder_on_the_last_line():
    # 5000 over 12345 and 50000: 5000*12345//62345 = 990, 5000*50000//62345 = 4009, 1 left over
    assert allocate(5000, [12345, 50000]) == [990, 4010]


def test_allocate_walks_back_when_the_last_line_has_too_little_left():
    # 5009 over 5000, 7, 3 (base 5010): 4999, 6, 2 rounded down, 2 left over; the last
    # line has 3 - 2 = 1 left, so it takes 1 and the line before it the other 1
    assert allocate(5009, [5000, 7, 3]) == [4999, 7, 3]
    assert allocate(2, [1, 1, 1]) == [0, 1, 1]
    assert allocate(3, [5, 0]) == [3, 0]  # a line with nothing left takes nothing
    assert allocate(0, [5, 0]) == [0, 0]


# --- pricing, worked ------------------------------------------------------------------


def every_kind(m: ReferenceFestival) -> None:
    """deal on 103, a store coupon of merchant 30 (coupon 1), a threshold over all
    merchants, a platform coupon (coupon 2); checkout 1 uses them all."""
    run_ok(m, [
        deal("d", 103, price_fen=20000, qty=5, per_buyer_max=2),
        template("ts", kind="store", merchant=30, discount_fen=300, min_spend_fen=2000),
        template("tp", discount_fen=500),
        threshold_cmd("th", every_fen=10000, off_fen=1000),
        grant("g1", 1), grant("g2", 2),
    ], T0)
    run_ok(m, [co("c", [(101, 1), (103, 1), (104, 2), (102, 3)], coupons=[1, 2])], T0)


def test_every_kind_of_discount_priced_step_by_step():
    m = fresh()
    every_kind(m)
    # stored order: 102 (merchant 10), 103 (merchant 20), 101 and 104 (merchant 30, as given)
    # 1. deal: 103 costs 20000, 5000 off
    # 2. store coupon of 30 over 101 (1999) and 104 (700), base 2699 >= 2000: 300 =
    #    300*1999//2699 = 222 and 300*700//2699 = 77, +1 remainder on 104 = 78
    # 3. threshold over 300 + 20000 + 1777 + 622 = 22699: 2 x 1000 = 2000 =
    #    26 + 1762 + 156 + 54, +2 on 104 = 56
    # 4. platform over 274 + 18238 + 1621 + 566 = 20699: 500 = 6 + 440 + 39 + 13, +2 on 104 = 15
    c = check_checkout(m, 1)
    assert c["amount_fen"] == 20199 == 27999 - 5000 - 300 - 2000 - 500
    assert c["list_fen"] == 27999 and c["discounts"] == disc(5000, 300, 2000, 500)
    assert [(ln["sku"], ln["amount_fen"], ln["discounts"]) for ln in c["lines"]] == [  # as given
        (101, 1582, disc(0, 222, 156, 39)),
        (103, 17798, disc(5000, 0, 1762, 440)),
        (104, 551, disc(0, 78, 56, 15)),
        (102, 268, disc(0, 0, 26, 6)),
    ]
    assert [ln["price_fen"] for ln in c["lines"]] == [1999, 25000, 350, 100]  # the list price stays
    assert [(o["merchant"], o["list_fen"], o["amount_fen"], o["discounts"]) for o in c["orders"]] == [
        (10, 300, 268, disc(0, 0, 26, 6)),
        (20, 25000, 17798, disc(5000, 0, 1762, 440)),
        (30, 2699, 2133, disc(0, 300, 212, 54)),
    ]


def test_checkout_answer_carries_list_and_discounts_for_checkout_and_orders():
    m = fresh()
    every_kind(m)
    first = m.keys["c"][1]
    assert first == {"status": 201, "body": {
        "checkout": 1, "amount_fen": 20199, "list_fen": 27999, "discounts": disc(5000, 300, 2000, 500),
        "orders": [
            {"order": 1, "merchant": 10, "amount_fen": 268, "list_fen": 300, "discounts": disc(0, 0, 26, 6)},
            {"order": 2, "merchant": 20, "amount_fen": 17798, "list_fen": 25000,
             "discounts": disc(5000, 0, 1762, 440)},
            {"order": 3, "merchant": 30, "amount_fen": 2133, "list_fen": 2699, "discounts": disc(0, 300, 212, 54)},
        ],
        "status": "reserved", "expires_at": T0 + TIMEOUT}}
    assert m.order(3) == {
        "order": 3, "checkout": 1, "buyer": 7, "merchant": 30, "status": "reserved", "amount_fen": 2133,
        "list_fen": 2699,
        "discounts": disc(0, 300, 212, 54),
        "lines": [
            {"sku": 101, "qty": 1, "price_fen": 1999, "amount_fen": 1582, "list_fen": 1999,
             "discounts": disc(0, 222, 156, 39)},
            {"sku": 104, "qty": 2, "price_fen": 350, "amount_fen": 551, "list_fen": 700,
             "discounts": disc(0, 78, 56, 15)},
        ]}


def test_ledger_pay_confirm_refund_with_a_platform_share():
    m = fresh()
    every_kind(m)
    rs = run_ok(m, [pay("p", 1, 20199), confirm("f", 2), refund("r", 3)], T0)
    assert rs[0]["body"] == {"checkout": 1, "status": "paid", "amount_fen": 20199}
    # confirm settles 17798 + 440 (before platform discounts); commission 18238 * 250 // 10000 = 455
    assert rs[1]["body"] == {"order": 2, "status": "settled", "merchant_fen": 18238 - 455, "commission_fen": 455}
    assert rs[2]["body"] == {"order": 3, "status": "refunded", "amount_fen": 2133}
    assert m.ledger() == {
        "accounts": {"buyers": -20199 + 2133, "escrow": 268 + 6, "merchants": 18238 - 455, "platform": 455,
                     "marketing": -500 + 54},
        "sum": 0,
        "transfers": 2 + 2 + 2,  # pay and the marketing part; confirm's two; refund and the marketing part
    }
    st = m.stats()
    assert (st["gmv_fen"], st["refunded_fen"], st["settled_fen"]) == (20199, 2133, 18238)
    assert st["promotions"] == {"discounts_fen": disc(5000, 300, 2000, 500), "coupons_granted": 2,
                                "coupons_used": 2, "deals_sold_out": 0}
    check_ledger(m)


def test_pay_without_platform_discount_is_one_transfer():
    m = fresh()
    run_ok(m, [deal("d", 101, price_fen=1500, qty=3), co("c", [(101, 1)]), pay("p", 1, 1500)])
    assert m.ledger()["transfers"] == 1 and m.ledger()["accounts"]["marketing"] == 0
    run_ok(m, [refund("r", 1)])
    assert m.ledger()["transfers"] == 2 and m.ledger()["accounts"]["escrow"] == 0
    check_ledger(m)


def test_threshold_over_two_merchants_shares_pro_rata_remainder_on_the_last_line():
    m = fresh({103: 5})
    run_ok(m, [threshold_cmd("th", every_fen=40000, off_fen=5000, merchants=[20, 10]),
               co("c", [(103, 2), (101, 1), (105, 1)])])
    # lines of merchants 10 and 20: 105 (12345) then 103 (2 x 25000), base 62345: 1 x 5000 =
    # 5000*12345//62345 = 990 and 5000*50000//62345 = 4009, the remainder 1 on 103; 101 (30) takes none
    c = check_checkout(m, 1)
    assert c["discounts"] == disc(thr=5000) and c["amount_fen"] == 62345 + 1999 - 5000
    assert {ln["sku"]: ln["discounts"]["threshold"] for ln in c["lines"]} == {103: 4010, 101: 0, 105: 990}
    assert [o["discounts"]["threshold"] for o in c["orders"]] == [990, 4010, 0]


def test_threshold_every_step_counts_whole_steps_only():
    m = fresh({103: 5})
    run_ok(m, [threshold_cmd("th", every_fen=20000, off_fen=3000), co("a", [(103, 3)]), co("b", [(101, 1)])])
    assert check_checkout(m, 1)["discounts"] == disc(thr=3 * 3000)  # 75000 // 20000 = 3
    assert "discounts" not in check_checkout(m, 2)  # 1999 < 20000: no discount at all


def test_platform_coupon_walks_back_when_the_last_line_has_too_little_left():
    m = fresh()
    run_ok(m, [deal("d1", 103, price_fen=5000, qty=1), deal("d2", 101, price_fen=7, qty=1),
               deal("d3", 104, price_fen=3, qty=1), template("t", discount_fen=5009), grant("g", 1),
               co("c", [(101, 1), (103, 1), (104, 1)], coupons=[1])])
    # after the deals, stored order 103 (5000), 101 (7), 104 (3): base 5010, 5009 off =
    # 4999, 6, 2 rounded down, 2 left over: 104 has 1 left, takes it, 101 takes the other
    c = check_checkout(m, 1)
    assert {ln["sku"]: (ln["discounts"]["platform_coupon"], ln["amount_fen"]) for ln in c["lines"]} == {
        103: (4999, 1), 101: (7, 0), 104: (3, 0)}
    assert [(o["merchant"], o["amount_fen"]) for o in c["orders"]] == [(20, 1), (30, 0)]
    assert c["discounts"] == disc(deal_fen=20000 + 1992 + 347, platform=5009)


def test_store_coupon_takes_at_most_its_merchants_amount():
    m = fresh()
    run_ok(m, [template("t", kind="store", merchant=10, discount_fen=5000), grant("g", 1),
               co("c", [(102, 2), (101, 1)], coupons=[1])])
    c = check_checkout(m, 1)  # merchant 10's lines are 200 fen: the coupon gives 200, not 5000
    assert c["discounts"] == disc(store=200) and c["amount_fen"] == 1999
    assert [o["amount_fen"] for o in c["orders"]] == [0, 1999]


def test_store_coupon_shares_over_its_merchants_lines():
    m = fresh()
    run_ok(m, [template("t", kind="store", merchant=30, discount_fen=300), grant("g", 1),
               co("c", [(104, 2), (102, 1), (101, 1)], coupons=[1])])
    # stored order 102 (10); 104 (700), 101 (1999) of 30: 300*700//2699 = 77, 300*1999//2699 = 222, +1 on 101
    c = check_checkout(m, 1)
    assert {ln["sku"]: ln["discounts"]["store_coupon"] for ln in c["lines"]} == {104: 77, 102: 0, 101: 223}


def test_two_platform_coupons_each_on_what_the_one_before_left():
    m = fresh()
    run_ok(m, [template("a", discount_fen=1500), template("b", discount_fen=1000, min_spend_fen=499),
               grant("g1", 1), grant("g2", 2), co("c", [(101, 1)], coupons=[1, 2])])
    # 1999 - 1500 = 499 >= 499: min(1000, 499) = 499, less the 1 fen a checkout always costs
    c = check_checkout(m, 1)
    assert c["discounts"] == disc(platform=1998) and c["amount_fen"] == 1
    assert m.keys["c"][1]["body"]["amount_fen"] == 1


def test_a_checkout_always_costs_a_fen_whatever_its_coupons():
    m = fresh()  # sku 102: 100 fen, merchant 10; a store coupon bigger than the line
    run_ok(m, [template("s", kind="store", merchant=10, discount_fen=500), grant("g", 1),
               co("c", [(102, 1)], coupons=[1])])
    c = check_checkout(m, 1)
    assert c["discounts"] == disc(store=99) and c["amount_fen"] == 1
    assert code_of(m.execute([pay("p", 1, 1)], T0)[0]) == "ok"


def test_deal_price_is_the_only_price_while_open():
    m = fresh()
    run_ok(m, [deal("d", 104, price_fen=300, qty=2, per_buyer_max=2, start=T0, until=T0 + HOUR)], T0 - 1)
    run_ok(m, [co("before", [(104, 1)])], T0 - 1)
    run_ok(m, [co("during", [(104, 2)])], T0)
    assert got(m.deal(1))["reserved"] == 2 and got(m.deal(1))["left"] == 0
    run_ok(m, [co("after", [(104, 1)])], T0 + HOUR)
    assert "discounts" not in check_checkout(m, 1)
    assert check_checkout(m, 2)["discounts"] == disc(deal_fen=2 * 50) and got(m.checkout(2))["amount_fen"] == 600
    assert "discounts" not in check_checkout(m, 3)


def test_checkout_without_discount_is_shown_as_before():
    m = fresh()
    run_ok(m, [threshold_cmd("th", every_fen=50000, off_fen=1), co("c", [(101, 1)], coupons=[])])
    assert got(m.checkout(1))["amount_fen"] == 1999 and "list_fen" not in got(m.checkout(1))
    assert m.keys["c"][1]["body"] == {"checkout": 1, "amount_fen": 1999,
                                      "orders": [{"order": 1, "merchant": 30, "amount_fen": 1999}],
                                      "status": "reserved", "expires_at": T0 + TIMEOUT}
    check_checkout(m, 1)


# --- creating commands: answers, views, ids ----------------------------------------------


def test_template_answer_is_its_view():
    m = fresh()
    rs = run_ok(m, [template("a", kind="store", merchant=20, discount_fen=800, min_spend_fen=5000, budget_count=3,
                             budget_fen=2000, per_buyer_max=2),
                    template("b", discount_fen=100, budget_count=10)])
    assert rs[0] == {"status": 201, "body": {
        "template": 1, "kind": "store", "merchant": 20, "discount_fen": 800, "min_spend_fen": 5000,
        "budget_count": 3, "budget_fen": 2000, "per_buyer_max": 2, "grant_from": T0 - HOUR,
        "grant_until": T0 + HOUR, "use_from": T0 - HOUR, "use_until": T0 + 2 * HOUR, "granted": 0, "used": 0,
        "discount_given_fen": 0, "budget_count_left": 3, "budget_fen_left": 2000}}
    assert m.coupon_template(1) == rs[0]["body"]
    b = m.coupon_template(2)
    assert b is not None and b["template"] == 2 and b["merchant"] is None
    assert b["budget_fen"] is None and b["budget_fen_left"] is None and b["per_buyer_max"] == 1
    assert m.coupon_template(3) is None


def test_grant_answer_is_the_coupon_view_and_budget_counts_down():
    m = fresh()
    run_ok(m, [template("t", kind="store", merchant=10, discount_fen=800, budget_fen=2000, per_buyer_max=3)])
    rs = run_ok(m, [grant("g1", 1, buyer=5, source="game:ar"), grant("g2", 1, buyer=5)], T0 + 7)
    assert rs[0]["body"] == {
        "coupon": 1, "template": 1, "kind": "store", "merchant": 10, "buyer": 5, "source": "game:ar",
        "status": "held", "discount_fen": 800, "min_spend_fen": 0, "use_from": T0 - HOUR,
        "use_until": T0 + 2 * HOUR, "granted_at": T0 + 7, "checkout": None}
    t = m.coupon_template(1)
    assert t is not None
    assert (t["granted"], t["budget_count_left"], t["budget_fen_left"]) == (2, 98, 2000 - 1600)
    assert m.stats()["promotions"]["coupons_granted"] == 2


def test_buyer_coupons_newest_first():
    m = fresh()
    run_ok(m, [template("t", per_buyer_max=5), grant("a", 1, buyer=3), grant("b", 1, buyer=4),
               grant("c", 1, buyer=3)])
    mine = m.buyer_coupons(3)
    assert mine["buyer"] == 3 and [c["coupon"] for c in mine["coupons"]] == [3, 1]
    assert mine["coupons"][0] == m.coupon(3)
    assert m.buyer_coupons(99) == {"buyer": 99, "coupons": []}
    assert m.coupon(4) is None


def test_deal_and_threshold_answers_are_their_views():
    m = fresh()
    rs = run_ok(m, [deal("d", 101, price_fen=999, qty=10, per_buyer_max=2, kind="livestream"),
                    threshold_cmd("t", every_fen=30000, off_fen=3000, merchants=[30, 10])])
    assert rs[0]["body"] == {"deal": 1, "sku": 101, "kind": "livestream", "price_fen": 999, "qty": 10,
                             "per_buyer_max": 2, "from": T0 - HOUR, "until": T0 + HOUR, "sold": 0, "reserved": 0,
                             "left": 10, "sold_out_at": None} == m.deal(1)
    assert rs[1]["body"] == {"threshold": 1, "every_fen": 30000, "off_fen": 3000, "merchants": [30, 10],
                             "from": T0 - HOUR, "until": T0 + HOUR} == m.threshold_discount(1)
    assert m.deal(2) is None and m.threshold_discount(2) is None


def test_refused_commands_take_no_id():
    m = fresh()
    rs = m.execute([template("a", kind="store", merchant=11), template("b"), deal("c", UNKNOWN_SKU, 1, 1),
                    deal("d", 101, 1000, 1), grant("e", 9), grant("f", 1)], T0)
    assert codes(rs) == ["unknown_merchant", "ok", "unknown_sku", "ok", "unknown_template", "ok"]
    assert rs[1]["body"]["template"] == 1 and rs[3]["body"]["deal"] == 1 and rs[5]["body"]["coupon"] == 1


# --- shapes (400, nothing remembered) -------------------------------------------------


def without(cmd: dict, *names: str) -> dict:
    return {k: v for k, v in cmd.items() if k not in names}


def with_(cmd: dict, **changes) -> dict:
    return {**copy.deepcopy(cmd), **changes}


TPL = template("k", kind="store", merchant=10)
TPL_P = template("k")
THR = threshold_cmd("k", every_fen=1000, off_fen=100, merchants=[10])
DEAL = deal("k", 101, 1000, 5)
GRANT = grant("k", 1)
CO = co("k", [(101, 1)], coupons=[1])
MAX_MS = 4_102_444_800_000

SHAPES = [
    ("tpl kind", with_(TPL, kind="shop"), "invalid_template"),
    ("tpl kind missing", without(TPL, "kind"), "invalid_template"),
    ("tpl store without merchant", without(TPL, "merchant"), "invalid_template"),
    ("tpl store merchant 0", with_(TPL, merchant=0), "invalid_template"),
    ("tpl platform with merchant", with_(TPL_P, merchant=10), "invalid_template"),
    ("tpl platform merchant null", with_(TPL_P, merchant=None), "invalid_template"),
    ("tpl discount 0", with_(TPL, discount_fen=0), "invalid_template"),
    ("tpl discount > 1e12", with_(TPL, discount_fen=10**12 + 1), "invalid_template"),
    ("tpl min_spend missing", without(TPL, "min_spend_fen"), "invalid_template"),
    ("tpl min_spend -1", with_(TPL, min_spend_fen=-1), "invalid_template"),
    ("tpl budget_count -1", with_(TPL, budget_count=-1), "invalid_template"),
    ("tpl budget_count > 1e9", with_(TPL, budget_count=10**9 + 1), "invalid_template"),
    ("tpl budget_fen below discount", with_(TPL, discount_fen=1000, budget_fen=999), "invalid_template"),
    ("tpl budget_fen > 1e18", with_(TPL, budget_fen=10**18 + 1), "invalid_template"),
    ("tpl budget_fen null", with_(TPL, budget_fen=None), "invalid_template"),
    ("tpl per_buyer 0", with_(TPL, per_buyer_max=0), "invalid_template"),
    ("tpl per_buyer 1001", with_(TPL, per_buyer_max=1001), "invalid_template"),
    ("tpl time negative", with_(TPL, grant_from=-1), "invalid_template"),
    ("tpl time past 2100", with_(TPL, use_until=MAX_MS + 1), "invalid_template"),
    ("tpl time str", with_(TPL, use_from=str(T0)), "invalid_template"),
    ("tpl grant window empty", with_(TPL, grant_until=T0 - HOUR), "invalid_template"),
    ("tpl use window empty", with_(TPL, use_from=T0 + 2 * HOUR), "invalid_template"),
    ("tpl grants after use", with_(TPL, grant_from=T0 + 2 * HOUR, grant_until=T0 + 3 * HOUR), "invalid_template"),
    ("thr every 0", with_(THR, every_fen=0), "invalid_threshold"),
    ("thr every > 1e12", with_(THR, every_fen=10**12 + 1), "invalid_threshold"),
    ("thr off = every", with_(THR, off_fen=1000), "invalid_threshold"),
    ("thr off 0", with_(THR, off_fen=0), "invalid_threshold"),
    ("thr merchants not list", with_(THR, merchants=10), "invalid_threshold"),
    ("thr merchants repeated", with_(THR, merchants=[10, 10]), "invalid_threshold"),
    ("thr merchants 0", with_(THR, merchants=[0]), "invalid_threshold"),
    ("thr merchants 65", with_(THR, merchants=list(range(1, 66))), "invalid_threshold"),
    ("thr from = until", with_(THR, until=T0 - HOUR), "invalid_threshold"),
    ("thr from missing", without(THR, "from"), "invalid_threshold"),
    ("deal sku 0", with_(DEAL, sku=0), "invalid_deal"),
    ("deal sku str", with_(DEAL, sku="101"), "invalid_deal"),
    ("deal price 0", with_(DEAL, price_fen=0), "invalid_deal"),
    ("deal qty -1", with_(DEAL, qty=-1), "invalid_deal"),
    ("deal qty > 1e9", with_(DEAL, qty=10**9 + 1), "invalid_deal"),
    ("deal per_buyer 1000", with_(DEAL, per_buyer_max=1000), "invalid_deal"),
    ("deal per_buyer missing", without(DEAL, "per_buyer_max"), "invalid_deal"),
    ("deal kind", with_(DEAL, kind="auction"), "invalid_deal"),
    ("deal until before from", with_(DEAL, until=T0 - 2 * HOUR), "invalid_deal"),
    ("grant template 0", with_(GRANT, template=0), "invalid_request"),
    ("grant template missing", without(GRANT, "template"), "invalid_request"),
    ("grant buyer str", with_(GRANT, buyer="7"), "invalid_request"),
    ("grant source empty", with_(GRANT, source=""), "invalid_request"),
    ("grant source 33", with_(GRANT, source="s" * 33), "invalid_request"),
    ("grant source not ascii", with_(GRANT, source="红包"), "invalid_request"),
    ("grant source control", with_(GRANT, source="a\tb"), "invalid_request"),
    ("grant source missing", without(GRANT, "source"), "invalid_request"),
    ("co coupons not list", with_(CO, coupons=1), "invalid_request"),
    ("co coupons null", with_(CO, coupons=None), "invalid_request"),
    ("co coupons 9", with_(CO, coupons=list(range(1, 10))), "invalid_request"),
    ("co coupons repeated", with_(CO, coupons=[1, 1]), "invalid_request"),
    ("co coupon 0", with_(CO, coupons=[0]), "invalid_request"),
    ("co coupon str", with_(CO, coupons=["1"]), "invalid_request"),
    ("co lines before coupons", with_(CO, lines=[], coupons=[0]), "empty_checkout"),
    ("co channel before coupons", with_(CO, channel="tv", coupons=[0]), "invalid_channel"),
    ("key before fields", with_(TPL, idempotency_key="", kind="x"), "invalid_idempotency_key"),
]


@pytest.mark.parametrize("name,cmd,code", SHAPES, ids=[s[0] for s in SHAPES])
def test_shape_errors(name, cmd, code):
    m = fresh()
    (r,) = m.execute([cmd], T0)
    assert code_of(r) == code and r["status"] == HTTP_STATUS[Result[code]] == 400
    assert m.keys == {} and m.templates == {} and m.thresholds == {} and m.deals == {} and m.coupons == {}


def test_bounds_accepted():
    m = fresh()
    rs = m.execute([
        template("a", discount_fen=10**12, min_spend_fen=10**12, budget_count=10**9, budget_fen=10**18,
                 per_buyer_max=1000, grant_from=0, grant_until=MAX_MS, use_from=0, use_until=MAX_MS),
        template("b", kind="store", merchant=30, budget_fen=1000, discount_fen=1000, budget_count=1,
                 grant_from=5, grant_until=6, use_from=0, use_until=6),
        threshold_cmd("c", every_fen=10**12, off_fen=10**12 - 1, merchants=[], start=0, until=1),
        deal("d", 101, price_fen=1998, qty=10**9, per_buyer_max=999, start=0, until=MAX_MS, kind="group_buy"),
        grant("e", 1, buyer=2**63 - 1, source=" ~" * 16),
        co("f", [(102, 1)], coupons=[8, 7, 6, 5, 4, 3, 2, 1]),  # the shape passes; the coupons are unknown
    ], T0)
    assert codes(rs) == ["ok", "ok", "ok", "ok", "ok", "unknown_coupon"]


def test_defaults_and_absent_lists_are_the_same_body():
    m = fresh()
    rs = m.execute([template("a"), template("a", per_buyer_max=1, budget_fen=0),
                    threshold_cmd("b", 1000, 10), threshold_cmd("b", 1000, 10, merchants=[]),
                    co("c", [(101, 1)]), co("c", [(101, 1)], coupons=[])], T0)
    assert codes(rs) == ["ok"] * 6 and rs[0] == rs[1] and rs[2] == rs[3] and rs[4] == rs[5]
    assert len(m.templates) == len(m.thresholds) == len(m.checkouts) == 1


def test_another_coupon_list_is_another_body():
    m = fresh()
    run_ok(m, [template("t", per_buyer_max=3), grant("g1", 1), grant("g2", 1)])
    rs = m.execute([co("c", [(101, 1)], coupons=[1, 2]), co("c", [(101, 1)], coupons=[2, 1]),
                    co("c", [(101, 1)]), co("c", [(101, 1)], coupons=[1, 2])], T0)
    assert codes(rs) == ["ok", "idempotency_key_reused", "idempotency_key_reused", "ok"] and rs[3] == rs[0]


def test_grant_retry_answers_the_first_coupon():
    m = fresh()
    run_ok(m, [template("t")])
    rs = run_ok(m, [grant("g", 1), grant("g", 1)])
    assert rs[0] == rs[1] and len(m.coupons) == 1
    assert code_of(m.execute([grant("g", 1, source="other")], T0)[0]) == "idempotency_key_reused"


# --- refusals of state ----------------------------------------------------------------


def last(m: ReferenceFestival, setup: list[dict], cmd: dict, now: int = T0) -> dict:
    run_ok(m, setup, now)
    (r,) = m.execute([cmd], now)
    return r


def test_template_unknown_merchant_is_remembered():
    m = fresh()
    r = last(m, [], template("t", kind="store", merchant=40))
    assert code_of(r) == "unknown_merchant" and r["status"] == 404
    assert m.keys["t"][1] == r and m.execute([template("t", kind="store", merchant=40)], T0) == [r]


def test_threshold_refusals():
    m = fresh()
    assert code_of(last(m, [], threshold_cmd("a", 1000, 1, merchants=[10, 40, 50]))) == "unknown_merchant"
    run_ok(m, [threshold_cmd("b", 1000, 1, start=T0, until=T0 + HOUR)])
    assert code_of(last(m, [], threshold_cmd("c", 1000, 1, start=T0 + HOUR - 1, until=T0 + 2 * HOUR))) == \
        "window_overlaps"
    assert code_of(last(m, [], threshold_cmd("d", 1000, 1, start=0, until=T0 + 1))) == "window_overlaps"
    # windows that only touch never have two open at once
    run_ok(m, [threshold_cmd("e", 1000, 1, start=T0 + HOUR, until=T0 + 2 * HOUR),
               threshold_cmd("f", 1000, 1, start=0, until=T0)])
    assert len(m.thresholds) == 3 and got(m.threshold_discount(3))["from"] == 0
    assert code_of(last(m, [], threshold_cmd("g", 1000, 1, merchants=[40], start=0, until=T0))) == "unknown_merchant"


def test_deal_refusals_in_order():
    m = fresh()
    assert code_of(last(m, [], deal("a", UNKNOWN_SKU, 5000, 1, start=0, until=1))) == "unknown_sku"
    r = last(m, [], deal("b", 101, 1999, 1))  # not below the list price
    assert code_of(r) == "invalid_deal" and r["status"] == 400 and m.keys["b"][1] == r  # remembered
    run_ok(m, [deal("c", 101, 1000, 1, start=T0, until=T0 + HOUR)])
    assert code_of(last(m, [], deal("d", 101, 1000, 1, start=T0 - 5, until=T0 + 1))) == "window_overlaps"
    assert code_of(last(m, [], deal("e", 101, 1999, 1, start=T0 - 5, until=T0 + 1))) == "invalid_deal"
    run_ok(m, [deal("f", 104, 100, 1, start=T0 - 5, until=T0 + 1),  # another SKU may overlap
               deal("g", 101, 1000, 1, start=T0 + HOUR, until=T0 + 2 * HOUR)])  # touching


@pytest.mark.parametrize("setup,cmd,now,code", [
    ([], grant("g", 1), T0, "unknown_template"),
    ([template("t", grant_from=T0 + 1)], grant("g", 1), T0, "not_in_window"),
    ([template("t", grant_until=T0)], grant("g", 1), T0, "not_in_window"),
    ([template("t", budget_count=1), grant("g0", 1, buyer=1)], grant("g", 1), T0, "budget_exhausted"),
    ([template("t", discount_fen=400, budget_fen=1000, per_buyer_max=5), grant("g0", 1), grant("g1", 1)],
     grant("g", 1, buyer=8), T0, "budget_exhausted"),  # 3 x 400 would pass 1000
    ([template("t", per_buyer_max=2), grant("g0", 1), grant("g1", 1)], grant("g", 1), T0, "buyer_limit_reached"),
    ([template("t", budget_count=1), grant("g0", 1)], grant("g", 1), T0, "budget_exhausted"),  # before the limit
])
def test_grant_refusals(setup, cmd, now, code):
    m = fresh()
    r = last(m, setup, cmd, now)
    assert code_of(r) == code and r["status"] == HTTP_STATUS[Result[code]]
    assert m.keys[cmd["idempotency_key"]][1] == r


def test_buyer_limit_counts_coupons_in_every_state():
    m = fresh()
    run_ok(m, [template("t", per_buyer_max=3), grant("g1", 1), grant("g2", 1), grant("g3", 1),
               co("a", [(101, 1)], coupons=[1]), pay("p", 1, 999), co("b", [(101, 1)], coupons=[2])])
    assert [got(m.coupon(i))["status"] for i in (1, 2, 3)] == ["used", "reserved", "held"]
    assert code_of(m.execute([grant("g4", 1)], T0)[0]) == "buyer_limit_reached"
    run_ok(m, [grant("g5", 1, buyer=8)])


def coupon_setup() -> list[dict]:
    """template 1: platform, 500 off; 2: store of 30, 300 off; 3: store of 10 (min spend 1000);
    4: platform usable from T0 + 1 h; coupons 1..4 of buyer 7 in that order, coupon 5 of buyer 8
    (template 1), coupon 6 of buyer 7 (template 2)"""
    return [
        template("t1", discount_fen=500), template("t2", kind="store", merchant=30, discount_fen=300, per_buyer_max=2),
        template("t3", kind="store", merchant=10, discount_fen=50, min_spend_fen=1000),
        template("t4", use_from=T0 + HOUR),
        grant("g1", 1), grant("g2", 2), grant("g3", 3), grant("g4", 4), grant("g5", 1, buyer=8), grant("g6", 2),
    ]


@pytest.mark.parametrize("cmds,code", [
    ([co("c", [(UNKNOWN_SKU, 1)], coupons=[99])], "unknown_sku"),
    ([co("c", [(101, 1)], coupons=[99])], "unknown_coupon"),
    ([co("c", [(101, 1)], coupons=[1, 99])], "unknown_coupon"),
    ([co("c", [(101, 1)], coupons=[5])], "not_your_coupon"),
    ([co("c", [(101, 1)], coupons=[99, 5])], "unknown_coupon"),
    ([co("a", [(101, 1)], coupons=[1]), co("c", [(104, 1)], coupons=[1])], "coupon_not_held"),
    ([co("a", [(101, 1)], coupons=[1]), pay("p", 1, 1499), co("c", [(104, 1)], coupons=[1])], "coupon_not_held"),
    ([co("c", [(101, 1)], coupons=[4])], "not_in_window"),
    ([co("c", [(102, 1)], coupons=[2])], "coupon_merchant_not_in_checkout"),
    ([co("c", [(101, 1)], coupons=[2, 6])], "two_store_coupons"),
    ([co("c", [(101, 1)], coupons=[6, 5])], "not_your_coupon"),  # the coupons in the order given
    ([co("c", [(101, 1), (102, 1)], coupons=[3])], "min_spend_not_met"),
    ([co("c", [(101, 1), (105, 1)], coupons=[3])], "ok"),  # 12345 >= 1000
    ([co("c", [(105, 1), (106, 1)], coupons=[99])], "unknown_coupon"),  # before out_of_stock
    ([co("c", [(105, 1), (106, 1)], coupons=[3])], "out_of_stock"),
])
def test_checkout_coupon_refusals(cmds, code):
    m = fresh()
    run_ok(m, coupon_setup())
    rs = m.execute(cmds, T0)
    assert codes(rs)[:-1] == ["ok"] * (len(cmds) - 1)
    assert code_of(rs[-1]) == code
    if code == "ok":
        check_checkout(m, len(m.checkouts))
        return
    assert rs[-1]["status"] == HTTP_STATUS[Result[code]]
    assert m.keys["c"][1] == rs[-1]  # remembered
    assert len(m.checkouts) == sum(1 for c in cmds if c["op"] == "checkout") - 1  # and nothing reserved:
    assert sum(1 for c in m.coupons.values() if c["state"] == "reserved") == sum(
        1 for c in m.checkouts.values() if c["status"] == "reserved" and c["coupons"])


def test_coupon_window_ends_expired():
    m = fresh()
    run_ok(m, [template("t", use_until=T0 + HOUR), grant("g", 1)])
    assert got(m.coupon(1))["status"] == "held"
    r = m.execute([co("c", [(101, 1)], coupons=[1])], T0 + HOUR)[0]
    assert code_of(r) == "coupon_expired" and got(m.coupon(1))["status"] == "expired"
    assert m.buyer_coupons(7)["coupons"][0]["status"] == "expired"


def test_refusals_change_nothing():
    m = fresh()
    run_ok(m, [*coupon_setup(), deal("d", 104, 300, 2, per_buyer_max=2)])
    before = copy.deepcopy((m.coupons, m.deals, m.skus, m.deal_units_of))
    rs = m.execute([co("a", [(104, 2), (102, 1)], coupons=[2, 3]),  # min spend of coupon 3 (store 10)
                    co("b", [(104, 2), (106, 1)], coupons=[2])], T0)  # out of stock: 106
    assert codes(rs) == ["min_spend_not_met", "out_of_stock"]
    assert (m.coupons, m.deals, m.skus, m.deal_units_of) == before and m.checkouts == {}


def test_min_spend_in_pricing_order_against_the_amount_at_its_step():
    m = fresh()
    run_ok(m, [template("p", discount_fen=100, min_spend_fen=1900), template("s", kind="store", merchant=30,
                                                                            discount_fen=200, min_spend_fen=2000),
               grant("g1", 1), grant("g2", 2)])
    # store coupon first whatever the order given: 1999 >= 2000 fails before the platform one is looked at
    assert code_of(m.execute([co("a", [(101, 1)], coupons=[1, 2])], T0)[0]) == "min_spend_not_met"
    # with 104 the store base is 2349; then the platform base is 2349 - 200 = 2149 >= 1900
    run_ok(m, [co("b", [(101, 1), (104, 1)], coupons=[1, 2])])
    assert check_checkout(m, 1)["discounts"] == disc(store=200, platform=100)


def test_platform_min_spend_counts_the_threshold_and_deals():
    m = fresh()
    run_ok(m, [deal("d", 101, 1500, 3), threshold_cmd("t", 1000, 100), template("p", min_spend_fen=1400),
               grant("g", 1)])
    # 1999 -> deal 1500 -> threshold 1 x 100 -> 1400 >= 1400
    run_ok(m, [co("a", [(101, 1)], coupons=[1])])
    assert check_checkout(m, 1)["discounts"] == disc(deal_fen=499, thr=100, platform=1000)
    run_ok(m, [cancel("x", 1), template("q", min_spend_fen=1401), grant("h", 2)])
    assert code_of(m.execute([co("b", [(101, 1)], coupons=[2])], T0)[0]) == "min_spend_not_met"


# --- deals ---------------------------------------------------------------------------


def test_deal_sold_out_and_buyer_limit_line_by_line():
    m = fresh({104: 10})
    run_ok(m, [deal("d1", 104, 300, qty=3, per_buyer_max=2), deal("d2", 101, 1000, qty=5, per_buyer_max=1)])
    rs = m.execute([
        co("a", [(104, 1), (104, 2)], buyer=1),  # 3 units asked of the deal, per buyer 2
        co("b", [(104, 2)], buyer=1),
        co("c", [(104, 1)], buyer=1),  # buyer 1 has 2 reserved
        co("d", [(104, 1), (101, 1)], buyer=2),  # 1 left of 104; 101 fine
        co("e", [(101, 2), (104, 1)], buyer=3),  # 101 is the first line: buyer limit before 104 sold out
        co("f", [(104, 1)], buyer=3),
    ], T0)
    assert codes(rs) == ["deal_buyer_limit", "ok", "deal_buyer_limit", "ok", "deal_buyer_limit", "deal_sold_out"]
    assert m.deal(1) == {**got(m.deal(1)), "reserved": 3, "sold": 0, "left": 0, "sold_out_at": T0}
    assert m.stats()["promotions"]["deals_sold_out"] == 1


def test_deal_sold_out_before_out_of_stock_and_out_of_stock_with_units_left():
    m = fresh()
    run_ok(m, [deal("d", 105, 10000, qty=5, per_buyer_max=5), deal("e", 103, 20000, qty=1, per_buyer_max=5)])
    assert code_of(m.execute([co("a", [(105, 2)])], T0)[0]) == "out_of_stock"  # stock 1, deal 5
    assert code_of(m.execute([co("b", [(103, 2), (105, 9)])], T0)[0]) == "deal_sold_out"


def test_deal_units_come_back_on_cancel_expiry_and_refund():
    m = fresh()
    run_ok(m, [deal("deal", 104, 300, qty=2, per_buyer_max=2)])
    run_ok(m, [co("a", [(104, 2)]), cancel("x", 1), co("b", [(104, 2)])])
    assert (got(m.deal(1))["reserved"], got(m.deal(1))["left"], got(m.deal(1))["sold_out_at"]) == (2, 0, T0)
    m.execute([], T0 + TIMEOUT)  # checkout 2 expires
    assert got(m.checkout(2))["status"] == "expired" and got(m.deal(1))["left"] == 2
    assert got(m.deal(1))["sold_out_at"] == T0  # the first moment stays
    run_ok(m, [co("c", [(104, 2)]), pay("p", 3, 600)], T0 + TIMEOUT)
    assert (got(m.deal(1))["sold"], got(m.deal(1))["reserved"], got(m.deal(1))["left"]) == (2, 0, 0)
    assert code_of(m.execute([co("d", [(104, 1)], buyer=8)], T0 + TIMEOUT)[0]) == "deal_sold_out"
    run_ok(m, [refund("r", 3)], T0 + TIMEOUT)
    assert (got(m.deal(1))["sold"], got(m.deal(1))["left"]) == (0, 2)
    run_ok(m, [co("e", [(104, 2)])], T0 + TIMEOUT)  # the buyer's units came back too
    assert m.stats()["promotions"]["deals_sold_out"] == 1
    sku = got(m.sku(104))
    assert sku["stock"] + sku["reserved"] + sku["sold"] == sku["stocked"]


def test_deal_qty_takes_out_only_units_left_and_units_added_reopen_a_sold_out_deal():
    m = fresh()
    run_ok(m, [deal("d", 104, 300, qty=2, per_buyer_max=2), co("a", [(104, 1)])])
    assert codes(m.execute([deal_qty("q1", 1, -2), deal_qty("q2", 9, 1)], T0)) == ["deal_sold_out", "unknown_deal"]
    assert run_ok(m, [deal_qty("q3", 1, -1)])[0] == {"status": 200, "body": {"deal": 1, "qty": -1, "deal_qty": 1}}
    assert (got(m.deal(1))["left"], got(m.deal(1))["sold_out_at"]) == (0, None)  # taken out: not sold out
    run_ok(m, [deal_qty("q4", 1, 1), co("b", [(104, 1)])])  # the last unit taken by a checkout: sold out
    assert got(m.deal(1))["sold_out_at"] == T0 and m.stats()["promotions"]["deals_sold_out"] == 1
    run_ok(m, [deal_qty("q5", 1, 1)], T0 + 1)
    assert (got(m.deal(1))["left"], got(m.deal(1))["sold_out_at"]) == (1, None)
    assert m.stats()["promotions"]["deals_sold_out"] == 0
    assert [code_of(r) for r in m.execute([deal_qty("q6", 1, 0), deal_qty("q7", 1, 10**9 + 1)], T0 + 1)] == [
        "invalid_quantity", "invalid_quantity"]


def test_coupon_budget_takes_out_only_coupons_not_granted_and_leaves_budget_fen():
    m = fresh()
    run_ok(m, [template("t", budget_count=2, budget_fen=3000, per_buyer_max=5), grant("g1", 1)])
    assert codes(m.execute([coupon_budget("b1", 1, -2), coupon_budget("b2", 2, 1)], T0)) == [
        "budget_exhausted", "unknown_template"]
    assert run_ok(m, [coupon_budget("b3", 1, -1)])[0]["body"] == {"template": 1, "count": -1, "budget_count": 1}
    assert code_of(m.execute([grant("g2", 1)], T0)[0]) == "budget_exhausted"
    run_ok(m, [coupon_budget("b4", 1, 5), grant("g3", 1), grant("g4", 1)])
    assert code_of(m.execute([grant("g5", 1)], T0)[0]) == "budget_exhausted"  # budget_fen: 3 coupons' worth
    t = got(m.coupon_template(1))
    assert (t["budget_count"], t["granted"], t["budget_fen"], t["budget_count_left"]) == (6, 3, 3000, 3)
    # the create command's retry answers the template as created
    assert run_ok(m, [template("t", budget_count=2, budget_fen=3000, per_buyer_max=5)])[0]["body"]["budget_count"] == 2


def test_paid_deal_units_count_for_the_buyer_limit():
    m = fresh()
    run_ok(m, [deal("d", 104, 300, qty=4, per_buyer_max=1), co("a", [(104, 1)]), pay("p", 1, 300)])
    assert code_of(m.execute([co("b", [(104, 1)])], T0)[0]) == "deal_buyer_limit"
    run_ok(m, [co("c", [(104, 1)], buyer=8)])


# --- coupon lifecycle -----------------------------------------------------------------


def test_coupon_held_reserved_held_reserved_used_stays_used_after_refund():
    m = fresh()
    run_ok(m, [template("t", discount_fen=500), grant("g", 1)])
    run_ok(m, [co("a", [(101, 1)], coupons=[1])])
    assert (got(m.coupon(1))["status"], got(m.coupon(1))["checkout"]) == ("reserved", 1)
    run_ok(m, [cancel("x", 1)])
    assert (got(m.coupon(1))["status"], got(m.coupon(1))["checkout"]) == ("held", None)
    run_ok(m, [co("b", [(101, 1)], coupons=[1])])
    m.execute([], T0 + TIMEOUT)
    assert (got(m.coupon(1))["status"], got(m.coupon(1))["checkout"]) == ("held", None)
    run_ok(m, [co("c", [(101, 1), (102, 1)], coupons=[1]), pay("p", 3, 2099 - 500)], T0 + TIMEOUT)
    assert (got(m.coupon(1))["status"], got(m.coupon(1))["checkout"]) == ("used", 3)
    t = m.coupon_template(1)
    assert t is not None and (t["granted"], t["used"], t["discount_given_fen"]) == (1, 1, 500)
    run_ok(m, [refund("r1", 3), refund("r2", 4)], T0 + TIMEOUT)  # checkout 3's orders
    assert got(m.coupon(1))["status"] == "used" and m.stats()["promotions"]["coupons_used"] == 1
    assert m.stats()["promotions"]["discounts_fen"] == disc(platform=500)  # refunds take nothing back
    assert m.ledger()["accounts"]["marketing"] == 0 and m.ledger()["accounts"]["escrow"] == 0
    check_ledger(m)


def test_reserved_coupon_pays_after_its_window_and_comes_back_expired():
    m = fresh()
    run_ok(m, [template("t", use_until=T0 + 10), grant("g", 1), co("a", [(101, 1)], coupons=[1]),
               grant("h", 1, buyer=8), co("b", [(101, 1)], buyer=8, coupons=[2])])
    run_ok(m, [pay("p", 1, 999), cancel("x", 2)], T0 + 20)
    assert got(m.coupon(1))["status"] == "used"
    assert (got(m.coupon(2))["status"], got(m.coupon(2))["checkout"]) == ("expired", None)


def test_refund_of_one_order_returns_its_platform_share_only():
    m = fresh()
    run_ok(m, [template("t", discount_fen=1000), grant("g", 1), co("a", [(102, 2), (101, 1)], coupons=[1])])
    # 1000 over 200 (order 1) and 1999 (order 2), base 2199: 90 and 909, +1 on 101
    c = check_checkout(m, 1)
    assert [o["discounts"]["platform_coupon"] for o in c["orders"]] == [90, 910]
    run_ok(m, [pay("p", 1, 1199), refund("r", 1)])
    assert m.ledger()["accounts"] == {"buyers": -1199 + 110, "escrow": 1999, "merchants": 0, "platform": 0,
                                      "marketing": -1000 + 90}
    assert m.stats()["refunded_fen"] == 110
    run_ok(m, [confirm("f", 2)])  # settles 1089 + 910 = 1999: escrow empties
    assert m.ledger()["accounts"]["escrow"] == 0
    check_ledger(m)
