"""Group commit in `Festival.submit`: concurrent callers share batches, each
gets its own answer; a lone caller's command is committed on its own."""

from __future__ import annotations

import asyncio

from model import T0, co, small_catalog

from double11.engine.json_commands import Bodies
from double11.errors import Double11Error, Result
from double11.service import Festival
from double11.statuses import STATUS_OF_CODE


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


def test_reads_during_big_batches_see_whole_batches_only(tmp_path):
    """Big batches apply on the engine thread while the event loop runs; a
    read issued meanwhile sees the state between two batches, never half of one."""
    from double11 import limits

    festival = Festival.open(small_catalog({102: 1_000_000}), data_dir=tmp_path, clock_start_ms=T0)
    size = limits.group_commit_commands_max  # one request fills a batch
    batches = 4
    assert size >= limits.apply_on_worker_commands_min
    seen: list[int] = []

    async def read_while_writing(done: asyncio.Event):
        while not done.is_set():
            stats, sku = await festival.read(lambda: (festival.stats(), festival.sku(102)))
            seen.append(stats["checkouts"])
            # the loop takes stock in place, the totals are added after it: a
            # read in the middle of a batch would see more reserved than checkouts
            assert sku["reserved"] == stats["checkouts"]
            await asyncio.sleep(0)

    async def go():
        done = asyncio.Event()
        reader = asyncio.create_task(read_while_writing(done))
        answers = await asyncio.gather(*(
            festival.submit([co(f"b{b}-{i}", [(102, 1)], buyer=10_000 + i) for i in range(size)])
            for b in range(batches)))
        done.set()
        await reader
        return answers

    try:
        answers = asyncio.run(go())
        assert all(r["status"] == 201 for a in answers for r in a)
        assert seen, "no read ran while the batches applied"
        # whole batches only: the count of checkouts is always a multiple of one batch
        assert all(n % size == 0 for n in seen), sorted(set(seen))
        assert festival.stats()["checkouts"] == size * batches
    finally:
        festival.close()


def test_a_failed_log_write_answers_no_one_and_stops_commands_until_reopened(tmp_path):
    festival = Festival.open(small_catalog({102: 100}), data_dir=tmp_path, clock_start_ms=T0)
    append = festival.log.append

    def disk_full(now_ms, payload):
        raise OSError(28, "No space left on device")

    async def go():
        first = await festival.submit([co("before", [(102, 1)])])
        festival.log.append = disk_full
        results = await asyncio.gather(*(festival.submit([co(f"lost{i}", [(102, 1)])]) for i in range(5)),
                                       return_exceptions=True)
        festival.log.append = append  # the disk is back, but the state holds batches the log lost
        try:
            await festival.submit([co("after", [(102, 1)])])
        except Double11Error as e:
            refused = e
        return first, results, refused

    try:
        first, results, refused = asyncio.run(go())
        assert first[0]["status"] == 201
        # nobody was told "done": each got the storage fault, not a bug's 500
        assert all(isinstance(r, Double11Error) and r.code == Result.storage_unavailable for r in results)
        assert refused.code == Result.storage_unavailable and "No space left on device" in str(refused)
    finally:
        festival.close(snapshot=True)  # as a server's stop does: no snapshot of the lost batches
    # the restart recovers what the log holds: the acknowledged checkout only
    again = Festival.open(data_dir=tmp_path)
    try:
        assert again.sku(102)["reserved"] == 1
        assert again.execute([co("after", [(102, 1)])])[0]["status"] == 201
    finally:
        again.close()


def test_a_bug_while_answering_fails_the_callers_instead_of_leaving_them_waiting(tmp_path, monkeypatch):
    festival = Festival.open(small_catalog({102: 100}), data_dir=tmp_path, clock_start_ms=T0)

    def broken(*args):
        raise RuntimeError("a bug")

    async def go():
        monkeypatch.setattr(festival.group_commit, "_results", broken)
        failed = await asyncio.wait_for(asyncio.gather(festival.submit([co("a", [(102, 1)])]),
                                                       return_exceptions=True), timeout=10)
        monkeypatch.undo()
        return failed, await festival.submit([co("b", [(102, 1)])])

    try:
        failed, later = asyncio.run(go())
        assert isinstance(failed[0], RuntimeError)
        assert later[0]["status"] == 201  # the committer kept serving
    finally:
        festival.close()


