"""Unit tests of the reference model itself (tests/model/reference.py), one per rule / code."""

from __future__ import annotations

import copy

import pytest
from model import T0, UNKNOWN_SKU, cancel, co, code_of, confirm, pay, refund, restock, small_catalog
from model.reference import STATS_KEYS, ReferenceFestival

from double11.config import FestivalConfig
from double11.errors import Result
from double11.statuses import HTTP_STATUS

TIMEOUT = FestivalConfig().payment_timeout_ms


def fresh(**config) -> ReferenceFestival:
    return ReferenceFestival(small_catalog(), FestivalConfig(**config))


def run(m: ReferenceFestival, *batches) -> list[dict]:
    """batches: (now_ms, [commands]); returns all results flat."""
    out = []
    for now, cmds in batches:
        out.extend(m.execute(cmds, now))
    return out


def last_code(m, *batches) -> str:
    return code_of(run(m, *batches)[-1])


def check_invariants(m: ReferenceFestival) -> None:
    for s in m.skus.values():
        assert s["stock"] >= 0 and s["reserved"] >= 0 and s["sold"] >= 0
        assert s["stock"] + s["reserved"] + s["sold"] == s["stocked"]
    assert m.ledger()["sum"] == 0
    assert m.stats()["gmv_fen"] == m.paid_amount_total()


# --- success bodies --------------------------------------------------------------


def test_checkout_body_orders_in_ascending_merchant_order():
    m = fresh()
    (r,) = m.execute([co("a", [(101, 1), (102, 2)])], T0)  # 101: merchant 30, 102: merchant 10
    assert r == {
        "status": 201,
        "body": {
            "checkout": 1,
            "amount_fen": 1999 + 200,
            "orders": [{"order": 1, "merchant": 10, "amount_fen": 200},
                       {"order": 2, "merchant": 30, "amount_fen": 1999}],
            "status": "reserved",
            "expires_at": T0 + TIMEOUT,
        },
    }
    assert m.sku(101) == {"sku": 101, "name": "SKU 101", "merchant": 30, "merchant_name": "Thirty Store", "brand": 1,
                          "brand_name": "Apple", "price_fen": 1999, "stock": 2, "reserved": 1, "sold": 0, "stocked": 3}
    assert m.checkout(1) == {
        "checkout": 1,
        "buyer": 7,
        "country": "CN",
        "channel": "mobile",
        "status": "reserved",
        "amount_fen": 2199,
        "created_at": T0,
        "expires_at": T0 + TIMEOUT,
        "lines": [
            {"sku": 101, "qty": 1, "price_fen": 1999, "amount_fen": 1999, "order": 2},
            {"sku": 102, "qty": 2, "price_fen": 100, "amount_fen": 200, "order": 1},
        ],
        "orders": [
            {"order": 1, "merchant": 10, "amount_fen": 200, "status": "reserved"},
            {"order": 2, "merchant": 30, "amount_fen": 1999, "status": "reserved"},
        ],
    }
    assert m.order(2) == {
        "order": 2,
        "checkout": 1,
        "buyer": 7,
        "merchant": 30,
        "status": "reserved",
        "amount_fen": 1999,
        "lines": [{"sku": 101, "qty": 1, "price_fen": 1999, "amount_fen": 1999}],
    }


def test_ids_dense_and_failed_checkouts_take_no_id():
    m = fresh()
    rs = m.execute(
        [
            co("a", [(102, 1)]),
            co("b", [(105, 2)]),  # out of stock
            co("c", [(UNKNOWN_SKU, 1)]),
            co("d", [(103, 1), (101, 1), (102, 1)]),
        ],
        T0,
    )
    assert [r["status"] for r in rs] == [201, 409, 404, 201]
    assert rs[3]["body"]["checkout"] == 2
    assert [o["order"] for o in rs[3]["body"]["orders"]] == [2, 3, 4]
    assert [o["merchant"] for o in rs[3]["body"]["orders"]] == [10, 20, 30]
    assert m.stats()["checkouts"] == 2 and m.stats()["orders"] == 4


