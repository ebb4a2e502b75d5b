"""The quotas area's `release` (double11/quotas): unsold units taken out of a
SKU's stock, the giving half of a quota moved between a cluster's units.

Through the in-process festival (no HTTP): what a release takes and leaves,
what it refuses, its retries, the binary lane and a single request's body,
the log and the snapshot, and quotas moved between two units summing to the
whole.  The random streams against the reference model include it too
(tests/test_properties*.py)."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import numpy as np
import pytest
from model import T0, UNKNOWN_SKU, cancel, co, pay, refund, release, restock, small_catalog
from model.reference import ReferenceFestival
from model.state import engine_state

from double11 import Festival, limits
from double11.access.roles import Principal, Role
from double11.cluster.quotas import unit_catalogs
from double11.config import FestivalConfig
from double11.engine import wire
from double11.engine.batch import CommandBatch
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine
from double11.errors import Result
from double11.quotas.spec import RELEASE

SKU = 102  # 5 for sale in the small catalog, 100 fen each
_keys = itertools.count()


def key() -> str:
    return f"q{next(_keys)}"


@pytest.fixture
def festival():
    f = Festival.open(small_catalog())
    yield f
    f.close()


def one(f: Festival, cmd: dict, principal: Principal | None = None) -> dict:
    (r,) = f.execute([cmd]) if principal is None else f.execute([cmd], principal=principal)
    return r


def ok_body(f: Festival, cmd: dict) -> dict:
    r = one(f, cmd)
    assert r["status"] in (200, 201), r
    return r["body"]


def units(f: Festival, sku: int = SKU) -> tuple[int, int, int, int]:
    """(for sale, reserved, sold, stocked) of a SKU."""
    view = f.sku(sku)
    assert view is not None
    return view["stock"], view["reserved"], view["sold"], view["stocked"]


def refusal(r: dict) -> tuple[int, str, str]:
    return r["status"], r["body"]["error"]["code"], r["body"]["error"]["message"]


# ------------------------------------------------------------------ what it does
def test_a_release_takes_units_for_sale_and_checkouts_are_refused_beyond_the_rest(festival):
    assert ok_body(festival, release(key(), SKU, 3)) == {"sku": SKU, "qty": 3, "stock": 2}
    assert units(festival) == (2, 0, 0, 2)
    assert refusal(one(festival, co(key(), [(SKU, 3)])))[1] == "out_of_stock"
    assert one(festival, co(key(), [(SKU, 2)]))["status"] == 201
    assert refusal(one(festival, co(key(), [(SKU, 1)])))[1] == "out_of_stock"
    assert units(festival) == (0, 2, 0, 2)


def test_reserved_and_sold_units_are_not_released(festival):
    reserved = ok_body(festival, co(key(), [(SKU, 2)]))
    paid = ok_body(festival, co(key(), [(SKU, 2)]))
    ok_body(festival, pay(key(), paid["checkout"], paid["amount_fen"]))
    assert units(festival) == (1, 2, 2, 5)
    before = engine_state(festival.engine)
    status, code, message = refusal(one(festival, release(key(), SKU, 2)))
    assert (status, code) == (409, "out_of_stock")
    assert message == (f"qty must be at most the units sku {SKU} has for sale (1; reserved and sold units are not), "
                       "got 2; nothing was released")
    changed = {name for name, value in engine_state(festival.engine).items() if before[name] != value}
    assert changed <= {"keys", "idem_index", "now_ms"}, "a refused release changed the stock"
    assert ok_body(festival, release(key(), SKU, 1)) == {"sku": SKU, "qty": 1, "stock": 0}
    assert units(festival) == (0, 2, 2, 4)
    # units coming back from a checkout go on sale within the smaller stock
    ok_body(festival, cancel(key(), reserved["checkout"]))
    ok_body(festival, refund(key(), paid["orders"][0]["order"]))
    assert units(festival) == (4, 0, 0, 4)
    assert ok_body(festival, release(key(), SKU, 4)) == {"sku": SKU, "qty": 4, "stock": 0}
    assert units(festival) == (0, 0, 0, 0)


def test_a_restock_and_a_release_of_the_same_units_leave_the_stock_as_it_was(festival):
    ok_body(festival, co(key(), [(SKU, 1)]))
    before = units(festival)
    ok_body(festival, restock(key(), SKU, 7))
    assert ok_body(festival, release(key(), SKU, 7)) == {"sku": SKU, "qty": 7, "stock": before[0]}
    assert units(festival) == before
    # all of a batch in order: the release sees what the restock before it added
    got = festival.execute([release(key(), SKU, 100), restock(key(), SKU, 100), release(key(), SKU, 100)])
    assert [r["status"] for r in got] == [409, 200, 200]
    assert units(festival) == before


def test_quotas_moved_between_two_units_sum_to_the_whole_stock():
    """The rebalancer's transfer: release on the giving unit, then restock
    on the receiving one only if the release was done.  Whatever was sold
    and moved, per SKU the units' stocked figures sum to the catalog's stock
    and each unit has sold <= stocked."""
    catalog = small_catalog()
    units_ = [Festival.open(c) for c in unit_catalogs(catalog, 2)]
    rng = np.random.default_rng(11)
    try:
        skus = catalog.sku_id.tolist()
        for step in range(60):
            giver, taker = (0, 1) if rng.integers(2) else (1, 0)
            sku, qty = int(rng.choice(skus)), int(rng.integers(1, 3))
            if step % 3 == 0:  # a sale in one unit
                c = one(units_[giver], co(key(), [(sku, 1)]))
                if c["status"] == 201 and rng.integers(2):
                    ok_body(units_[giver], pay(key(), c["body"]["checkout"], c["body"]["amount_fen"]))
            transfer = f"t{step}"
            done = one(units_[giver], release(f"{transfer}-release", sku, qty))
            if done["status"] == 200:
                ok_body(units_[taker], restock(f"{transfer}-restock", sku, qty))
            else:
                assert done["body"]["error"]["code"] == "out_of_stock"
            for k, sku_id in enumerate(skus):
                per_unit = [units(u, sku_id) for u in units_]
                assert sum(stocked for _, _, _, stocked in per_unit) == int(catalog.sku_stock[k])
                for for_sale, reserved, sold, stocked in per_unit:
                    assert min(for_sale, reserved, sold) >= 0 and sold <= stocked
                    assert for_sale + reserved + sold == stocked
    finally:
        for u in units_:
            u.close()


# ------------------------------------------------------------------------ retries
def test_a_retry_answers_its_first_result_whatever_the_stock_became(festival):
    first = release("move-1", SKU, 2)
    assert one(festival, first) == {"status": 200, "body": {"sku": SKU, "qty": 2, "stock": 3}}
    ok_body(festival, restock(key(), SKU, 10))
    assert one(festival, dict(first)) == {"status": 200, "body": {"sku": SKU, "qty": 2, "stock": 3}}
    assert units(festival) == (13, 0, 0, 13), "a retry released again"
    # a refusal is remembered too, with its words
    too_many = release("move-2", SKU, 20)
    refused = one(festival, too_many)
    ok_body(festival, restock(key(), SKU, 100))
    assert one(festival, dict(too_many)) == refused
    assert "(13;" in refused["body"]["error"]["message"]
    assert units(festival) == (113, 0, 0, 113)
    # the same key with another body; a retry in the same batch
    assert refusal(one(festival, release("move-1", SKU, 3)))[1] == "idempotency_key_reused"
    twice = festival.execute([release("move-3", SKU, 1), release("move-3", SKU, 1)])
    assert twice[0] == twice[1] == {"status": 200, "body": {"sku": SKU, "qty": 1, "stock": 112}}
    assert units(festival) == (112, 0, 0, 112)


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cmd,status,code,words", [
    ({"qty": 0}, 400, "invalid_quantity", "qty must be 1..1000000000, got 0"),
    ({"qty": -3}, 400, "invalid_quantity", "qty must be 1..1000000000, got -3"),
    ({"qty": limits.restock_qty_max + 1}, 400, "invalid_quantity", "qty must be 1..1000000000, got 1000000001"),
    ({"qty": "2"}, 400, "invalid_quantity", "qty must be 1..1000000000, got '2'"),
    ({"qty": None}, 400, "invalid_quantity", "qty is missing (1..1000000000)"),
    ({"sku": 0}, 400, "invalid_request", "sku must be a positive integer up to"),
    ({"sku": "102"}, 400, "invalid_request", "sku must be a positive integer up to"),
    ({"idempotency_key": None}, 400, "invalid_idempotency_key", "idempotency_key is missing (1..128 characters)"),
    ({"sku": UNKNOWN_SKU}, 404, "unknown_sku", f"sku {UNKNOWN_SKU} is not in the catalog"),
])
def test_bad_input_is_refused_with_a_code_and_words_naming_the_field(festival, cmd, status, code, words):
    sent = {**release(key(), SKU, 1), **cmd}
    sent = {k: v for k, v in sent.items() if v is not None}  # None: left out
    got = refusal(one(festival, sent))
    assert got[:2] == (status, code)
    assert got[2].startswith(words), got[2]
    assert units(festival) == (5, 0, 0, 5)


@pytest.mark.parametrize("principal", [Principal(Role.merchant, 10), Principal(Role.buyer, 7),
                                       Principal(Role.gateway, 0)])
def test_only_the_operator_may_release(festival, principal):
    """Even a merchant on its own SKU: a quota is the cluster's to move."""
    sent = release("not-yours", SKU, 1)
    status, code, message = refusal(one(festival, sent, principal))
    assert (status, code) == (403, "forbidden")
    assert message == f"a{'n' if principal.role.name[0] in 'aeiou' else ''} {principal.role.name} token may not release"
    assert units(festival) == (5, 0, 0, 5)
    # the refused command took no key: the operator's with the same key is done
    assert ok_body(festival, sent) == {"sku": SKU, "qty": 1, "stock": 4}


