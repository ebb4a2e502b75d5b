"""Global live figures over real NATS: two units publish their raw figures,
an aggregator sums the latest of each (double11/cluster/figures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from model import T0
from nats.aio.client import Client
from unit_trades import UnitTrades, festival_view, roomy_catalog, trading_day

from double11.cluster.figures import FiguresAggregator, FiguresPublisher, encode, figures_subject
from double11.cluster.nats_local import LocalNats
from double11.cluster.stream_log import ask_cluster
from double11.cluster.unit import UnitFestival, open_unit
from double11.service.festival import Festival

pytestmark = pytest.mark.slow  # starts NATS servers

_WAIT_S = 30  # a bound on waiting for a publication, not a speed


def _positions(units: dict[str, Festival]) -> dict[str, int]:
    return {name: unit.durability.log.next_seq - 1 for name, unit in units.items()}  # type: ignore[union-attr]


def _send(urls: list[str], unit: str, data: bytes) -> None:
    """A publication as a stale publisher would send it."""
    async def publish(nc: Client) -> None:
        await nc.publish(figures_subject(unit), data)
        await nc.flush()

    ask_cluster(urls, "double11-test-figures", publish)


def test_two_units_sum_to_one_festival_through_restarts_and_late_publications(nats_cluster: LocalNats,
                                                                               tmp_path: Path):
    urls, catalog = nats_cluster.urls, roomy_catalog()
    aggregator = FiguresAggregator(urls, catalog, Festival.open(catalog, clock_start_ms=T0).engine.config)
    units: dict[str, Festival] = {name: open_unit(urls, name, tmp_path / name, catalog=catalog, clock_start_ms=T0)
                                  for name in ("east", "west")}
    publishers = {name: FiguresPublisher(unit, urls, name, period_s=0.1) for name, unit in units.items()}
    reference = Festival.open(catalog, clock_start_ms=T0)
    trades = UnitTrades(units, reference, seed=25)
    try:
        trading_day(trades, rounds=6)
        early = publishers["east"].publish()  # what east published then: stale once east trades on
        end = trading_day(trades, rounds=10)
        assert aggregator.wait_for(_positions(units), _WAIT_S), aggregator.positions()
        assert aggregator.view(end) == festival_view(reference, end)
        assert aggregator.view(end)["payments"] > 0 and aggregator.refused == 0

        # an older publication arriving late does not move the figures back
        before, positions, seen = aggregator.view(end), aggregator.positions(), aggregator.received
        assert early.seq < positions["east"]
        _send(urls, "east", encode(early))
        assert aggregator.wait_received(seen + 1, _WAIT_S)
        assert aggregator.view(end) == before and aggregator.positions()["east"] >= positions["east"]

        # east stops (its last figures published on close) and comes back from its stream
        publishers.pop("east").close()
        closed_at = _positions(units)["east"]
        units.pop("east").close()
        assert aggregator.wait_for({"east": closed_at}, _WAIT_S)
        trades.round(only="west")  # the cluster goes on without east meanwhile
        east: UnitFestival = open_unit(urls, "east", tmp_path / "east")
        units["east"] = trades.units["east"] = east
        assert _positions(units)["east"] == closed_at
        publishers["east"] = FiguresPublisher(east, urls, "east", period_s=0.1)
        assert publishers["east"].publish().seq == closed_at  # the recovered state, at the same position
        for _ in range(3):
            trades.round()
        end = trades.advance(1500)
        assert aggregator.wait_for(_positions(units), _WAIT_S), aggregator.positions()
        assert aggregator.view(end) == festival_view(reference, end)
        assert aggregator.positions()["east"] > closed_at
    finally:
        for publisher in publishers.values():
            publisher.close()
        for unit in units.values():
            unit.close()
        reference.close()
        aggregator.close()