def test_pay_cancel_confirm_refund_restock_bodies():
    m = fresh()
    rs = run(
        m,
        (T0, [co("a", [(101, 1), (102, 2)]), pay("p", 1, 2199), confirm("c", 2), refund("r", 1), restock("s", 106, 5)]),
        (T0, [co("b", [(104, 1)]), cancel("x", 2)]),
    )
    assert rs[1] == {"status": 200, "body": {"checkout": 1, "status": "paid", "amount_fen": 2199}}
    assert rs[2] == {"status": 200,
                     "body": {"order": 2, "status": "settled", "merchant_fen": 1999 - 39, "commission_fen": 39}}
    assert rs[3] == {"status": 200, "body": {"order": 1, "status": "refunded", "amount_fen": 200}}
    assert rs[4] == {"status": 200, "body": {"sku": 106, "qty": 5}}
    assert rs[6] == {"status": 200, "body": {"checkout": 2, "status": "cancelled"}}
    check_invariants(m)


# --- shape errors (400, not remembered) --------------------------------------------

GOOD = co("k", [(101, 1)])


def with_(cmd, **changes):
    c = copy.deepcopy(cmd)
    for k, v in changes.items():
        if v is ...:
            c.pop(k, None)
        else:
            c[k] = v
    return c


SHAPES = [
    ("not an object", ["checkout"], "invalid_request"),
    ("no op", with_(GOOD, op=...), "unknown_op"),
    ("bad op", with_(GOOD, op="buy"), "unknown_op"),
    ("op not str", with_(GOOD, op=1), "unknown_op"),
    ("no key", with_(GOOD, idempotency_key=...), "invalid_idempotency_key"),
    ("empty key", with_(GOOD, idempotency_key=""), "invalid_idempotency_key"),
    ("key too long", with_(GOOD, idempotency_key="k" * 129), "invalid_idempotency_key"),
    ("key not str", with_(GOOD, idempotency_key=5), "invalid_idempotency_key"),
    ("buyer str", with_(GOOD, buyer="7"), "invalid_request"),
    ("buyer bool", with_(GOOD, buyer=True), "invalid_request"),
    ("buyer negative", with_(GOOD, buyer=-1), "invalid_request"),
    ("buyer 0", with_(GOOD, buyer=0), "invalid_request"),
    ("buyer > id_max", with_(GOOD, buyer=2**63), "invalid_request"),
    ("buyer missing", with_(GOOD, buyer=...), "invalid_request"),
    ("country unknown", with_(GOOD, country="XX"), "invalid_country"),
    ("country lower", with_(GOOD, country="cn"), "invalid_country"),
    ("country alpha3", with_(GOOD, country="CHN"), "invalid_country"),
    ("country missing", with_(GOOD, country=...), "invalid_country"),
    ("channel", with_(GOOD, channel="tv"), "invalid_channel"),
    ("channel missing", with_(GOOD, channel=...), "invalid_channel"),
    ("lines not list", with_(GOOD, lines={"sku": 101, "qty": 1}), "invalid_request"),
    ("lines empty", with_(GOOD, lines=[]), "empty_checkout"),
    ("lines 17", with_(GOOD, lines=[{"sku": 101, "qty": 1}] * 17), "too_many_lines"),
    ("line not object", with_(GOOD, lines=[101]), "invalid_request"),
    ("line sku str", with_(GOOD, lines=[{"sku": "101", "qty": 1}]), "invalid_request"),
    ("qty 0", with_(GOOD, lines=[{"sku": 101, "qty": 0}]), "invalid_quantity"),
    ("qty 1000", with_(GOOD, lines=[{"sku": 101, "qty": 1000}]), "invalid_quantity"),
    ("qty float", with_(GOOD, lines=[{"sku": 101, "qty": 1.0}]), "invalid_quantity"),
    ("qty missing", with_(GOOD, lines=[{"sku": 101}]), "invalid_quantity"),
    ("amount 0", pay("k", 1, 0), "invalid_amount"),
    ("amount negative", pay("k", 1, -5), "invalid_amount"),
    ("amount str", pay("k", 1, "100"), "invalid_amount"),
    ("pay checkout 0", pay("k", 0, 100), "invalid_request"),
    ("line sku 0", with_(GOOD, lines=[{"sku": 0, "qty": 1}]), "invalid_request"),
    ("amount > id_max", pay("k", 1, 2**63), "invalid_amount"),
    ("pay checkout str", pay("k", "1", 100), "invalid_request"),
    ("cancel checkout missing", {"op": "cancel", "idempotency_key": "k"}, "invalid_request"),
    ("confirm order str", confirm("k", "1"), "invalid_request"),
    ("refund order float", refund("k", 1.0), "invalid_request"),
    ("restock qty 0", restock("k", 101, 0), "invalid_quantity"),
    ("restock qty > 1e9", restock("k", 101, 1_000_000_001), "invalid_quantity"),
    ("restock sku str", restock("k", "101", 1), "invalid_request"),
]


