"""The units' raw figures summed into one festival's view (double11/cluster/figures.py), without NATS."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from model import T0, small_catalog
from unit_trades import UnitTrades, festival_view, roomy_catalog, trading_day

from double11.cluster.figures import (
    ARRAYS,
    PER_SECOND,
    SCALARS,
    FiguresMismatch,
    FiguresSum,
    Packed,
    Series,
    decode,
    encode,
    summed_per_second,
    summed_promotions,
    unit_figures,
)
from double11.config import FestivalConfig
from double11.engine.stats import FestivalStats, PerSecond
from double11.promotions import views as promotion_views
from double11.service.festival import Festival


def _figures(unit: str, seq: int, festival: Festival) -> bytes:
    engine = festival.engine
    return encode(unit_figures(unit, seq, engine.now_ms, engine.stats, promotion_views.figures(engine)))


@pytest.fixture
def day() -> Iterator[tuple[dict[str, Festival], Festival, int]]:
    """Two units and the one festival that executed both units' commands."""
    catalog = roomy_catalog()
    units = {name: Festival.open(catalog, clock_start_ms=T0) for name in ("east", "west")}
    reference = Festival.open(catalog, clock_start_ms=T0)
    end = trading_day(UnitTrades(units, reference, seed=11), rounds=24)
    yield units, reference, end
    for festival in (*units.values(), reference):
        festival.close()


