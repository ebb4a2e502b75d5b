"""The compact binary batch: round trips, and the same verdicts as the JSON path."""

from __future__ import annotations

import numpy as np
import pytest
from model import small_catalog

from double11 import Festival
from double11.engine.batch import CommandBatch
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results
from double11.errors import Double11Error, Result

T0 = 1_510_329_600_000


def co(key, lines, **kw):
    return {"op": "checkout", "buyer": kw.get("buyer", 7), "country": kw.get("country", "CN"),
            "channel": kw.get("channel", "mobile"), "lines": [{"sku": s, "qty": q} for s, q in lines],
            "idempotency_key": key}


# commands whose shape is wrong in a way both encodings can carry
RANGE_ERRORS = [
    co("q0", [(101, 0)]),
    co("q1000", [(101, 1000)]),
    co("sku0", [(0, 1)]),
    co("buyer0", [(101, 1)], buyer=0),
    co("empty", []),
    co("many", [(101, 1)] * 17),
    {"op": "pay", "checkout": 0, "amount_fen": 5, "idempotency_key": "p0"},
    {"op": "pay", "checkout": 1, "amount_fen": 0, "idempotency_key": "pa0"},
    {"op": "cancel", "checkout": -3, "idempotency_key": "c"},
    {"op": "refund", "order": 0, "idempotency_key": "r"},
    {"op": "restock", "sku": 101, "qty": 0, "idempotency_key": "s0"},
    {"op": "restock", "sku": 101, "qty": 2_000_000_000, "idempotency_key": "s1"},
    co("fine", [(101, 1), (102, 2)]),
]


def _columns(commands) -> CommandBatch:
    """The commands as a gateway would pack them: every field, every line, no verdicts."""
    from double11 import geo
    from double11.engine.batch import Channel, Op

    target_field = {"checkout": "buyer", "pay": "checkout", "cancel": "checkout", "confirm": "order",
                    "refund": "order", "restock": "sku"}
    lines = [line for c in commands for line in c.get("lines", [])]
    return CommandBatch(
        op=np.array([Op[c["op"]] for c in commands], dtype=np.uint8),
        invalid=np.zeros(len(commands), dtype=np.uint8),
        channel=np.array([Channel[c["channel"]] if "channel" in c else 0 for c in commands], dtype=np.uint8),
        lines=np.array([len(c.get("lines", [])) for c in commands], dtype=np.uint8),
        country=np.array([geo.encode(c["country"]) if "country" in c else 0 for c in commands], dtype=np.uint16),
        key=np.arange(1, len(commands) + 1, dtype=np.uint64),
        target=np.array([c[target_field[c["op"]]] for c in commands], dtype=np.int64),
        amount=np.array([c.get("amount_fen", c.get("qty", 0)) for c in commands], dtype=np.int64),
        sku=np.array([line["sku"] for line in lines], dtype=np.int64),
        qty=np.array([line["qty"] for line in lines], dtype=np.int32),
    )


def test_binary_validation_agrees_with_the_json_path():
    from_json = encode_commands(RANGE_ERRORS)
    assert from_json.invalid[:-1].all() and from_json.invalid[-1] == 0
    from_binary = CommandBatch.from_bytes(_columns(RANGE_ERRORS).to_bytes())
    assert [Result(c).name for c in from_binary.invalid] == [Result(c).name for c in from_json.invalid]


def test_a_binary_batch_round_trips_and_answers_like_json():
    commands = [co("a", [(101, 1), (102, 2)]), co("b", [(106, 1)]), co("c", [(999, 1)])]
    json_festival = Festival.open(small_catalog())
    expected = json_festival.execute(commands, T0)
    binary_festival = Festival.open(small_catalog())
    answer = decode_results(binary_festival.execute_binary(encode_commands(commands).to_bytes(), T0))
    assert [Result(c).name for c in answer["code"]] == ["ok", "out_of_stock", "unknown_sku"]
    assert answer["ref"][0] == expected[0]["body"]["checkout"]
    assert answer["amount_fen"][0] == expected[0]["body"]["amount_fen"]
    orders = expected[0]["body"]["orders"]
    assert (answer["first_order"][0], answer["orders"][0]) == (orders[0]["order"], len(orders))
    assert answer["expires_at"][0] == expected[0]["body"]["expires_at"]


@pytest.mark.parametrize("mangle", [
    lambda b: b[:10],  # shorter than its header
    lambda b: b"XXXX" + b[4:],  # not our magic
    lambda b: b + b"\0",  # longer than its header says
])
def test_a_malformed_binary_batch_is_refused_whole(mangle):
    festival = Festival.open(small_catalog())
    body = encode_commands([co("a", [(101, 1)])]).to_bytes()
    with pytest.raises(Double11Error) as refused:
        festival.execute_binary(mangle(body), T0)
    assert refused.value.code == Result.invalid_request
    assert festival.sku(101)["stock"] == 3  # nothing was applied