@pytest.mark.parametrize("name,cmd,code", SHAPES, ids=[s[0] for s in SHAPES])
def test_shape_errors(name, cmd, code):
    m = fresh()
    (r,) = m.execute([cmd], T0)
    assert code_of(r) == code
    assert r["status"] == HTTP_STATUS[Result[code]] == 400
    assert isinstance(r["body"]["error"]["message"], str)
    assert m.keys == {} and m.checkouts == {}


def test_boundaries_accepted():
    m = ReferenceFestival(small_catalog({102: 20}), FestivalConfig())
    rs = m.execute(
        [
            co("k" * 128, [(102, 1)] * 16, buyer=2**63 - 1),
            restock("r", 101, 1_000_000_000),
            co("q", [(101, 999)], country="HK", channel="pc"),
        ],
        T0,
    )
    assert [code_of(r) for r in rs] == ["ok", "ok", "ok"]
    assert rs[0]["status"] == 201 and rs[0]["body"]["amount_fen"] == 1600


def test_sixteen_lines_of_one_sku_check_total_stock():
    m = fresh()
    assert code_of(m.execute([co("a", [(102, 1)] * 6)], T0)[0]) == "out_of_stock"  # stock 5
    assert code_of(m.execute([co("b", [(102, 1)] * 5)], T0)[0]) == "ok"
    assert m.sku(102)["reserved"] == 5 and m.sku(102)["stock"] == 0
    assert len(m.checkout(1)["lines"]) == 5 and len(m.order(1)["lines"]) == 5


def test_shape_error_is_not_remembered():
    m = fresh()
    rs = m.execute([with_(GOOD, channel="tv"), GOOD], T0)
    assert [code_of(r) for r in rs] == ["invalid_channel", "ok"]


def test_shape_error_wins_over_taken_key():
    m = fresh()
    rs = m.execute([GOOD, with_(GOOD, lines=[])], T0)
    assert [code_of(r) for r in rs] == ["ok", "empty_checkout"]


def test_extra_fields_ignored():
    m = fresh()
    rs = m.execute([GOOD, with_(GOOD, note="hi")], T0)
    assert rs[0] == rs[1] and m.stats()["checkouts"] == 1


# --- references, state -------------------------------------------------------------


def test_unknown_sku_before_out_of_stock():
    m = fresh()
    assert last_code(m, (T0, [co("a", [(105, 5), (UNKNOWN_SKU, 1)])])) == "unknown_sku"
    assert last_code(m, (T0, [co("b", [(105, 5), (102, 1)])])) == "out_of_stock"
    assert last_code(m, (T0, [restock("c", UNKNOWN_SKU, 1)])) == "unknown_sku"
    # nothing reserved by the failures
    assert all(s["reserved"] == 0 for s in m.skus.values())


def test_out_of_stock_is_all_or_nothing():
    m = fresh()
    rs = m.execute([co("a", [(102, 2), (103, 3)])], T0)
    assert code_of(rs[0]) == "out_of_stock"
    assert m.sku(102)["stock"] == 5 and m.sku(102)["reserved"] == 0
    assert last_code(m, (T0, [co("b", [(106, 1)])])) == "out_of_stock"  # stock 0 from the start


