"""The single-request lane: bodies parsed in one compiled pass, answers
written in one, must equal the general path's, byte for byte."""

from __future__ import annotations

import json

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from double11.catalog.generate import generate_catalog
from double11.config import FestivalConfig
from double11.engine import views
from double11.engine.answers import answers
from double11.engine.batch import ARG_COLUMNS, COMMAND_COLUMNS, LINE_COLUMNS, Op
from double11.engine.encode import decode_single, encode_commands
from double11.engine.json_commands import Bodies, encode_bodies, parse_bodies
from double11.engine.machine import Engine
from double11.errors import Double11Error, Result
from double11.promotions.spec import GRANT

NOW = 1_510_329_600_000

ints = st.one_of(st.integers(1, 10**6), st.integers(-5, 5), st.integers(10**17, 10**19),
                 st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(), st.text(max_size=3))
texts = st.one_of(st.sampled_from(["CN", "US", "cn", "XX", "C", "mobile", "pc", "Mobile", ""]),
                  st.text(max_size=6), st.text(alphabet="ab\\\"\n\u00e9\u4e2d", max_size=4))
keys = st.one_of(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20),
                 st.text(max_size=130), st.sampled_from(["a" * 128, "a" * 129, "é", "k\\u0041", ""]), st.integers())
lines = st.lists(st.fixed_dictionaries({"sku": st.integers(1, 40)}, optional={"qty": ints, "x": st.integers()})
                 | st.fixed_dictionaries({"sku": ints, "qty": st.integers(0, 1001)}) | ints,
                 max_size=18)


def _field(name: str):
    return {"buyer": ints, "country": texts, "channel": texts, "lines": lines, "idempotency_key": keys,
            "amount_fen": ints, "qty": ints, "op": texts, "checkout": ints, "note": texts,
            "coupons": st.one_of(st.lists(ints, max_size=10), ints), "source": texts, "template": ints}[name]


@st.composite
def bodies(draw):
    """A request body: mostly well-formed commands, spelled in every way JSON
    allows (order, spaces, escapes), with every kind of wrong value mixed in."""
    op = draw(st.sampled_from([*Op, GRANT.number]))  # a grant: an area's command, never the lane's
    needed = {Op.checkout: ["buyer", "country", "channel", "lines", "idempotency_key"], Op.pay: ["amount_fen",
              "idempotency_key"], Op.restock: ["qty", "idempotency_key"],
              GRANT.number: ["buyer", "source", "idempotency_key"]}.get(op, ["idempotency_key"])
    if op == Op.checkout and draw(st.booleans()):
        needed = needed + ["coupons"]
    good = {"buyer": st.integers(1, 10**6), "country": st.sampled_from(["CN", "US", "JP"]),
            "channel": st.sampled_from(["mobile", "pc"]), "idempotency_key": keys.filter(lambda k: isinstance(k, str)),
            "lines": st.lists(st.fixed_dictionaries({"sku": st.integers(1, 40), "qty": st.integers(1, 999)}),
                              min_size=1, max_size=16),
            "amount_fen": st.integers(1, 10**9), "qty": st.integers(1, 10**9),
            "coupons": st.lists(st.integers(1, 50), max_size=8, unique=True), "source": st.just("game:ar")}
    names = draw(st.permutations(needed))
    if draw(st.booleans()):  # drop or add a field
        extra = draw(st.sampled_from(["buyer", "amount_fen", "qty", "op", "checkout", "note", "lines", "coupons"]))
        names = names[1:] if draw(st.booleans()) else names + [extra]
    members = []
    for name in names:
        value = draw(good[name]) if name in good and draw(st.integers(0, 4)) else draw(_field(name))
        members.append((name, value))
    if draw(st.integers(0, 9)) == 0 and members:  # a duplicate member
        members.append(members[0])
    space = draw(st.sampled_from(["", " ", "\n\t ", "\r\n"]))
    escape = draw(st.integers(0, 9)) == 0
    text = "{" + space + ("," + space).join(
        json.dumps(k, ensure_ascii=escape) + space + ":" + space + json.dumps(v, ensure_ascii=escape)
        for k, v in members) + space + "}"
    raw = text.encode()
    mutation = draw(st.integers(0, 19))
    if mutation == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif mutation == 1:
        raw = b"[" + raw + b"]"
    elif mutation == 2:
        raw = raw + b" x"
    target = draw(st.integers(0, 10**6)) if op != Op.checkout else 0
    return int(op), target, raw


def test_the_lane_takes_a_checkouts_coupons():
    with_coupons = (b'{"buyer":7,"country":"CN","channel":"pc","lines":[{"sku":3,"qty":2}],"coupons":[4, 9],'
                    b'"idempotency_key":"a"}')
    no_coupons = b'{"buyer":7,"country":"CN","channel":"pc","lines":[{"sku":3,"qty":2}],"coupons":[],' \
                 b'"idempotency_key":"b"}'
    repeated = b'{"buyer":7,"country":"CN","channel":"pc","lines":[{"sku":3,"qty":2}],"coupons":[4,4],' \
               b'"idempotency_key":"c"}'
    bodies = Bodies.of([with_coupons, no_coupons, repeated])
    ops, targets = np.array([Op.checkout] * 3, dtype=np.uint8), np.zeros(3, dtype=np.int64)
    taken, _ = parse_bodies(bodies, ops, targets)
    assert taken.tolist() == [True, True, False]  # a repeat is worded by the general path
    batch, _ = encode_bodies(bodies, ops, targets)
    assert batch.args.tolist() == [2, 0, 0] and batch.arg.tolist() == [4, 9]
    assert batch.invalid.tolist() == [0, 0, 1]  # 1: invalid_request