def test_sparse_and_dense_catalog_ids_find_the_same_skus():
    from double11.engine.hashindex import StaticIndex

    dense = StaticIndex(np.array([3, 1, 2, 7], dtype=np.int64))
    sparse = StaticIndex(np.array([3 << 40, 1, 2 << 50, 7], dtype=np.int64))
    assert dense.lookup(np.array([7, 3, 5, 0, -1, 99])).tolist() == [3, 0, -1, -1, -1, -1]
    assert sparse.lookup(np.array([7, 3 << 40, 5, 2 << 50])).tolist() == [3, 0, -1, 2]


def test_every_binary_answer_carries_what_the_json_answer_says():
    """Each command's columns (a batch of every kind of outcome): ids and
    amounts where the JSON answer has them, zeros where it has none."""
    first = [co("a", [(101, 1), (102, 2)]), co("b", [(103, 1)]), co("c", [(106, 1)]), co("d", [(104, 2), (101, 1)]),
             co("e", [(999, 1)])]
    json_festival, binary_festival = Festival.open(small_catalog()), Festival.open(small_catalog())
    created = json_festival.execute(first, T0)
    binary_festival.execute_binary(encode_commands(first).to_bytes(), T0)
    a, b, d = (created[i]["body"] for i in (0, 1, 3))
    second = [
        {"op": "pay", "checkout": a["checkout"], "amount_fen": a["amount_fen"], "idempotency_key": "pay-a"},
        {"op": "pay", "checkout": b["checkout"], "amount_fen": b["amount_fen"] + 1, "idempotency_key": "pay-b"},
        {"op": "cancel", "checkout": d["checkout"], "idempotency_key": "cancel-d"},
        {"op": "confirm", "order": a["orders"][0]["order"], "idempotency_key": "confirm-a"},
        {"op": "restock", "sku": 102, "qty": 5, "idempotency_key": "restock"},
        co("a", [(101, 1), (102, 2)]),  # a retry: the first answer
        co("f", [(105, 1)]),
        co("g", [(105, 1)]),  # its one unit went to f
    ]
    expected = json_festival.execute(second, T0 + 1_000)
    answer = decode_results(binary_festival.execute_binary(encode_commands(second).to_bytes(), T0 + 1_000))
    statuses = [r["status"] for r in expected]
    assert {200, 201, 409} <= set(statuses)  # every outcome: done, created, refused
    for i, (command, result) in enumerate(zip(second, expected)):
        body, ok = result["body"], result["status"] < 300
        assert (answer["code"][i] == Result.ok) == ok, i
        if not ok:
            assert Result(answer["code"][i]).name == body["error"]["code"], i
        got = {name: int(answer[name][i]) for name in ("amount_fen", "first_order", "orders", "expires_at")}
        want = dict.fromkeys(got, 0)
        if ok and command["op"] == "checkout":
            assert answer["ref"][i] == body["checkout"]
            want = {"amount_fen": body["amount_fen"], "first_order": body["orders"][0]["order"],
                    "orders": len(body["orders"]), "expires_at": body["expires_at"]}
        elif ok and command["op"] == "pay":
            assert answer["ref"][i] == body["checkout"]
            want["amount_fen"] = body["amount_fen"]
        elif not ok and body["error"]["code"] == "amount_mismatch":  # the total it should have paid
            want["amount_fen"] = json_festival.checkout(command["checkout"])["amount_fen"]
        assert got == want, (i, command)


def test_a_binary_deals_refusals_are_worded_by_who_refused_it():
    """invalid_deal is the edge's for a price out of its bounds and the
    engine's for a price not below the list price: a gateway reads each
    one's own words (wire.messages), as a JSON client does."""
    from double11.engine.wire import messages
    from double11.promotions.spec import DEAL

    window = {"from": 0, "until": 4_102_444_800_000, "kind": "flash", "qty": 2, "per_buyer_max": 1}
    commands = [{"op": "deal", "idempotency_key": "d1", "sku": 101, "price_fen": 5, **window},
                {"op": "deal", "idempotency_key": "d2", "sku": 102, "price_fen": 100, **window}]
    batch = encode_commands(commands)
    batch.arg[DEAL.arg_at("price_fen")] = 0  # the first deal's price, past its bound: only a gateway can send it
    festival = Festival.open(small_catalog())
    sent = CommandBatch.from_bytes(batch.to_bytes())
    said = messages(sent, decode_results(festival.execute_binary(batch.to_bytes(), T0)))
    assert said[0] == "price_fen must be 1..1000000000000, got 0"
    assert said[1] == "price_fen must be below the SKU's list price 100, got 100"