@pytest.mark.parametrize(
    "setup,cmd,code",
    [
        ([], pay("p", 2, 100), "unknown_checkout"),
        ([pay("p0", 1, 100)], pay("p", 1, 101), "already_paid"),
        ([pay("p0", 1, 100)], pay("p", 1, 100), "already_paid"),
        ([cancel("c0", 1)], pay("p", 1, 100), "cancelled"),
        ([cancel("c0", 1)], pay("p", 1, 5), "cancelled"),
        ([], pay("p", 1, 99), "amount_mismatch"),
        ([], cancel("c", 2), "unknown_checkout"),
        ([pay("p0", 1, 100)], cancel("c", 1), "already_paid"),
        ([cancel("c0", 1)], cancel("c", 1), "cancelled"),
        ([], confirm("f", 2), "unknown_order"),
        ([], confirm("f", 1), "not_paid"),
        ([cancel("c0", 1)], confirm("f", 1), "not_paid"),
        ([pay("p0", 1, 100), confirm("f0", 1)], confirm("f", 1), "already_settled"),
        ([pay("p0", 1, 100), refund("r0", 1)], confirm("f", 1), "already_refunded"),
        ([], refund("r", 9), "unknown_order"),
        ([], refund("r", 1), "not_paid"),
        ([cancel("c0", 1)], refund("r", 1), "not_paid"),
        ([pay("p0", 1, 100), confirm("f0", 1)], refund("r", 1), "already_settled"),
        ([pay("p0", 1, 100), refund("r0", 1)], refund("r", 1), "already_refunded"),
        ([pay("p0", 1, 100), refund("r0", 1)], pay("p", 1, 100), "already_paid"),
        ([pay("p0", 1, 100), refund("r0", 1)], cancel("c", 1), "already_paid"),
    ],
)
def test_state_codes(setup, cmd, code):
    m = fresh()
    rs = m.execute([co("a", [(102, 1)])] + setup + [cmd], T0)
    assert [code_of(r) for r in rs[:-1]] == ["ok"] * (1 + len(setup))
    assert code_of(rs[-1]) == code
    assert rs[-1]["status"] == HTTP_STATUS[Result[code]]
    check_invariants(m)


def test_expiry_at_first_batch_at_or_past_expires_at():
    m = fresh(payment_timeout_ms=1000)
    m.execute([co("a", [(101, 2)])], T0)
    assert m.execute([], T0 + 999) == [] and m.checkout(1)["status"] == "reserved"
    assert m.sku(101)["reserved"] == 2
    m.execute([], T0 + 1000)
    assert m.checkout(1)["status"] == "expired"
    assert [o["status"] for o in m.checkout(1)["orders"]] == ["expired"]
    assert (m.sku(101)["stock"], m.sku(101)["reserved"], m.sku(101)["sold"]) == (3, 0, 0)
    rs = m.execute([pay("p", 1, 3998), cancel("c", 1), confirm("f", 1), refund("r", 1)], T0 + 1000)
    assert [code_of(r) for r in rs] == ["expired", "expired", "not_paid", "not_paid"]


def test_expiry_only_at_batch_start():
    m = fresh(payment_timeout_ms=0)
    rs = m.execute([co("a", [(101, 1)]), pay("p", 1, 1999)], T0)
    assert [code_of(r) for r in rs] == ["ok", "ok"]
    m.execute([co("b", [(101, 1)])], T0)
    assert m.checkout(2)["status"] == "reserved"
    assert code_of(m.execute([pay("q", 2, 1999)], T0)[0]) == "expired"  # the next batch, same now


def test_time_never_goes_backwards():
    m = fresh(payment_timeout_ms=1000)
    m.execute([co("a", [(101, 1)])], T0 + 5000)
    m.execute([co("b", [(101, 1)])], T0)  # now stays T0 + 5000
    assert m.checkout(2)["created_at"] == T0 + 5000
    assert m.checkout(2)["expires_at"] == T0 + 6000
    m.execute([], T0 + 6000)
    assert m.checkout(1)["status"] == m.checkout(2)["status"] == "expired"


def test_stock_moves():
    m = fresh()
    run(m, (T0, [co("a", [(101, 2), (102, 1)]), pay("p", 1, 2 * 1999 + 100)]))
    assert (m.sku(101)["stock"], m.sku(101)["reserved"], m.sku(101)["sold"]) == (1, 0, 2)
    run(m, (T0, [refund("r", 2)]))  # order 2: merchant 30, sku 101
    assert (m.sku(101)["stock"], m.sku(101)["reserved"], m.sku(101)["sold"]) == (3, 0, 0)
    assert m.sku(102)["sold"] == 1
    run(m, (T0, [restock("s", 101, 4)]))
    assert m.sku(101)["stock"] == 7 and m.sku(101)["stocked"] == 7
    check_invariants(m)


# --- idempotency --------------------------------------------------------------------