def test_the_sum_of_two_units_is_the_view_of_one_festival_holding_both(day):
    units, reference, end = day
    figures = FiguresSum(reference.engine.catalog, reference.engine.config)
    for name, unit in units.items():
        assert figures.take(decode(_figures(name, 7, unit)))
    assert reference.engine.stats.payments > 0 and reference.engine.stats.checkouts > 40
    assert all(u.engine.stats.gmv_fen for u in units.values())
    # every figure, derived ones included (rates, peaks, shares, clubs, tops), at
    # moments inside and after the day; nothing differs by unit: the buyers are
    # the units' own and no SKU runs short (a unit holds no stock quota yet)
    for now in (T0 + 1500, (T0 + end) // 2, end - 1000, end, end + 3_600_000):
        assert figures.view(now) == festival_view(reference, now)
    assert figures.view()["at"] == max(u.engine.now_ms for u in units.values())
    assert figures.positions() == {"east": 7, "west": 7}

    # the sums are not any one unit's figures: the view is not made by luck
    each = [u.engine.stats for u in units.values()]
    total = reference.engine.stats
    assert total.gmv_fen == sum(s.gmv_fen for s in each) and all(s.gmv_fen < total.gmv_fen for s in each)
    assert total.checkouts_per_s.counts != each[0].checkouts_per_s.counts


def test_an_older_publication_changes_nothing(day):
    units, reference, end = day
    east, west = units["east"], units["west"]
    figures = FiguresSum(reference.engine.catalog, reference.engine.config)
    early_east = _figures("east", 3, Festival.open(roomy_catalog(), clock_start_ms=T0))  # nothing sold yet
    assert figures.take(decode(_figures("east", 9, east)))
    assert figures.take(decode(_figures("west", 4, west)))
    before = figures.view(end)
    assert not figures.take(decode(early_east))  # position 3 < 9: late, ignored
    assert not figures.take(decode(_figures("east", 9, east)))  # the same again
    assert figures.view(end) == before == festival_view(reference, end)
    assert figures.positions() == {"east": 9, "west": 4}

    # a later position replaces the unit's figures (never adds to them)
    assert figures.take(decode(_figures("east", 10, east)))
    assert figures.view(end) == before


def test_the_same_position_read_later_moves_the_clock_only():
    catalog = small_catalog()
    stats = FestivalStats(catalog, FestivalConfig())
    stats.gmv_fen = 500
    figures = FiguresSum(catalog, FestivalConfig())
    assert figures.take(unit_figures("east", 5, T0, stats))
    assert figures.take(unit_figures("east", 5, T0 + 2000, stats))
    assert not figures.take(unit_figures("east", 5, T0 + 1000, stats))
    assert figures.view()["at"] == T0 + 2000 and figures.view()["gmv_fen"] == 500


def test_every_raw_figure_of_festival_stats_is_published():
    """A figure added to FestivalStats must be published and summed too (or this fails)."""
    stats = FestivalStats(small_catalog(), FestivalConfig())
    raw = {name for name, value in vars(stats).items() if isinstance(value, (int, np.ndarray, PerSecond))}
    assert raw == set(SCALARS) | set(ARRAYS) | set(PER_SECOND)


def test_figures_of_another_catalog_or_damaged_ones_are_refused():
    stats = FestivalStats(small_catalog(), FestivalConfig())
    figures = FiguresSum(small_catalog(), FestivalConfig())
    wider = unit_figures("east", 1, T0, stats)
    wider.arrays[0] = Packed.of(np.zeros(4, dtype=np.int64))  # 4 merchants, the catalog has 3
    with pytest.raises(FiguresMismatch, match="merchant_gmv has 4 entries, the catalog 3"):
        figures.take(wider)
    with pytest.raises(FiguresMismatch, match="not a unit's figures"):
        decode(b"\x00garbage")
    short = unit_figures("east", 1, T0, stats)
    del short.scalars[0]
    with pytest.raises(FiguresMismatch, match="8 scalars"):
        decode(encode(short))
    assert figures.positions() == {}


def test_arrays_travel_in_the_narrowest_type_and_come_back_exact():
    assert Packed.of(np.array([0, 255])).dtype == "|u1"
    assert Packed.of(np.array([0, 65_536])).dtype == "<u4"
    assert Packed.of(np.array([-1, 5])).dtype == "<i8"
    big = np.array([0, 2**62, 2**53 + 1, -(2**62)], dtype=np.int64)
    assert np.array_equal(Packed.of(big).array(), big)
    assert Packed.of(np.zeros(0, dtype=np.int64)).array().size == 0


def test_a_catalog_sized_publication_stays_small():
    """100,000 merchants, 2,000 of them selling, a day's per-second series: well under a NATS message."""
    rng = np.random.default_rng(3)
    catalog = small_catalog()
    stats = FestivalStats(catalog, FestivalConfig())
    stats.merchant_gmv = np.zeros(100_000, dtype=np.int64)
    stats.merchant_gmv[rng.choice(100_000, 2_000, replace=False)] = rng.integers(1, 10**10, 2_000)
    for second in range(T0 // 1000, T0 // 1000 + 86_400):
        stats.checkouts_per_s.add(second * 1000, int(rng.integers(1, 50_000)))
    data = encode(unit_figures("east", 1, T0, stats))
    assert len(data) < 400_000  # raw: 800 KB of merchants and 1.4 MB of pairs
    back = decode(data)
    assert np.array_equal(back.arrays[0].array(), stats.merchant_gmv)
    seconds, counts = back.per_second[0].seconds_and_counts()
    assert dict(zip(seconds.tolist(), counts.tolist())) == stats.checkouts_per_s.counts


def test_per_second_counts_add_by_second_and_the_peak_is_the_earliest_highest():
    def series(counts: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        per = PerSecond()
        for second, count in sorted(counts.items()):
            per.add(second * 1000, count)
        return Series.of(per).seconds_and_counts()

    east = series({100: 9, 101: 4, 103: 5})
    west = series({101: 5, 102: 2, 103: 4, 10**9: 2**60})
    total = summed_per_second([east, west])
    assert total.counts == {100: 9, 101: 9, 102: 2, 103: 9, 10**9: 2**60}  # exact past float64's 2**53
    assert (total.peak, total.peak_second) == (2**60, 10**9)
    tied = summed_per_second([east, series({101: 5, 102: 2, 103: 4})])
    assert (tied.peak, tied.peak_second) == (9, 100)  # as PerSecond leaves it: the first second to reach 9
    one = PerSecond()
    for second, count in sorted(tied.counts.items()):
        one.add(second * 1000, count)
    assert (one.peak, one.peak_second) == (tied.peak, tied.peak_second)
    assert summed_per_second([]).counts == {} and summed_per_second([]).peak_second is None


def test_promotion_figures_add_up_and_the_latest_sold_out_deals_merge():
    east: dict[str, Any] = {"discounts_fen": {"deal": 100, "store_coupon": 5}, "coupons_granted": 3, "coupons_used": 1,
            "deals_sold_out": 2, "coupons_left": {"store": 7, "platform": 0},
            "deals_sold_out_latest": [{"deal": 2, "sold_out_at": 50}, {"deal": 1, "sold_out_at": 10}]}
    west = copy.deepcopy(east)
    west["deals_sold_out_latest"] = [{"deal": 1, "sold_out_at": 30}]
    total = summed_promotions([east, west])
    assert total["discounts_fen"] == {"deal": 200, "store_coupon": 10}
    assert (total["coupons_granted"], total["coupons_used"], total["deals_sold_out"]) == (6, 2, 4)
    assert total["coupons_left"] == {"store": 14, "platform": 0}
    assert [d["sold_out_at"] for d in total["deals_sold_out_latest"]] == [50, 30, 10]
    assert east["deals_sold_out_latest"][0]["sold_out_at"] == 50  # the parts are not changed