def _expected(op: int, target: int, body: bytes):
    try:
        return encode_commands([decode_single(body, op, target)])
    except Double11Error as e:
        return e


@settings(max_examples=600, deadline=None)
@given(st.lists(bodies(), min_size=1, max_size=12))
def test_the_lane_encodes_every_body_as_the_general_path_does(requests):
    ops = np.array([op for op, _, _ in requests], dtype=np.uint8)
    targets = np.array([t for _, t, _ in requests], dtype=np.int64)
    batch, refused = encode_bodies(Bodies.of([b for _, _, b in requests]), ops, targets)
    expected = [_expected(*r) for r in requests]
    kept = [e for e in expected if not isinstance(e, Double11Error)]
    for k, e in enumerate(expected):
        if isinstance(e, Double11Error):
            assert k in refused and str(refused[k]) == str(e)
    assert len(batch) == len(kept)
    if kept:
        want = kept[0].concat(kept)
        for name, _dtype in COMMAND_COLUMNS + LINE_COLUMNS + ARG_COLUMNS:
            got, exp = getattr(batch, name), getattr(want, name)
            assert got.dtype == exp.dtype, name
            assert np.array_equal(got, exp), (name, got, exp, requests)


def test_the_lane_takes_plain_commands_and_leaves_the_rest():
    plain = b'{"buyer":7,"country":"CN","channel":"pc","lines":[{"sku":3,"qty":2}],"idempotency_key":"a"}'
    spaced = b' {"idempotency_key" : "b", "lines" : [ {"qty":1 , "sku":4} ] , "channel":"mobile",' \
             b'"country":"JP","buyer":9 } '
    float_qty = b'{"buyer":7,"country":"CN","channel":"pc","lines":[{"sku":3,"qty":2.0}],"idempotency_key":"c"}'
    escaped = b'{"buyer":7,"country":"CN","channel":"pc","lines":[{"sku":3,"qty":2}],"idempotency_key":"\\u0041"}'
    batch, refused = encode_bodies(Bodies.of([plain, spaced, float_qty, escaped, b"nope"]),
                                   np.array([Op.checkout] * 5, dtype=np.uint8), np.zeros(5, dtype=np.int64))
    assert list(refused) == [4]
    taken, _ = parse_bodies(Bodies.of([plain, spaced, float_qty, escaped, b"nope"]),
                            np.array([Op.checkout] * 5, dtype=np.uint8), np.zeros(5, dtype=np.int64))
    assert taken.tolist() == [True, True, False, False, False]
    assert batch.invalid.tolist() == [0, 0, 2, 0]  # 2: invalid_quantity, worded by the general path
    assert batch.lines.tolist() == [1, 1, 0, 1] and batch.sku.tolist() == [3, 4, 3]
    assert batch.key[3] == encode_commands([{"op": "checkout", "idempotency_key": "A"}]).key[0]


def test_answers_are_byte_for_byte_the_general_paths():
    catalog = generate_catalog(merchants=6, skus=40, seed=3)
    catalog.sku_stock[:] = 3
    engine = Engine(catalog, FestivalConfig())
    skus = catalog.sku_id.tolist()
    rng = np.random.default_rng(1)
    commands = []
    for k in range(60):
        chosen = rng.choice(len(skus), size=int(rng.integers(1, 5)), replace=False)
        commands.append({"op": "checkout", "idempotency_key": f"c{k}", "buyer": int(rng.integers(1, 9)),
                         "country": "CN", "channel": "mobile",
                         "lines": [{"sku": skus[i], "qty": int(rng.integers(1, 3))} for i in chosen]})
    commands.append({"op": "checkout", "idempotency_key": "c0", "buyer": 1, "country": "CN", "channel": "pc",
                     "lines": [{"sku": skus[0], "qty": 1}]})  # the key reused with another body
    first = encode_commands(commands)
    code, ref = engine.apply(first, NOW)
    created = [(int(r), int(engine.c_amount.data[r - 1])) for c, r in zip(code, ref) if c == 0][:10]
    more = [{"op": "pay", "idempotency_key": f"p{k}", "checkout": c, "amount_fen": a}
            for k, (c, a) in enumerate(created)]
    more += [{"op": "pay", "idempotency_key": "bad", "checkout": created[0][0], "amount_fen": 1},
             {"op": "cancel", "idempotency_key": "x", "checkout": created[-1][0]},
             {"op": "refund", "idempotency_key": "y", "order": 1},
             {"op": "restock", "idempotency_key": "z", "sku": skus[1], "qty": 5},
             {"op": "pay", "idempotency_key": "w", "checkout": 10**9, "amount_fen": 5}]
    second = encode_commands(more)
    code2, ref2 = engine.apply(second, NOW + 1000)
    enc = msgspec.json.Encoder()
    for batch, c, r in ((first, code, ref), (second, code2, ref2)):
        for start, stop in ((0, len(batch)), (3, len(batch) - 2)):
            general = [(code, enc.encode(body)) for code, body in views.results(engine, batch, c, r, start, stop)]
            got = answers(engine, batch, c, r, start, stop)
            assert list(got) == general
            assert [got[i] for i in range(len(got))] == general == list(got[:len(got)])
            assert list(got[1:3]) == general[1:3] and got[-1] == general[-1]
    assert {s for s, _ in answers(engine, first, code, ref, 0, len(first))} >= {Result.created, Result.out_of_stock}