def test_retry_returns_first_result_even_after_state_changed():
    m = fresh()
    first = m.execute([co("a", [(101, 1)])], T0)[0]
    m.execute([pay("p", 1, 1999)], T0)
    again = m.execute([co("a", [(101, 1)])], T0 + TIMEOUT * 3)
    assert again == [first] and m.stats()["checkouts"] == 1
    assert m.sku(101)["sold"] == 1 and m.sku(101)["stock"] == 2


def test_retry_of_an_error_returns_the_error():
    m = fresh()
    rs = m.execute([pay("p", 1, 100), co("a", [(102, 1)]), pay("p", 1, 100)], T0)
    assert [code_of(r) for r in rs] == ["unknown_checkout", "ok", "unknown_checkout"]
    assert m.checkout(1)["status"] == "reserved"


def test_same_key_other_body():
    m = fresh()
    rs = m.execute(
        [
            co("a", [(101, 1), (102, 1)]),
            co("a", [(102, 1), (101, 1)]),  # other line order: another body
            pay("a", 1, 2099),  # keys are global across ops
            co("a", [(101, 1), (102, 1)]),  # still the first result
        ],
        T0,
    )
    assert [code_of(r) for r in rs] == ["ok", "idempotency_key_reused", "idempotency_key_reused", "ok"]
    assert rs[1]["status"] == 409 and rs[3] == rs[0]
    assert m.checkout(1)["status"] == "reserved"


def test_results_are_copies():
    m = fresh()
    r = m.execute([co("a", [(101, 1)])], T0)[0]
    r["body"]["checkout"] = 99
    assert m.execute([co("a", [(101, 1)])], T0)[0]["body"]["checkout"] == 1


# --- ledger and stats ---------------------------------------------------------------


def test_ledger_double_entry():
    m = fresh(commission_bps=250)
    run(m, (T0, [co("a", [(101, 1), (102, 3)]), pay("p", 1, 2299), confirm("f", 2), refund("r", 1)]))
    commission = 1999 * 250 // 10000
    assert m.ledger() == {
        "accounts": {"buyers": -2299 + 300, "escrow": 0, "merchants": 1999 - commission, "platform": commission,
                     "marketing": 0},
        "sum": 0,
        "transfers": 4,
    }


def test_stats():
    m = fresh()
    run(
        m,
        (T0, [co("a", [(101, 1)], buyer=1), pay("p", 1, 1999)]),  # returning buyer, mobile
        (T0 + 3_600_000, [co("b", [(102, 2), (104, 1)], buyer=50, country="US", channel="pc"), pay("q", 2, 550)]),
        (T0 + 3_600_000, [co("c", [(102, 1)], buyer=50), pay("s", 3, 100), refund("r", 2), confirm("f", 3),
                          co("d", [(102, 1)])]),
    )
    st = m.stats()
    assert set(st) == {*STATS_KEYS, "promotions"}
    hours = [0] * 24
    hours[10] = 1999
    hours[11] = 650
    assert st == {
        "gmv_fen": 2649,
        "checkouts": 4,
        "orders": 5,
        "payments": 3,
        "mobile_gmv_fen": 2099,
        "buyers": 2,
        "new_buyers": 1,
        "countries": 2,
        "refunded_fen": 200,
        "settled_fen": 350,
        "gmv_by_hour_fen": hours,
        "promotions": {"discounts_fen": {"deal": 0, "store_coupon": 0, "threshold": 0, "platform_coupon": 0},
                       "coupons_granted": 0, "coupons_used": 0, "deals_sold_out": 0},
    }
    check_invariants(m)


def test_gmv_by_hour_wraps_at_utc8_midnight():
    m = fresh()
    run(m, (T0 - 10 * 3_600_000 - 1, [co("a", [(102, 1)]), pay("p", 1, 100)]))  # 23:59:59.999 UTC+8
    assert m.stats()["gmv_by_hour_fen"][23] == 100


def test_views_of_unknown_ids():
    m = fresh()
    assert m.sku(UNKNOWN_SKU) is None and m.checkout(1) is None and m.order(1) is None
    assert m.ledger() == {"accounts": {"buyers": 0, "escrow": 0, "merchants": 0, "platform": 0, "marketing": 0},
                          "sum": 0,
                          "transfers": 0}