# -------------------------------------------------------------- the other lanes
def test_the_binary_lane_carries_a_release_and_words_its_refusals_as_json_does(festival):
    commands = [release(key(), SKU, 2), release(key(), UNKNOWN_SKU, 1), release(key(), SKU, 9)]
    body = encode_commands(commands).to_bytes()
    answer = wire.decode_results(festival.execute_binary(body))
    assert answer["code"].tolist() == [Result.ok, Result.unknown_sku, Result.out_of_stock]
    assert answer["ref"].tolist() == [3, UNKNOWN_SKU, 3]  # units left, the SKU, units for sale
    words = wire.messages(CommandBatch.from_bytes(body), answer)
    as_json = [r["body"]["error"]["message"] for r in festival.execute(commands[1:])]  # retries: their first results
    assert words == [None, *as_json]
    assert units(festival) == (3, 0, 0, 3)


def _binary(mutate) -> bytes:
    batch = encode_commands([release(key(), SKU, 1)])
    mutate(batch)
    return batch.to_bytes()


def _without_args(batch: CommandBatch) -> None:
    batch.args[:] = 0
    batch.arg = batch.arg[:0]


@pytest.mark.parametrize("mutate,code,words", [
    (lambda b: b.arg.__setitem__(0, 0), Result.invalid_quantity, "qty must be 1..1000000000, got 0"),
    (lambda b: b.arg.__setitem__(0, -1), Result.invalid_quantity, "qty must be 1..1000000000, got -1"),
    (lambda b: b.target.__setitem__(0, 0), Result.invalid_request, "sku must be a positive integer up to"),
    (_without_args, Result.invalid_quantity, "release takes 1 args, got 0"),
])
def test_a_malformed_binary_release_is_refused_by_its_declaration(festival, mutate, code, words):
    body = _binary(mutate)
    answer = wire.decode_results(festival.execute_binary(body))
    assert answer["code"].tolist() == [code]
    (message,) = wire.messages(CommandBatch.from_bytes(body), answer)
    assert message is not None and message.startswith(words), message
    assert units(festival) == (5, 0, 0, 5)


