"""Group commit in `Festival.submit`: concurrent callers share batches, each
gets its own answer; a lone caller's command is committed on its own."""

from __future__ import annotations

import asyncio

from double11.service import Festival
from model import T0, co, small_catalog


def test_concurrent_single_submits_share_batches_and_get_their_own_answers(tmp_path):
    festival = Festival.open(small_catalog({102: 10_000}), data_dir=tmp_path, clock_start_ms=T0)
    callers = 200

    async def go():
        return await asyncio.gather(*(festival.submit([co(f"k{i}", [(102, 1)], buyer=1000 + i)])
                                      for i in range(callers)))

    try:
        answers = asyncio.run(go())
        assert [len(a) for a in answers] == [1] * callers
        assert all(a[0]["status"] == 201 for a in answers)
        # every caller got its own checkout
        assert len({a[0]["body"]["checkout"] for a in answers}) == callers
        # ... in a handful of fsynced batches, not one each
        assert festival.batches <= 4
        assert festival.log.syncs <= 4
        assert festival.sku(102)["reserved"] == callers
    finally:
        festival.close()


def test_lone_submits_are_each_committed_on_their_own(tmp_path):
    festival = Festival.open(small_catalog(), data_dir=tmp_path, clock_start_ms=T0)

    async def go():
        return [await festival.submit([co(f"lone{i}", [(102, 1)])]) for i in range(3)]

    try:
        answers = asyncio.run(go())
        assert [a[0]["status"] for a in answers] == [201, 201, 201]
        assert festival.batches == 3 and festival.log.syncs >= 3
    finally:
        festival.close()
