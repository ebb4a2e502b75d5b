"""Parts of `double11 bench` that can be checked without running it."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from double11 import limits
from double11.access.roles import Principal, Role
from double11.access.tokens import Verifier
from double11.bench import promotions as promo
from double11.bench import run as bench_run
from double11.bench.run import OfferSchedule, StolenTime
from double11.bench.workload import Workload
from double11.catalog.generate import generate_catalog
from double11.config import FestivalConfig
from double11.engine import area_commands
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine
from double11.errors import Result
from double11.promotions import audit, views
from double11.promotions.spec import GRANT


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_stolen_time_is_a_share_of_the_cpu_time_that_passed():
    stolen = StolenTime()
    work = sum(i * i for i in range(2_000_000))  # let some CPU time pass
    share = stolen.share()
    assert work > 0
    assert share is None or 0.0 <= share <= 1.0  # None only if no tick passed at all


def test_stolen_time_says_none_when_the_os_does_not_say(monkeypatch):
    monkeypatch.setattr(StolenTime, "_times", staticmethod(lambda: None))
    assert StolenTime().share() is None


class _Limits:
    """resource's open-files limit, as the bench sees it."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def getrlimit(self, which):
        return self.soft, self.hard

    def setrlimit(self, which, limits):
        self.soft, self.hard = limits


