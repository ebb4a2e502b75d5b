"""The router and the rebalancer's journal, in process (router.py, rebalancer.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model import T0, cancel, co, pay, restock, small_catalog
from units_in_process import UnitsInProcess  # tests/cluster/units_in_process.py

from double11.cluster.quotas import ReportsSent, StockReport, split_stock
from double11.cluster.rebalancer import MemoryJournal, Planner, Rebalancer, Transfer, plan
from double11.cluster.router import take
from double11.cluster.slots import SlotMap, global_ids, local_ids, unit_of_id
from double11.config import FestivalConfig
from double11.engine.batch import CommandBatch
from double11.engine.encode import encode_commands
from double11.errors import Result

CONFIG = FestivalConfig(payment_timeout_ms=60_000, commission_bps=250)


@pytest.fixture
def units():
    cluster = UnitsInProcess(small_catalog({102: 40}), 3, CONFIG, T0)
    yield cluster
    cluster.close()


def buyer_in(cluster: UnitsInProcess, unit: int, nth: int = 0) -> int:
    found = [b for b in range(1, 1000) if int(cluster.slot_map.unit_of_buyer(np.array([b]))[0]) == unit]
    return found[nth]


def test_a_checkout_and_its_pay_stay_in_the_buyers_unit(units: UnitsInProcess) -> None:
    for unit in range(3):
        got = units.execute([co(f"c{unit}", [(102, 1), (101, 1)], buyer=buyer_in(units, unit))])
        checkout, first_order = int(got["ref"][0]), int(got["first_order"][0])
        assert got["code"][0] == Result.ok and got["orders"][0] == 2
        assert unit_of_id(np.array([checkout, first_order])).tolist() == [unit, unit]
        assert local_ids(np.array([checkout]))[0] == 1  # each unit numbers its own from 1
        paid = units.execute([pay(f"p{unit}", checkout, int(got["amount_fen"][0]))])
        assert paid["code"][0] == Result.ok and paid["ref"][0] == checkout
        assert units.festivals[unit].stats()["payments"] == 1


def test_one_batch_across_units_is_answered_in_its_order(units: UnitsInProcess) -> None:
    buyers = [buyer_in(units, u, k) for k in range(2) for u in range(3)]
    got = units.execute([co(f"b{k}", [(102, 1)], buyer=b) for k, b in enumerate(buyers)])
    assert got["code"].tolist() == [0] * 6
    assert unit_of_id(got["ref"]).tolist() == [0, 1, 2, 0, 1, 2]
    again = units.execute([pay(f"q{k}", int(got["ref"][k]), int(got["amount_fen"][k])) for k in (5, 0, 3)])
    assert again["code"].tolist() == [0, 0, 0] and again["ref"].tolist() == [got["ref"][k] for k in (5, 0, 3)]


def test_ids_naming_no_unit_and_commands_the_cluster_does_not_serve_change_nothing(units: UnitsInProcess) -> None:
    stray = int(global_ids(7, np.array([1]))[0])
    got = units.execute([pay("x", stray, 100), cancel("y", stray),
                         {"op": "confirm", "idempotency_key": "z", "order": stray},
                         {"op": "release", "idempotency_key": "r", "sku": 102, "qty": 1}])
    assert [Result(c) for c in got["code"]] == [Result.unknown_checkout, Result.unknown_checkout,
                                                Result.unknown_order, Result.not_on_cluster]
    assert got["ref"].tolist()[:3] == [stray] * 3
    assert all(f.ledger()["transfers"] == 0 and f.stats()["checkouts"] == 0 for f in units.festivals)


def test_a_restock_goes_to_the_skus_home_unit(units: UnitsInProcess) -> None:
    before = sum(int(f.engine.sku_stocked[1]) for f in units.festivals)
    assert units.execute([restock("r", 102, 9)])["code"][0] == Result.ok
    assert sum(int(f.engine.sku_stocked[1]) for f in units.festivals) == before + 9


def test_a_transfer_left_half_done_is_finished_by_the_next_rebalancer(units: UnitsInProcess) -> None:
    transfer = Transfer("t1", 102, 0, 2, 5)
    journal = MemoryJournal()
    journal.put("round-t1", [transfer])  # the rebalancer died after the release
    release = {"op": "release", "sku": 102, "qty": 5, "idempotency_key": "t1"}
    assert units.execute_on(0, release) == Result.ok
    stocked = [int(f.engine.sku_stocked[1]) for f in units.festivals]
    assert sum(stocked) == 40 - 5  # in flight: in neither unit's quota
    Rebalancer(units, journal, units.festivals[0].engine.catalog.sku_id, epoch="again")
    after = [int(f.engine.sku_stocked[1]) for f in units.festivals]
    assert after == [stocked[0], stocked[1], stocked[2] + 5] and not journal.unfinished()


def test_a_rounds_transfers_go_as_one_batch_to_each_unit(units: UnitsInProcess) -> None:
    """Releases in one batch to each giver, then restocks in one to each
    taker, whatever the round holds; one refused release (the giver had too
    few) is dropped alone, and the quotas still sum to the stock."""
    skus = units.festivals[0].engine.catalog.sku_id
    stocked = np.array([f.engine.sku_stocked for f in units.festivals])
    sent: list[tuple[int, int]] = []  # (unit, commands)
    real_send = units.send

    def counted(unit: int, batch: bytes) -> bytes:
        sent.append((unit, len(CommandBatch.from_bytes(batch))))
        return real_send(unit, batch)

    units.send = counted  # type: ignore[method-assign]
    held = np.flatnonzero(stocked[0] > 0)  # the SKUs unit 0 holds some of
    assert len(held) >= 3
    transfers = [Transfer(f"t{k}", int(skus[row]), 0, 1 + k % 2, 1) for k, row in enumerate(held)]
    transfers.append(Transfer("too-many", int(skus[held[0]]), 2, 0, 10_000))
    journal = MemoryJournal()
    moved = Rebalancer(units, journal, skus, epoch="e").carry_out_all(transfers)
    assert moved == [True] * len(held) + [False] and not journal.unfinished()
    # releases: one batch to unit 0 (every SKU), one to unit 2 (the refused one); restocks: one to 1, one to 2
    assert sorted(sent) == sorted([(0, len(held)), (2, 1), (1, (len(held) + 1) // 2), (2, len(held) // 2)])
    after = np.array([f.engine.sku_stocked for f in units.festivals])
    assert np.array_equal(after.sum(axis=0), stocked.sum(axis=0))
    assert np.array_equal(after[0][held], stocked[0][held] - 1)


def test_a_round_cut_between_its_releases_and_restocks_is_finished_once(units: UnitsInProcess) -> None:
    skus = units.festivals[0].engine.catalog.sku_id
    stocked = np.array([f.engine.sku_stocked for f in units.festivals]).sum(axis=0)
    rows = np.flatnonzero(np.array(units.festivals[1].engine.sku_stocked) >= 1)[:3]
    assert len(rows) == 3
    transfers = [Transfer(f"c{k}", int(skus[row]), 1, 0, 1) for k, row in enumerate(rows)]
    journal = MemoryJournal()
    journal.put("round-c0", transfers)
    for t in transfers[:2]:  # the crash: two of the three releases landed
        assert units.execute_on(1, t.commands()[0]) == Result.ok
    Rebalancer(units, journal, skus, epoch="next")  # finishes the round: the two answered from their first results
    after = np.array([f.engine.sku_stocked for f in units.festivals])
    assert np.array_equal(after.sum(axis=0), stocked) and not journal.unfinished()
    Rebalancer(units, journal, skus, epoch="again")  # nothing left: nothing moves twice
    assert np.array_equal(np.array([f.engine.sku_stocked for f in units.festivals]), after)


def test_a_release_beyond_what_a_unit_has_is_dropped(units: UnitsInProcess) -> None:
    journal = MemoryJournal()
    moved = Rebalancer(units, journal, units.festivals[0].engine.catalog.sku_id, epoch="e").carry_out(
        Transfer("big", 102, 1, 0, 1000))
    assert not moved and not journal.unfinished()
    assert sum(int(f.engine.sku_stocked[1]) for f in units.festivals) == 40


def test_a_sale_or_two_does_not_swing_a_skus_shares_but_a_hot_skus_follow_its_buyers() -> None:
    """A SKU selling a unit a round in one unit, then in the other, moved its
    stock back and forth every round (a crumb of weight for the unit not
    selling); at full speed 4,000 transfers a round on the bench."""
    available = np.array([[4, 6], [6, 4]])  # (units, skus): SKU 0 sells in unit 0, SKU 1 in unit 1
    assert plan(available, np.array([[1.0, 0.0], [0.0, 1.0]])) == []  # the crumb moved all 6 of each
    assert plan(np.array([[2], [8]]), np.array([[1000.0], [0.0]])) == [(0, 1, 0, 8)]


def test_plan_follows_demand_and_moves_the_last_units() -> None:
    available = np.array([[0, 5], [1, 5], [1, 5]])
    demand = np.array([[3.0, 0], [0, 0], [0, 0]])
    moves = plan(available, demand)
    assert moves == [(0, 1, 0, 1)]  # the last units go to where the buyers are; nothing for SKU 1
    shares = split_stock(np.array([7, 0, 2]), 3)
    assert shares.sum(axis=0).tolist() == [7, 0, 2] and shares[:, 0].tolist() == [3, 2, 2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), min_size=4, max_size=4), min_size=2, max_size=4),
       st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_plan_settles_once_demand_is_still(holdings: list[list[int]], demand_units: list[int]) -> None:
    """Moves applied, then planned again on the same demand, any number of
    times: the plan runs dry (no unit passes units back and forth), and no
    move ever takes more than its giver holds."""
    available = np.array(holdings, dtype=np.int64)
    demand = np.zeros(available.shape)
    demand[[d % len(holdings) for d in demand_units], np.arange(4)] = 1.0
    for _ in range(3 * len(holdings)):
        moves = plan(available, demand)
        for sku, giver, taker, qty in moves:
            assert 0 < qty <= available[giver, sku]
            available[giver, sku] -= qty
            available[taker, sku] += qty
        if not moves:
            break
    assert plan(available, demand) == [], available


def test_the_slot_map_and_stock_report_round_trip() -> None:
    m = SlotMap.even(["east", "west"])
    assert SlotMap.from_bytes(m.to_bytes()) == m
    with pytest.raises(ValueError, match="differ"):
        SlotMap.even(["a", "a"])
    report = StockReport(9, np.array([1, 2]), np.array([3, 4]), np.array([0, 1]), np.array([5]), np.array([6]),
                         np.array([7, 8, 9]), np.array([0, 0, 1]))
    back = StockReport.from_bytes(report.to_bytes())
    assert back.seq == 9 and back.stocked.tolist() == [3, 4] and back.sold.tolist() == [0, 1]
    assert (back.coupons_left.tolist(), back.granted.tolist()) == ([5], [6])
    assert (back.deal_left.tolist(), back.deal_taken.tolist()) == ([7, 8, 9], [0, 0, 1])
    with pytest.raises(ValueError, match="stock report"):
        StockReport.from_bytes(b"D11Q" + bytes(20))


def test_a_stock_report_is_sent_as_the_rows_changed_since_the_one_its_asker_holds() -> None:
    rng = np.random.default_rng(3)
    sent = ReportsSent(kept=2)

    def report(available: np.ndarray) -> StockReport:
        return StockReport(7, available, available + 5, np.zeros(len(available), dtype=np.int64),
                           np.array([4]), np.array([1]), report_id=sent.new_id())

    first = report(rng.integers(0, 100, 1000))
    whole = sent.answer(first)
    held = StockReport.from_bytes(whole)
    assert held.report_id == first.report_id and held.available.tolist() == first.available.tolist()
    later = first.available.copy()
    later[[3, 500]] += 1
    second = report(later)
    changes = sent.answer(second, since_id=held.report_id)
    assert len(changes) < len(whole) // 20  # two rows, not a thousand
    back = StockReport.from_bytes(changes, held)
    assert back.report_id == second.report_id
    for column in ("available", "stocked", "sold", "coupons_left", "granted"):
        assert getattr(back, column).tolist() == getattr(second, column).tolist(), column
    with pytest.raises(ValueError, match="changes since report"):
        StockReport.from_bytes(changes)  # the report they are changes to is needed
    with pytest.raises(ValueError, match="changes since report"):
        StockReport.from_bytes(changes, back)
    # a report no longer kept (or another process's: its ids have another prefix) is answered whole
    sent.answer(report(later))
    sent.answer(report(later))
    assert StockReport.from_bytes(sent.answer(report(later), since_id=first.report_id)).report_id
    assert len(sent.answer(report(later), since_id=ReportsSent().new_id())) == len(whole)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(-3, 30)), min_size=1, max_size=40),
       st.integers(2, 3))
def test_the_rebalancer_plans_what_plan_would_on_every_item(events: list[tuple[int, int, int]], units: int) -> None:
    """Round after round, planning only the items that may have changed
    gives the moves that planning every item gives."""
    items = 8
    left = np.full((units, items), 6, dtype=np.int64)
    used = np.zeros((units, items), dtype=np.int64)
    planner = Planner()
    demand, last_used = np.zeros((units, items)), None
    for unit, item, qty in events:
        unit %= units
        if 0 < qty <= 20:  # a sale (above 20: a quiet round)
            sold = min(qty, int(left[unit, item]))
            left[unit, item] -= sold
            used[unit, item] += sold
        elif qty < 0:  # a restock to one unit
            left[unit, item] += -qty
        demand = (0 if last_used is None else np.maximum(used - last_used, 0)) + 0.5 * demand  # the first: a baseline
        demand[demand < 1e-3] = 0.0
        last_used = used.copy()
        moves, _ = planner.moves(left.copy(), used.copy())
        assert moves == plan(left, demand)
        for row, giver, taker, moved in moves:
            left[giver, row] -= moved
            left[taker, row] += moved


def test_a_part_keeps_the_notes_of_its_commands_at_their_new_places() -> None:
    """A command the edge refused carries its note (the refusal's words) into its unit's part."""
    batch = encode_commands([{"op": "pay", "checkout": 1, "amount_fen": 5, "idempotency_key": "a"},
                             {"op": "pay", "checkout": "x", "amount_fen": 5, "idempotency_key": "b"},
                             {"op": "pay", "checkout": 3, "idempotency_key": "c"},
                             {"op": "pay", "checkout": 4, "amount_fen": 5, "idempotency_key": "d"}])
    assert sorted(batch.notes) == [1, 2]
    part = take(batch, np.array([0, 2, 3]))
    assert part.notes == {1: batch.notes[2]}
    assert take(batch, np.array([1])).notes == {0: batch.notes[1]}
    assert take(batch, np.array([0, 3])).notes == {}
