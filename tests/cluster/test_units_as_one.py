"""Units with quotas against one engine (issue 25): random commands (the
promotions' too), random quota transfers and rebalancing rounds across units
keep every invariant and give the same answers as one engine holding all the
stock, except that a unit may refuse a checkout another unit could have
served (a stranded refusal: out of stock, or a deal's share sold out), which
is then undone in the one engine so both go on alike.  A grant finds its
unit's share of the template's budget topped up from another unit's first,
as the rebalancer would have done.

Invariants after every step: in every unit the ledger sums to zero and no
SKU is sold beyond its quota; the units' quotas, sales and available stock
sum to the one engine's; their GMV, counts and ledgers sum to its; the
templates' budgets, grants and uses and the deals' units sum to its."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from model import (
    SMALL_SKUS,
    T0,
    UNKNOWN_SKU,
    cancel,
    co,
    confirm,
    coupon_budget,
    deal,
    grant,
    pay,
    refund,
    restock,
    small_catalog,
    template,
    threshold,
)
from units_in_process import UnitsInProcess  # tests/cluster/units_in_process.py

from double11 import Festival
from double11.cluster.rebalancer import Transfer
from double11.cluster.slots import global_ids
from double11.config import FestivalConfig
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results
from double11.errors import Result

CONFIG = FestivalConfig(payment_timeout_ms=60_000, commission_bps=250)
SKUS = sorted(SMALL_SKUS)
OK, OUT_OF_STOCK, DEAL_SOLD_OUT = int(Result.ok), int(Result.out_of_stock), int(Result.deal_sold_out)
STRANDED = (OUT_OF_STOCK, DEAL_SOLD_OUT)  # a unit's share ran out
COUPON_REFS = {int(c) for c in (Result.unknown_coupon, Result.not_your_coupon, Result.coupon_not_held,
                                Result.not_in_window, Result.coupon_expired, Result.min_spend_not_met,
                                Result.coupon_merchant_not_in_checkout, Result.two_store_coupons)}
DAY_MS = 86_400_000
STOCK = {101: 9, 102: 12, 103: 4, 104: 7, 105: 3, 106: 0}

pick = st.integers(0, 5)  # the newest checkout or order, the one before, ...; past the oldest: an unknown id
step = st.one_of(
    st.tuples(st.just("checkout"), st.integers(1, 12),
              st.lists(st.tuples(st.sampled_from([*SKUS, SKUS[0], SKUS[1], UNKNOWN_SKU]), st.integers(1, 3)),
                       min_size=1, max_size=3)),
    st.tuples(st.just("pay"), pick, st.booleans()),
    st.tuples(st.just("cancel"), pick),
    st.tuples(st.just("confirm"), pick),
    st.tuples(st.just("refund"), pick),
    st.tuples(st.just("restock"), st.sampled_from(SKUS), st.integers(1, 4)),
    st.tuples(st.just("transfer"), st.sampled_from(SKUS), st.integers(0, 2), st.integers(0, 2), st.integers(1, 5)),
    st.tuples(st.just("rebalance")),
    st.tuples(st.just("wait"), st.integers(1_000, 70_000)),
    st.tuples(st.just("retry"), pick),
    # promotions: a template (store of merchant 10, or platform), a deal, a threshold; grants; coupons spent
    st.tuples(st.just("template"), st.booleans(), st.integers(100, 3_000), st.integers(0, 5),
              st.sampled_from([0, 2_000, 5_000]), st.integers(1, 2)),
    st.tuples(st.just("deal"), st.sampled_from(SKUS[:5]), st.integers(0, 5), st.integers(1, 3)),
    st.tuples(st.just("threshold"), st.integers(1, 3)),
    st.tuples(st.just("grant"), st.integers(0, 3), st.integers(1, 12)),
    st.tuples(st.just("spend"), st.integers(0, 2), st.booleans(),
              st.lists(st.tuples(st.sampled_from(SKUS[:5]), st.integers(1, 2)), min_size=1, max_size=2)),
)


class Both:
    """The cluster in process and one engine, fed the same commands."""

    def __init__(self, units: int) -> None:
        catalog = small_catalog(STOCK)
        self.cluster = UnitsInProcess(catalog, units, CONFIG, T0)
        self.one = Festival.open(catalog, config=CONFIG, clock_start_ms=T0)
        self.checkouts: list[tuple[int, int, int]] = []  # (cluster id, one's id, payable)
        self.orders: list[tuple[int, int]] = []
        self.sent: list[tuple[dict, dict]] = []  # (cluster's command, one's), for retries
        self.first_code: dict[str, int] = {}  # by idempotency key: the cluster's first answer
        self.coupons: list[tuple[int, int, int]] = []  # (cluster id, one's id, buyer)
        self.coupon_ids: dict[int, int] = {}  # the cluster's coupon id -> the one engine's
        self.thresholds = 0
        # promotions every run starts with: a platform template, a store one capped by its fen budget, a deal
        for command in (template("t1", discount_fen=100, budget_count=5, per_buyer_max=2, grant_until=T0 + DAY_MS,
                                 use_until=T0 + DAY_MS),
                        template("t2", kind="store", merchant=10, discount_fen=50, budget_count=9, budget_fen=150,
                                 grant_until=T0 + DAY_MS, use_until=T0 + DAY_MS),
                        deal("d1", 104, 300, 7, per_buyer_max=2)):
            self.both(command, command)
        self.stranded = 0
        self.stranded_orders = 0
        self.keys = 0

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def one_executes(self, command: dict) -> dict[str, np.ndarray]:
        return decode_results(self.one.execute_binary(encode_commands([command]).to_bytes(), self.cluster.now_ms))

    def one_executes_none(self) -> None:
        self.one.execute_binary(encode_commands([]).to_bytes(), self.cluster.now_ms)

    def both(self, mine: dict, ones: dict) -> None:
        self.sent.append((mine, ones))
        got = self.cluster.execute([mine])
        want = self.one_executes(ones)
        c, w = int(got["code"][0]), int(want["code"][0])
        self.first_code.setdefault(mine["idempotency_key"], c)
        if mine["op"] == "checkout" and c in STRANDED and w == OK:
            # stranded: the buyer's unit lacked what another unit held; undo it in the one engine
            self.stranded += 1
            self.stranded_orders += int(want["orders"][0])  # made in the one engine (then cancelled)
            undone = self.one_executes(cancel(self.key(), int(want["ref"][0])))
            assert int(undone["code"][0]) == OK
            return
        if mine["op"] == "checkout" and c == DEAL_SOLD_OUT and w != OK:
            return  # the unit's share of the deal ran short before a later check refused it: both refused
        assert c == w, (mine, Result(c).name, Result(w).name)
        if c != OK:
            if c == int(Result.unknown_sku) or (mine["op"] == "checkout" and c in COUPON_REFS):
                mapped = self.coupon_ids if c in COUPON_REFS else {}
                assert mapped.get(int(got["ref"][0]), int(got["ref"][0])) == want["ref"][0]
            elif mine["op"] in ("coupon_template", "deal", "threshold_discount"):
                assert got["ref"][0] == want["ref"][0]
            return
        if mine["op"] == "grant":
            self.coupons.append((int(got["ref"][0]), int(want["ref"][0]), mine["buyer"]))
            self.coupon_ids[int(got["ref"][0])] = int(want["ref"][0])
            return
        if mine["op"] in ("coupon_template", "deal", "threshold_discount"):
            assert got["ref"][0] == want["ref"][0]  # the same id in every unit as in the one engine
            return
        assert got["amount_fen"][0] == want["amount_fen"][0]
        if mine["op"] == "checkout" and (int(got["ref"][0]), int(want["ref"][0])) not in {
                (a, b) for a, b, _ in self.checkouts}:
            self.checkouts.append((int(got["ref"][0]), int(want["ref"][0]), int(got["amount_fen"][0])))
            assert got["orders"][0] == want["orders"][0]
            for k in range(int(got["orders"][0])):
                self.orders.append((int(got["first_order"][0]) + k, int(want["first_order"][0]) + k))

    def _named(self, items: list, p: int) -> tuple[int, int]:
        if p < len(items):
            return items[-1 - p][0], items[-1 - p][1]
        return 999_999, 999_999  # unknown in both

    def run(self, s: tuple) -> None:
        kind = s[0]
        if kind == "checkout":
            command = co(self.key(), s[2], buyer=s[1])
            self.both(command, command)
        elif kind == "pay":
            mine, ones = self._named(self.checkouts, s[1])
            amount = self.checkouts[-1 - s[1]][2] if s[1] < len(self.checkouts) else 100
            amount += 0 if s[2] else 1
            key = self.key()
            self.both(pay(key, mine, amount), pay(key, ones, amount))
        elif kind == "cancel":
            mine, ones = self._named(self.checkouts, s[1])
            key = self.key()
            self.both(cancel(key, mine), cancel(key, ones))
        elif kind in ("confirm", "refund"):
            make = confirm if kind == "confirm" else refund
            mine, ones = self._named(self.orders, s[1])
            key = self.key()
            self.both(make(key, mine), make(key, ones))
        elif kind == "restock":
            command = restock(self.key(), s[1], s[2])
            self.both(command, command)
        elif kind == "transfer":
            n = self.cluster.count()
            giver, taker = s[2] % n, s[3] % n
            if giver != taker:
                self.cluster.rebalancer.carry_out(Transfer(self.key(), s[1], giver, taker, s[4]))
        elif kind == "rebalance":
            self.cluster.rebalancer.round()
        elif kind == "wait":
            self.cluster.now_ms += s[1]
            # time passes in every unit as in the one engine: what is due expires everywhere
            self.cluster.tick()
            self.one_executes_none()
        elif kind == "template":
            store, discount, count, budget_fen, per_buyer = s[1:]
            command = template(self.key(), kind="store" if store else "platform", merchant=10 if store else None,
                               discount_fen=discount, budget_count=count, budget_fen=budget_fen or None,
                               per_buyer_max=per_buyer, grant_until=T0 + DAY_MS, use_until=T0 + DAY_MS)
            self.both(command, command)
        elif kind == "deal":
            price = SMALL_SKUS[s[1]][2] - 1
            command = deal(self.key(), s[1], price, s[2], per_buyer_max=s[3], start=T0 + self.keys * 10,
                           until=T0 + self.keys * 10 + 5)
            command["until"] = T0 + DAY_MS if s[2] % 2 else command["until"]  # some overlap: window_overlaps
            self.both(command, command)
        elif kind == "threshold":
            self.thresholds += 1
            start = T0 + self.thresholds * DAY_MS * s[1]
            command = threshold(self.key(), 500, 50, start=start, until=start + DAY_MS)
            self.both(command, command)
        elif kind == "grant":
            template_id = s[1] + 1
            self.top_up(template_id, s[2])
            command = grant(self.key(), template_id, buyer=s[2])
            self.both(command, command)
        elif kind == "spend":
            if s[1] < len(self.coupons):
                mine, ones, buyer = self.coupons[-1 - s[1]]
            else:  # unknown in both: the cluster's names a unit it does not have
                mine, ones, buyer = int(global_ids(7, np.array(999_999))), 999_999, 5
                self.coupon_ids[mine] = ones
            buyer = buyer if s[2] else buyer % 12 + 1  # sometimes another buyer's coupon
            key = self.key()
            self.both(co(key, s[3], buyer=buyer, coupons=[mine]), co(key, s[3], buyer=buyer, coupons=[ones]))
        elif kind == "retry" and s[1] < len(self.sent):
            mine, ones = self.sent[-1 - s[1]]
            if mine["op"] != "checkout":  # a retried checkout answers its first result in both
                self.both(mine, ones)
            else:
                got = self.cluster.execute([mine])
                assert int(got["code"][0]) == self.first_code[mine["idempotency_key"]]

    def top_up(self, template_id: int, buyer: int) -> None:
        """One coupon of the template's budget moved to the buyer's unit if
        it has none left and another unit has (the rebalancer's move)."""
        units = self.cluster.festivals
        if not 1 <= template_id <= units[0].engine.promos.coupon_templates.size:
            return
        left = [int(t["budget_count"] - t["granted"]) for t in
                (f.engine.promos.coupon_templates.rows[template_id - 1] for f in units)]
        home = int(self.cluster.slot_map.unit_of_buyer(np.array([buyer]))[0])
        giver = int(np.argmax(left))
        if left[home] == 0 and left[giver] > 0:
            key = self.key()
            assert self.cluster.execute_on(giver, coupon_budget(key, template_id, -1)) == OK
            assert self.cluster.execute_on(home, coupon_budget(key, template_id, 1)) == OK

    def check(self) -> None:
        units = self.cluster.festivals
        for festival in units:
            assert festival.ledger()["sum"] == 0
            e = festival.engine
            assert (e.available >= 0).all() and (e.sku_sold <= e.sku_stocked).all()
        one = self.one.engine
        # no transfer is in flight between steps: the quotas sum to the stock
        assert np.array_equal(sum(f.engine.sku_stocked for f in units), one.sku_stocked)
        assert np.array_equal(sum(f.engine.sku_sold for f in units), one.sku_sold)
        # a checkout expires in the one engine when it does in its unit: reserved stock agrees too
        assert np.array_equal(sum(f.engine.available for f in units), one.available)
        stats = [f.stats() for f in units]
        want = self.one.stats()
        assert sum(s["orders"] for s in stats) + self.stranded_orders == want["orders"]
        for name in ("gmv_fen", "payments", "refunded_fen", "settled_fen", "buyers", "new_buyers"):
            assert sum(s[name] for s in stats) == want[name], name
        accounts = [f.ledger()["accounts"] for f in units]
        for name, value in self.one.ledger()["accounts"].items():
            assert sum(a[name] for a in accounts) == value, name
        self.check_promotions()

    def check_promotions(self) -> None:
        units = [f.engine.promos for f in self.cluster.festivals]
        one = self.one.engine.promos
        n = one.coupon_templates.size
        assert all(u.coupon_templates.size == n and u.deals.size == one.deals.size and
                   u.thresholds.size == one.thresholds.size for u in units)
        mine = [u.coupon_templates.rows[:n] for u in units]
        ones = one.coupon_templates.rows[:n]
        for name in ("granted", "used", "given"):
            assert np.array_equal(sum(t[name] for t in mine), ones[name]), name
        # the shares sum to what the template may grant: its count, capped by its fen budget
        grantable = np.where(ones["budget_fen"] > 0, np.minimum(ones["budget_count"],
                             ones["budget_fen"] // np.maximum(ones["discount"], 1)), ones["budget_count"])
        assert np.array_equal(sum(t["budget_count"] for t in mine), grantable)
        assert all((t["granted"] <= t["budget_count"]).all() for t in mine)
        d = one.deals.size
        for name in ("qty", "taken", "sold"):
            assert np.array_equal(sum(u.deals.rows[:d][name] for u in units), one.deals.rows[:d][name]), name
        assert all((u.deals.rows[:d]["taken"] <= u.deals.rows[:d]["qty"]).all() for u in units)
        for k in range(4):  # the discounts given, by kind
            assert sum(int(u.figures.data[k]) for u in units) == int(one.figures.data[k])

    def close(self) -> None:
        self.cluster.close()
        self.one.close()


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(units=st.integers(2, 3), steps=st.lists(step, min_size=1, max_size=40))
def test_units_with_quotas_answer_as_one_engine(units: int, steps: list[tuple]) -> None:
    both = Both(units)
    try:
        for s in steps:
            note(f"step {s}")
            both.run(s)
            both.check()
    finally:
        both.close()


def test_a_hot_sku_sells_out_in_every_unit_with_the_rebalancer() -> None:
    """Buyers of one unit only buy a hot SKU: the rebalancer moves the other
    units' quota to them, so it sells out everywhere, few refusals stranded."""
    both = Both(3)
    try:
        buyers = [b for b in range(1, 400) if int(both.cluster.slot_map.unit_of_buyer(np.array([b]))[0]) == 0]
        sold = 0
        for b in buyers:
            both.run(("checkout", b, [(102, 1)]))
            both.run(("pay", 0, True))
            both.run(("rebalance",))
            both.check()
            sold = int(sum(f.engine.sku_sold[1] for f in both.cluster.festivals))
            if sold == STOCK[102]:
                break
        assert sold == STOCK[102]
        assert all(int(f.engine.available[1]) == 0 for f in both.cluster.festivals)
        assert both.stranded <= 2, both.stranded
    finally:
        both.close()


def test_a_hot_template_and_deal_follow_their_buyers_with_the_rebalancer() -> None:
    """Buyers of one unit only take a template's coupons and a deal's units:
    the rebalancer moves the other units' shares to them, so every coupon is
    granted and every deal unit sold, few refused while others held some."""
    both = Both(3)
    try:
        units = both.cluster.festivals
        buyers = iter(b for b in range(1, 2_000) if int(both.cluster.slot_map.unit_of_buyer(np.array([b]))[0]) == 0)

        def granted() -> int:
            return sum(int(f.engine.promos.coupon_templates.rows[0]["granted"]) for f in units)

        def taken() -> int:
            return sum(int(f.engine.promos.deals.rows[0]["taken"]) for f in units)

        stranded = 0
        while granted() < 5:  # the platform template t1: 5 coupons split over the 3 units
            got = both.cluster.execute([grant(both.key(), 1, buyer=next(buyers))])
            stranded += int(got["code"][0]) != OK
            both.cluster.rebalancer.round()
        while taken() < 7:  # the deal d1 on SKU 104: 7 units
            got = both.cluster.execute([co(both.key(), [(104, 1)], buyer=next(buyers))])
            stranded += int(got["code"][0]) != OK
            both.cluster.rebalancer.round()
        assert all(int(f.engine.promos.deals.rows[0]["qty"]) == int(f.engine.promos.deals.rows[0]["taken"])
                   for f in units)
        assert stranded <= 2, stranded
    finally:
        both.close()
