"""Random trade in several units at once, and the same commands in ONE
festival holding them all (the reference the cluster's global figures must
equal).  Each unit has buyers of its own; ids (checkouts, templates) are each
festival's own, so the reference's are mapped from its answers."""

from __future__ import annotations

import random
from typing import Any

from model import T0, co, grant, pay, small_catalog, template

from double11.catalog import Catalog
from double11.service.festival import Festival

SKUS = (101, 102, 103, 104, 105, 106)


def roomy_catalog() -> Catalog:
    """The small catalog with stock no unit runs out of (units hold no stock
    quotas yet, so a scarce SKU would sell once per unit); SKU 106 stays at 0."""
    return small_catalog(stock={sku: 1_000_000 for sku in SKUS if sku != 106})


class UnitTrades:
    def __init__(self, units: dict[str, Festival], reference: Festival, seed: int) -> None:
        self.units = units
        self.reference = reference
        self.rng = random.Random(seed)
        self.buyers = {name: range(1 + 1000 * k, 41 + 1000 * k) for k, name in enumerate(units)}
        self.unpaid: dict[str, list[tuple[int, int, int]]] = {name: [] for name in units}  # unit id, ref id, fen
        self.templates: dict[str, tuple[int, int]] = {}  # unit -> (its template id, the reference's)
        self.keys = 0
        # one clock for all: each unit stamps its own batches, so the reference
        # shows the same seconds only if no unit's batch comes earlier than another's
        self.now_ms = T0

    def advance(self, step_ms: int) -> int:
        """The shared clock, moved on by step_ms."""
        self.now_ms += step_ms
        return self.now_ms

    def _key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def both(self, unit: str, unit_commands: list[dict], reference_commands: list[dict],
             at_ms: int) -> list[tuple[dict, dict]]:
        """A batch in the unit and the same one in the reference: their answers side by side."""
        mine = self.units[unit].execute(unit_commands, now_ms=at_ms)
        theirs = self.reference.execute(reference_commands, now_ms=at_ms)
        assert [a["status"] for a in mine] == [a["status"] for a in theirs], (mine, theirs)
        return list(zip(mine, theirs))

    def coupons(self) -> None:
        """A platform coupon template per unit, granted to some of its buyers."""
        for unit in self.units:
            command = template(self._key(), budget_count=500)
            (mine, theirs), = self.both(unit, [command], [command], self.advance(10))
            self.templates[unit] = (mine["body"]["template"], theirs["body"]["template"])
            grants = [(self._key(), b) for b in self.rng.sample(self.buyers[unit], 10)]
            own, ref = self.templates[unit]
            self.both(unit, [grant(k, own, buyer=b) for k, b in grants],
                      [grant(k, ref, buyer=b) for k, b in grants], self.advance(10))

    def round(self, only: str | None = None) -> None:
        """Each unit (or only the one named): a batch of random checkouts, then
        one paying some of its unpaid checkouts."""
        for unit in self.units if only is None else [only]:
            checkouts = [co(self._key(), self._lines(), buyer=self.rng.choice(self.buyers[unit]),
                            country=self.rng.choice(["CN", "US", "JP", "DE"]),
                            channel=self.rng.choice(["mobile", "mobile", "pc"]))
                         for _ in range(self.rng.randint(3, 30))]
            for mine, theirs in self.both(unit, checkouts, checkouts, self.advance(self.rng.randint(0, 300))):
                if mine["status"] == 201:
                    assert mine["body"]["amount_fen"] == theirs["body"]["amount_fen"]
                    self.unpaid[unit].append((mine["body"]["checkout"], theirs["body"]["checkout"],
                                              mine["body"]["amount_fen"]))
            self.rng.shuffle(self.unpaid[unit])
            paying, self.unpaid[unit] = self._split(self.unpaid[unit])
            keys = [self._key() for _ in paying]
            self.both(unit, [pay(k, own, fen) for k, (own, _, fen) in zip(keys, paying)],
                      [pay(k, ref, fen) for k, (_, ref, fen) in zip(keys, paying)],
                      self.advance(self.rng.randint(0, 700)))

    def _lines(self) -> list[tuple[int, int]]:
        return [(sku, self.rng.randint(1, 3)) for sku in self.rng.sample(SKUS, self.rng.randint(1, 3))]

    def _split(self, unpaid: list[Any]) -> tuple[list[Any], list[Any]]:
        cut = self.rng.randint(0, len(unpaid))
        return unpaid[:cut], unpaid[cut:]


def festival_view(festival: Festival, now_ms: int) -> dict[str, Any]:
    """/v1/stats of one festival at now_ms, as the aggregator makes it (its
    figures and the promotions', without the clock's pace)."""
    from double11.promotions import views as promotion_views

    view = festival.engine.stats.view(festival.engine.catalog, now_ms)
    view["promotions"] = promotion_views.figures(festival.engine)
    return view


def trading_day(trades: UnitTrades, rounds: int) -> int:
    """Coupons, then rounds spread over several hours (several in a second at
    times, so the units' per-second series overlap); a moment after the last."""
    trades.coupons()
    for _ in range(rounds):
        trades.round()
        trades.advance(trades.rng.choice([0, 0, 1000, 47 * 60_000]))  # the same second, the next, most of an hour on
    return trades.advance(1500)
