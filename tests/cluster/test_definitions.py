"""The promotions' definitions on a cluster (double11/cluster/definitions.py):
every unit applies them in one order, whoever sends them and whoever dies
midway, so a definition has the same id in every unit; a template's
grantable coupons and a deal's units split into shares that sum to them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from model import T0, deal, template, threshold

from double11.cluster.definitions import Definition, DefinitionSender, MemoryJournal, grantable, shares, split_batch
from double11.engine.encode import encode_commands
from double11.promotions.spec import COUPON_TEMPLATE, DEAL, THRESHOLD_DISCOUNT


class Units:
    """Units that number what they are sent, answering a repeat (its key) from the first time."""

    def __init__(self, count: int) -> None:
        self.applied: list[list[str]] = [[] for _ in range(count)]
        self.fail_after: int | None = None  # sends that succeed before the sender "dies"

    async def send(self, unit: int, request: str, payload: bytes, headers: dict[str, str] | None) -> bytes:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise ConnectionError("the sender died")
            self.fail_after -= 1
        for _ in range(len(payload) % 3 + unit):  # the senders' requests interleave
            await asyncio.sleep(0)
        key = payload.decode()
        if key not in self.applied[unit]:
            self.applied[unit].append(key)
        return str(self.applied[unit].index(key) + 1).encode()  # the id the unit gave it


def _definition(name: str, units: int) -> Definition:
    return Definition("commands", [name.encode()] * units)


def test_a_sender_that_died_midway_is_finished_by_the_next_definitions_sender() -> None:
    units, journal = Units(3), MemoryJournal()

    async def run() -> None:
        first, second = DefinitionSender(journal), DefinitionSender(journal)
        assert await first.define(_definition("a", 3), units.send) == [b"1", b"1", b"1"]
        units.fail_after = 1  # "b" reaches unit 0 only
        with pytest.raises(ConnectionError):
            await first.define(_definition("b", 3), units.send)
        units.fail_after = None
        assert units.applied == [["a", "b"], ["a"], ["a"]]
        # another front's definition: slot 3, after slot 2 is finished everywhere
        assert await second.define(_definition("c", 3), units.send) == [b"3", b"3", b"3"]
        assert await first.define(_definition("d", 3), units.send) == [b"4", b"4", b"4"]

    asyncio.run(run())
    assert units.applied == [["a", "b", "c", "d"]] * 3


def test_concurrent_senders_keep_one_order() -> None:
    units, journal = Units(2), MemoryJournal()

    async def run() -> list[list[bytes]]:
        senders = [DefinitionSender(journal) for _ in range(4)]
        defined = (senders[k % 4].define(_definition(f"d{k}", 2), units.send) for k in range(12))
        return list(await asyncio.gather(*defined))

    answers = asyncio.run(run())
    assert units.applied[0] == units.applied[1] and len(units.applied[0]) == 12
    assert all(a == b for a, b in answers)  # each definition has one id in both units


def test_shares_sum_to_what_a_definition_allows() -> None:
    for count, budget_fen, discount in ((5, 0, 100), (9, 1_000, 300), (0, 0, 1), (2, 10_000, 1)):
        split = shares(COUPON_TEMPLATE.number, {"budget_count": count, "budget_fen": budget_fen,
                                                "discount_fen": discount}, 3)
        assert split is not None and sum(split) == grantable(count, budget_fen, discount) and min(split) >= 0
    assert shares(DEAL.number, {"qty": 7}, 3) == [3, 2, 2]
    assert shares(DEAL.number, {"qty": "seven"}, 3) is None  # the unit refuses it: one unit is sent it
    assert shares(THRESHOLD_DISCOUNT.number, {"every_fen": 1}, 3) is None
    made = split_batch(encode_commands([template("t", budget_count=9, budget_fen=1_000, discount_fen=300)]), 2)
    assert made is not None
    at = COUPON_TEMPLATE.arg_at("budget_count")
    assert [int(b.arg[at]) for b in made] == [2, 1]  # 1,000 // 300 = 3 coupons, split
    assert [int(b.arg[COUPON_TEMPLATE.arg_at("budget_fen")]) for b in made] == [1_000, 1_000]  # kept whole
    same = split_batch(encode_commands([threshold("h", 500, 50, start=T0, until=T0 + 1)]), 2)
    assert same is not None and all(np.array_equal(b.arg, same[0].arg) for b in same)
    units = split_batch(encode_commands([deal("d", 102, 90, 5)]), 2)
    assert units is not None and [int(b.arg[DEAL.arg_at("qty")]) for b in units] == [3, 2]