def test_a_single_request_is_answered_as_the_same_command_in_a_batch(festival):
    async def single(sku: int, body: dict) -> tuple[int, dict]:
        code, answer = await festival.submit_single(RELEASE.number, sku, msgspec.json.encode(body))
        return code, msgspec.json.decode(answer)

    code, body = asyncio.run(single(SKU, {"qty": 2, "idempotency_key": "single"}))
    assert (code, body) == (Result.ok, {"sku": SKU, "qty": 2, "stock": 3})
    # the path's SKU wins over the body's, as for every command with an id in its path
    code, body = asyncio.run(single(SKU, {"sku": 101, "qty": 1, "idempotency_key": "single-2"}))
    assert (code, body) == (Result.ok, {"sku": SKU, "qty": 1, "stock": 2})
    code, body = asyncio.run(single(SKU, {"qty": 0, "idempotency_key": "single-3"}))
    assert (code, body["error"]["message"]) == (Result.invalid_quantity, "qty must be 1..1000000000, got 0")
    # the batch's retry of the first one answers what the single request was told
    assert one(festival, release("single", SKU, 2))["body"] == {"sku": SKU, "qty": 2, "stock": 3}


def test_a_forged_release_without_its_args_is_refused_and_reads_nothing():
    """A batch that skipped validation (a log record read back as trusted)
    with a restock's columns under release's op: unknown_op, nothing taken."""
    engine = Engine(small_catalog(), FestivalConfig())
    batch = encode_commands([restock(key(), SKU, 3), co(key(), [(101, 1)])])
    batch.op[0] = RELEASE.number
    code, ref = engine.apply(CommandBatch.from_bytes(batch.to_bytes(), trusted=True), T0)
    assert code.tolist() == [Result.unknown_op, Result.ok]
    assert int(engine.available[1]) == 5 and int(engine.sku_stocked[1]) == 5