def test_a_run_of_single_requests_is_answered_as_each_one_alone_would_be():
    """`submit_singles` (a front process's single requests, read in one go)
    answers each body in order exactly as `submit_single` does, refusals
    included; a run refused whole is answered without a batch."""
    import json

    import msgspec
    import numpy as np

    from double11.engine.batch import Op

    def body(**fields) -> bytes:
        return json.dumps(fields).encode()

    checkout = {"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 102, "qty": 2}]}
    requests = [
        (Op.checkout, 0, body(**checkout, idempotency_key="a")),
        (Op.checkout, 0, b"[1, 2]"),  # not an object: 400 before the engine
        (Op.checkout, 0, body(**checkout, idempotency_key="a")),  # a retry: the first answer
        (Op.checkout, 0, body(**{**checkout, "buyer": 8}, idempotency_key="a")),  # key reused
        (Op.pay, 1, body(amount_fen=1, idempotency_key="p")),  # amount_mismatch
        (Op.checkout, 0, b"{"),  # not JSON
        (Op.checkout, 0, body(buyer=9, country="US", channel="pc", lines=[{"sku": 102, "qty": 999}],
                              idempotency_key="big")),  # out_of_stock
        (Op.cancel, 1, body(idempotency_key="c")),
        (Op.restock, 102, body(qty=0, idempotency_key="r")),  # invalid_quantity
    ]
    ops = np.array([op for op, _, _ in requests], dtype=np.uint8)
    targets = np.array([t for _, t, _ in requests], dtype=np.int64)
    bodies = [b for _, _, b in requests]

    def alone(festival):
        async def go():
            out = []
            for op, target, b in requests:
                try:
                    out.append(tuple(await festival.submit_single(op, target, b)))
                except Double11Error as e:
                    out.append((e.code, msgspec.json.encode(e.body())))
            return out
        return asyncio.run(go())

    together = Festival.open(small_catalog(), clock_start_ms=T0, speedup=0.0)
    one_by_one = Festival.open(small_catalog(), clock_start_ms=T0, speedup=0.0)
    got = asyncio.run(_run(lambda: together.submit_singles(ops, targets, Bodies.of(bodies))))
    assert [tuple(a) for a in got] == alone(one_by_one)
    assert [STATUS_OF_CODE[code] for code, _ in got] == [201, 400, 201, 409, 409, 400, 409, 200, 400]
    assert together.batches == 1

    refused_whole = asyncio.run(_run(lambda: together.submit_singles(ops[1:2], targets[1:2], Bodies.of([b"[]"]))))
    assert [code for code, _ in refused_whole] == [Result.invalid_request]
    assert together.batches == 1


async def _run(submit):
    return await submit()




def test_drain_waits_until_everything_queued_is_durable_and_answered(tmp_path):
    festival = Festival.open(small_catalog({102: 10_000}), data_dir=tmp_path, clock_start_ms=T0)

    async def go():
        waiting = [asyncio.ensure_future(festival.submit([co(f"d{i}", [(102, 1)], buyer=500 + i)]))
                   for i in range(50)]
        await asyncio.sleep(0)  # queued, not yet committed
        assert not all(w.done() for w in waiting)
        assert await festival.drain()
        assert all(w.done() for w in waiting)
        return [w.result()[0]["status"] for w in waiting]

    try:
        assert asyncio.run(go()) == [201] * 50
        assert festival.sku(102)["reserved"] == 50
        assert festival.log.syncs >= 1
    finally:
        festival.close()


def test_a_batch_that_makes_tables_grow_is_applied_and_the_pause_is_reported(tmp_path, caplog):
    """Growing a table is a pause (a copy or a rehash): the batch still gets
    its answers, and the operator hears of it in the log and the metrics."""
    from double11.config import FestivalConfig

    festival = Festival.open(small_catalog({102: 10_000}), data_dir=tmp_path, clock_start_ms=T0,
                             config=FestivalConfig(expected_checkouts=16))
    try:
        assert festival.engine.must_grow(4, 4) == []
        assert "checkouts" in festival.engine.must_grow(100, 100)
        with caplog.at_level("WARNING", logger="double11.service"):
            festival.execute([co("small", [(102, 1)], buyer=3000)])  # room: no pause, no word
        assert not any("grew" in r.getMessage() for r in caplog.records)
        assert festival.metrics()["double11_table_grows_total"] == 0
        with caplog.at_level("WARNING", logger="double11.service"):
            answers = festival.execute([co(f"grow{i}", [(102, 1)], buyer=2000 + i) for i in range(100)])
        assert [a["status"] for a in answers] == [201] * 100
        assert festival.metrics()["double11_table_grows_total"] >= 3  # checkouts, lines, orders at least
        assert any("grew to take a batch" in r.getMessage() and "checkouts" in r.getMessage() for r in caplog.records)
    finally:
        festival.close()