@pytest.mark.parametrize("soft, hard, connections, after", [
    (1024, 1_048_576, 2048, 2048 + bench_run.OPEN_FILES_BESIDE_CONNECTIONS),  # raised to what the load needs
    (1_048_576, 1_048_576, 2048, 1_048_576),  # already enough: left alone
    (1024, -1, 4096, 4096 + bench_run.OPEN_FILES_BESIDE_CONNECTIONS),  # no hard limit
])
def test_the_bench_raises_the_open_files_limit_for_its_connections(monkeypatch, soft, hard, connections, after):
    limits = _Limits(soft, hard)
    monkeypatch.setattr(bench_run.resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(bench_run.resource, "setrlimit", limits.setrlimit)
    monkeypatch.setattr(bench_run.resource, "RLIM_INFINITY", -1)
    bench_run.allow_open_files(connections)
    assert (limits.soft, limits.hard) == (after, hard)


def test_the_bench_says_when_the_hard_limit_is_too_low(monkeypatch):
    limits = _Limits(1024, 2048)
    monkeypatch.setattr(bench_run.resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(bench_run.resource, "setrlimit", limits.setrlimit)
    with pytest.raises(RuntimeError, match="--single-connections"):
        bench_run.allow_open_files(2048)
    assert (limits.soft, limits.hard) == (1024, 2048)  # unchanged


def test_the_offer_schedule_spaces_what_it_gives_out_at_its_rate_until_the_stop():
    schedule = OfferSchedule(start=10.0, stop=11.0, per_s=100)
    assert [schedule.take(40) for _ in range(3)] == pytest.approx([10.0, 10.4, 10.8])
    assert schedule.take(40) is None
    assert schedule.offered == 120  # what was refused was not counted
    assert schedule.take(1) is None


def test_the_offer_schedule_hands_out_each_slot_once_across_threads():
    schedule = OfferSchedule(start=0.0, stop=1e9, per_s=1_000)
    slots: list[float] = []

    def taker() -> None:
        for _ in range(500):
            slots.append(schedule.take(10))

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == [10 * k / 1_000 for k in range(2_000)]


def test_the_batch_load_is_refused_before_it_runs_when_its_server_would_not_fit_in_memory():
    gib = 2**30
    bench_run.check_batch_load_fits(900_000, 60, available_bytes=22 * gib)  # the default, on 24 GB
    bench_run.check_batch_load_fits(900_000, 60, available_bytes=None)  # the OS does not say: not checked
    with pytest.raises(ValueError, match=r"91,000,000 checkouts: about 28\.5 GiB.*lower --batch-orders-per-s"):
        bench_run.check_batch_load_fits(1_500_000, 60, available_bytes=22 * gib)
    with pytest.raises(ValueError, match="must be positive"):
        bench_run.check_batch_load_fits(0, 60, available_bytes=22 * gib)


def test_the_bench_says_why_it_will_not_run_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "memory_available_bytes", lambda: 2**30)
    args = argparse.Namespace(seconds=60.0, single_connections=None, batch_orders_per_s=None)
    assert bench_run.bench_main(args) == 2
    assert "lower --batch-orders-per-s or --seconds" in capsys.readouterr().err


# ---------------------------------------------------------------- the single loads with tokens


def test_the_tokens_cost_is_the_share_below_the_loads_without_them():
    figures = bench_run.tokens_figures(without=[100.0, 200.0], with_tokens=[90.0, 150.0],
                                       cpu_without=[40.0, 50.0], cpu_with=[50.0, 50.0])
    assert figures == {"single_orders_per_s_tokens": 120, "tokens_cost_share": 0.2,
                       "tokens_cost_pairs": [0.1, 0.25], "server_cpu_us_per_order": 45.0,
                       "server_cpu_us_per_order_tokens": 50.0, "tokens_server_cpu_share": 0.1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_servers_cpu_time_counts_its_children():
    # a child that burns 0.3 s of CPU time, says so, and waits (alive: one of our children)
    burn = ("import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
            "print(flush=True)\nsys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        child.stdout.readline()
        ours = time.process_time()
        assert bench_run.process_tree_cpu_s(os.getpid()) >= ours + 0.25  # ours and the child's (ticks are coarse)
    finally:
        child.communicate(timeout=60)


def test_each_buyer_of_the_pool_has_a_token_of_its_own(tmp_path):
    key = bytes(range(32))
    path = bench_run.buyer_tokens_file(key, tmp_path / "tokens.txt", buyers=50)
    lines = [line.split(" ") for line in path.read_text().splitlines()]
    assert len(lines) == 50 and len({buyer for buyer, _ in lines}) == 50
    verifier = Verifier([key])
    for buyer, token in lines:
        assert verifier.principal(f"Bearer {token}") == Principal(Role.buyer, int(buyer))


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Takes any POST, keeps its headers and body, answers 201."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the front
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        # one write: an answer in pieces waits for the client's delayed ACK
        self.wfile.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")

    def log_message(self, *args) -> None:
        pass


def _wrk_requests(tmp_path, tokens_file=None, walk=False) -> tuple[str, list[tuple[dict[str, str], dict]]]:
    """The requests wrk sends for a second with single_load's script, on one
    connection (so in the order it makes them): (the host it named,
    [(headers, JSON body)])."""
    recorder = type("Recorder", (_Recorder,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        script = tmp_path / "load.lua"
        script.write_text(bench_run.single_load_script(url, generate_catalog(merchants=5, skus=100, seed=1), 1,
                                                       tokens_file, walk))
        subprocess.run([shutil.which("wrk"), "-t1", "-c1", "-d1s", "-s", str(script), url + "/v1/checkouts"],
                       capture_output=True, check=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    return url.split("://")[1], [(headers, json.loads(body)) for headers, body in recorder.seen]


_NEEDS_WRK = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="the single loads are wrk's (the bench installs it)")


@_NEEDS_WRK
def test_the_single_load_sends_well_formed_checkouts_without_a_token(tmp_path):
    host, seen = _wrk_requests(tmp_path)
    assert len(seen) > 1
    for headers, body in seen:
        assert headers["host"] == host and headers["content-type"] == "application/json"
        assert "authorization" not in headers
        assert 1 <= body["buyer"] <= 50_000_000 and len(body["lines"]) == 1


@_NEEDS_WRK
@pytest.mark.parametrize("walk", [False, True])
def test_the_tokens_load_sends_each_buyer_with_its_own_token(tmp_path, walk):
    key = bytes(range(32))
    pool = bench_run.buyer_tokens_file(key, tmp_path / "tokens.txt", buyers=20)
    _, seen = _wrk_requests(tmp_path, pool, walk)
    assert len(seen) > 20  # the pool, and more
    verifier = Verifier([key])
    for headers, body in seen:
        assert verifier.principal(headers["authorization"]) == Principal(Role.buyer, body["buyer"])
    buyers = [int(line.split(" ")[0]) for line in pool.read_text().splitlines()]
    # walked: each in turn, every one before any twice (from where wrk's first request began)
    start = buyers.index(seen[0][1]["buyer"])
    walked = [buyers[(start + k) % len(buyers)] for k in range(len(seen))]
    assert ([body["buyer"] for _, body in seen] == walked) == walk


def test_the_tokens_load_runs_unless_skipped():
    from double11.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench"]).tokens is True
    assert parser.parse_args(["bench", "--no-tokens"]).tokens is False


# ---------------------------------------------------------------- the promotions mix
# A small festival: a generated catalog with stock to spare but for the flash deals' rows,
# the engine sized for a few rounds of the mix.
_PROMO_NOW = bench_run.FESTIVAL_START_MS


@pytest.fixture
def promo_catalog():
    catalog = generate_catalog(merchants=40, skus=3_000, seed=3)
    catalog.sku_stock = np.full(catalog.skus, 1_000_000, dtype=np.int64)
    catalog.sku_stock[:promo.FLASH_DEALS] = 400
    return catalog


@pytest.fixture
def promo_engine(promo_catalog):
    engine = Engine(promo_catalog, FestivalConfig(expected_checkouts=1 << 14))
    for setup in promo.setup_batches(promo_catalog):
        code, _ = engine.apply(setup, _PROMO_NOW)
        promo.check_setup(setup, code)
    return engine


def _mix_round(engine, catalog, n=1_500, seed=5):
    mix = promo.PromoMix(catalog, seed=seed)
    planned = mix.round(n)
    sent = promo.grant_ahead([planned], lambda grants: engine.apply(grants, _PROMO_NOW))[0]
    return mix, planned, sent


def _pay_accepted(engine, mix, sent, code, ref):
    ok = (code == Result.ok) & promo.checkouts_of(sent)
    paid, _ = engine.apply(mix.work.pays(ref[ok], promo.payable_fen(engine, ref[ok] - 1)), _PROMO_NOW + 20)
    return ok, paid


def test_the_promotions_setup_is_accepted_and_makes_what_the_mix_names(promo_engine, promo_catalog):
    engine, catalog = promo_engine, promo_catalog
    threshold = views.threshold(engine, 1)
    assert threshold is not None and threshold["merchants"] == []  # over all merchants
    assert (threshold["every_fen"], threshold["off_fen"]) == (promo.THRESHOLD_EVERY_FEN, promo.THRESHOLD_OFF_FEN)
    red = views.template(engine, promo.RED_PACKET_TEMPLATE)
    assert red is not None and red["kind"] == "platform" and red["min_spend_fen"] == 0
    # a store template per merchant, in the catalog's order, right after the red packet's
    for row in (0, catalog.merchants - 1):
        store = views.template(engine, promo.RED_PACKET_TEMPLATE + 1 + row)
        assert store is not None and store["kind"] == "store"
        assert store["merchant"] == int(catalog.merchant_id[row])
    assert views.template(engine, promo.RED_PACKET_TEMPLATE + 1 + catalog.merchants) is None
    for row in range(promo.FLASH_DEALS):
        deal = views.deal(engine, row + 1)
        assert deal is not None and deal["sku"] == int(catalog.sku_id[row]) and deal["kind"] == "flash"
        assert deal["price_fen"] == int(catalog.sku_price_fen[row]) // 2
        assert deal["qty"] == 400 and deal["per_buyer_max"] == promo.FLASH_DEAL_PER_BUYER
        assert deal["from"] == 0 and deal["until"] == limits.festival_time_ms_max


def test_a_refused_setup_is_said_not_measured(promo_engine, promo_catalog):
    again = promo.setup_batches(promo_catalog)[0]
    again.key[:] += np.uint64(1 << 40)  # new keys: a second threshold over the same window
    code, _ = promo_engine.apply(again, _PROMO_NOW)
    with pytest.raises(RuntimeError, match="command 0 .* answered window_overlaps"):
        promo.check_setup(again, code)


def test_the_grants_are_well_formed_binary_commands(promo_catalog):
    grants = Workload(promo_catalog.sku_id, seed=1).grants(np.array([1, 7]), np.array([42, 43]), "game:ar")
    decoded = CommandBatch.from_bytes(grants.to_bytes())  # the edge's checks, as a server runs them
    assert decoded.invalid.tolist() == [0, 0]
    assert area_commands.values_of(GRANT, decoded.arg[:decoded.args[0]]) == {"buyer": 42, "source": "game:ar"}
    assert decoded.target.tolist() == [1, 7]


def test_the_mix_spends_each_buyers_own_coupons_and_is_accepted_with_discounts(promo_engine, promo_catalog):
    engine, catalog = promo_engine, promo_catalog
    mix, planned, sent = _mix_round(engine, catalog)
    n = len(planned.checkouts)
    assert 0.4 < planned.store.mean() < 0.6 and 0.1 < planned.red.mean() < 0.3
    assert int((~promo.checkouts_of(sent)).sum()) == round(n * promo.GAME_GRANT_SHARE)
    starts = sent.arg_starts()
    first_line = np.cumsum(sent.lines[:n], dtype=np.int64) - sent.lines[:n]
    for i in range(n):
        coupons = sent.arg[starts[i]: starts[i] + sent.args[i]].tolist()
        assert len(coupons) == int(planned.store[i]) + int(planned.red[i])
        views_of = [v for v in (views.coupon(engine, c) for c in coupons) if v is not None]
        assert len(views_of) == len(coupons)
        assert all(v["buyer"] == int(sent.target[i]) and v["status"] == "held" for v in views_of)
        if planned.store[i]:  # the store coupon first, of the merchant of the first line's SKU
            row = int(mix.sku_rows(sent.sku[first_line[i]: first_line[i] + 1])[0])
            assert views_of[0]["kind"] == "store" and views_of[0]["merchant"] == int(catalog.sku_merchant[row])
        if planned.red[i]:
            assert views_of[-1]["kind"] == "platform"
    code, ref = engine.apply(sent, _PROMO_NOW + 10)
    checkouts = promo.checkouts_of(sent)
    assert (code[~checkouts] == Result.ok).all()  # the game's grants
    accepted = (code == Result.ok) & checkouts
    assert accepted.sum() >= 0.98 * n  # a few may ask a flash deal for more units than a buyer may take
    assert set(code[checkouts & ~accepted].tolist()) <= {int(Result.deal_buyer_limit)}
    rows = ref[accepted] - 1
    store, red = planned.store[accepted[:n]], planned.red[accepted[:n]]
    off_deal, off_store, off_threshold, off_platform = audit.discounts_by_row(engine, "checkouts")[rows].T
    amount = engine.c_amount.data[rows]
    assert (off_store[store] > 0).all() and (off_store[~store] == 0).all()
    assert (off_store <= promo.STORE_COUPON_FEN).all()
    # a red packet takes its amount off what the steps before left, but the 1 fen a checkout always costs
    left = amount - off_deal - off_store - off_threshold
    assert (off_platform[red] == np.minimum(promo.RED_PACKET_FEN, left[red] - 1)).all()
    assert (off_platform[~red] == 0).all()
    big = amount - off_deal - off_store >= promo.THRESHOLD_EVERY_FEN
    assert big.any() and (off_threshold[big] > 0).all()
    assert (off_deal > 0).any()
    ok, paid = _pay_accepted(engine, mix, sent, code, ref)
    assert (paid == Result.ok).all() and len(paid) == ok.sum()
    assert all(promo.promotion_checks(engine, engine.ledger.view()).values())


def test_sold_out_hot_items_are_swapped_for_the_same_stores_items(promo_engine, promo_catalog):
    catalog = promo_catalog
    swap = promo.SoldOutSwap(catalog, watched=20)
    sent = promo.PromoMix(catalog, seed=9).round(2_000).checkouts
    gone = [int(catalog.sku_id[0]), int(catalog.sku_id[3])]
    before = sent.sku.copy()
    swap.apply(sent, gone)
    hit = np.isin(before, gone)
    assert hit.any() and not np.isin(sent.sku, gone).any()
    assert (sent.sku[~hit] == before[~hit]).all()
    rows_before, rows_after = before[hit] - 1, sent.sku[hit] - 1  # generated ids are rows + 1
    assert (catalog.sku_merchant[rows_after] == catalog.sku_merchant[rows_before]).all()
    assert (rows_after >= 20).all()  # an item nobody watches for stock


@pytest.mark.parametrize("break_it, check", [
    (lambda e: e.promos.coupon_templates.rows["granted"].__setitem__(  # granted past its budget, by hand
        0, int(e.promos.coupon_templates.rows["budget_count"][0]) + 1), "templates_within_budget"),
    (lambda e: e.promos.deals.rows["taken"].__setitem__(0, int(e.promos.deals.rows["qty"][0]) + 1),
     "deal_units_within_qty"),
    (lambda e: e.promos.deals.rows["taken"].__setitem__(0, -1), "deal_units_within_qty"),
    (lambda e: e.promos.deals.rows["per_buyer_max"].__setitem__(slice(None), 0), "deal_units_within_per_buyer_max"),
    (lambda e: e.promos.checkout_promos.rows["off_threshold"].__setitem__(
        int(np.argmax(e.promos.checkout_promos.rows["off_threshold"])), 1), "list_less_discounts_is_payable"),
    (lambda e: e.promos.line_promos.rows["off_store"].__setitem__(
        int(np.argmax(e.promos.line_promos.rows["off_store"])), 0), "each_discount_sums_over_orders_and_lines"),
    (lambda e: setattr(e.ledger, "marketing", e.ledger.marketing + 1), "ledger_with_marketing_sums_to_zero"),
    (lambda e: e.promos.coupons.rows["status"].__setitem__(
        int(np.argmax(e.promos.coupons.rows["checkout"])), 1), "coupons_of_paid_checkouts_used"),
])
def test_the_promotions_invariants_catch_a_broken_state(promo_engine, promo_catalog, break_it, check):
    engine = promo_engine
    mix, _, sent = _mix_round(engine, promo_catalog, n=600)
    code, ref = engine.apply(sent, _PROMO_NOW + 10)
    _pay_accepted(engine, mix, sent, code, ref)
    assert all(promo.promotion_checks(engine, engine.ledger.view()).values())
    break_it(engine)
    checks = promo.promotion_checks(engine, engine.ledger.view())
    assert checks[check] is False


def test_the_promotions_mix_runs_unless_skipped():
    from double11.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench"]).promotions is True
    assert parser.parse_args(["bench", "--no-promotions"]).promotions is False
    assert parser.parse_args(["bench", "--promo-seconds", "5"]).promo_seconds == 5.0


def test_sold_out_skus_are_no_longer_drawn_and_the_rest_keep_their_popularity():
    ids = np.arange(1, 1_001, dtype=np.int64) * 7
    before = Workload(ids, seed=4).checkouts(50_000).sku
    work = Workload(ids, seed=4)
    work.drop_skus(ids[:3])  # the three hottest
    after = work.checkouts(50_000).sku
    assert not np.isin(after, ids[:3]).any() and np.isin(before, ids[:3]).mean() > 0.1
    # the next two SKUs' counts keep their ratio (each a few thousand draws)
    ratio = lambda skus: (skus == ids[3]).sum() / (skus == ids[4]).sum()  # noqa: E731
    assert ratio(after) == pytest.approx(ratio(before), rel=0.1)
    work.drop_skus(ids)  # every SKU sold out: the last ones stay drawn rather than none
    assert not np.isin(work.checkouts(100).sku, ids[:3]).any()