# ------------------------------------------------------- the log and the snapshot
STREAM = [
    [co("a", [(SKU, 2)]), release("r1", SKU, 1), restock("s1", 101, 4)],
    [release("r2", 101, 5), release("r3", SKU, 9), pay("p1", 1, 200)],
    [release("r4", SKU, 2), release("r5", UNKNOWN_SKU, 1), co("b", [(SKU, 1)])],
    [refund("f1", 1), release("r6", SKU, 2), release("r7", 103, 1)],
]


@pytest.mark.parametrize("snapshot_after", [None, 0, 2])
def test_replaying_the_log_and_a_snapshot_give_back_the_same_state(tmp_path, snapshot_after):
    festival = Festival.open(small_catalog(), data_dir=tmp_path)
    model = ReferenceFestival(small_catalog(), festival.engine.config)
    first: dict[str, dict] = {}  # each release's first answer, by its key
    try:
        for k, commands in enumerate(STREAM):
            got = festival.execute(commands, T0 + 1000 * k)
            want = model.execute(commands, T0 + 1000 * k)
            assert [_norm(r) for r in got] == [_norm(r) for r in want]
            first |= {c["idempotency_key"]: r for c, r in zip(commands, got) if c["op"] == "release"}
            if k == snapshot_after:
                festival.snapshot()
        state, views = engine_state(festival.engine), [festival.sku(s) for s in (101, 102, 103)]
        assert views == [model.sku(s) for s in (101, 102, 103)]
    finally:
        festival.close()
    reopened = Festival.open(data_dir=tmp_path)
    try:
        assert engine_state(reopened.engine) == state
        # its idempotency table came back: each release's retry answers its first result
        retries = [c for commands in STREAM for c in commands if c["op"] == "release"]
        assert reopened.execute(retries) == [first[c["idempotency_key"]] for c in retries]
        assert [reopened.sku(s) for s in (101, 102, 103)] == views, "a retry after recovery released again"
    finally:
        reopened.close()


def _norm(result: dict) -> tuple:
    """A result as the model words it: an error by its code alone."""
    if result["status"] >= 400:
        return result["status"], result["body"]["error"]["code"]
    return result["status"], result["body"]
