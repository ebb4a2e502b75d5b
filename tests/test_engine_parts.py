"""The engine's compiled building blocks against plain Python models: the hash
index, the scarce counters, the command fingerprint (which is stored in
snapshots, so its values are pinned) and the idempotency keys' pass."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from double11.config import FestivalConfig
from double11.engine.batch import CommandBatch
from double11.engine.counters import ScarceCounters
from double11.engine.hashindex import HashIndex

U64 = st.integers(min_value=1, max_value=2**64 - 1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(U64 | st.sampled_from([1, 2, 3, 2**64 - 1]), max_size=60), max_size=6))
def test_hash_index_matches_a_dict(rounds):
    index = HashIndex(capacity=4)  # small on purpose: rounds make it grow
    model: dict[int, int] = {}
    for keys in rounds:
        rows, added = index.find_or_claim(np.array(keys, dtype=np.uint64))
        for key, row, new in zip(keys, rows.tolist(), added.tolist()):
            assert new == (key not in model)
            model.setdefault(key, len(model))
            assert row == model[key]
        assert index.size == len(model)
    probe = list(model) + [5, 7, 2**63]
    expected = [model.get(k, -1) for k in probe]
    assert index.lookup(np.array(probe, dtype=np.uint64)).tolist() == expected
    copy = pickle.loads(pickle.dumps(index))
    assert copy.lookup(np.array(probe, dtype=np.uint64)).tolist() == expected


def test_hash_index_insert_refuses_a_present_key():
    index = HashIndex()
    assert index.insert(np.array([10, 20], dtype=np.uint64)).tolist() == [0, 1]
    try:
        index.insert(np.array([30, 10], dtype=np.uint64))
    except AssertionError:
        return
    raise AssertionError("inserting a present key went unnoticed")


CLAIMS = st.lists(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 6)), min_size=1, max_size=4), max_size=25)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=5, max_size=5), CLAIMS)
def test_scarce_counters_serve_claims_in_order_all_or_nothing(initial, claims):
    counters = ScarceCounters()
    offset = counters.add_kind("stock", np.array(initial))
    assert offset == 0
    flat = [line for claim in claims for line in claim]
    ok = counters.claim(np.array([c for c, _ in flat], dtype=np.int64), np.array([q for _, q in flat]),
                        np.array([len(c) for c in claims]))
    left = list(initial)
    for claim, served in zip(claims, ok.tolist()):
        need: dict[int, int] = {}
        for c, q in claim:
            need[c] = need.get(c, 0) + q
        fits = all(left[c] >= q for c, q in need.items())
        assert served == fits
        if fits:
            for c, q in need.items():
                left[c] -= q
    assert counters.available.tolist() == left
    assert min(left) >= 0


def _mix(x: int) -> int:
    m = 2**64 - 1
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & m
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def _fingerprint(op, channel, country, target, amount, lines) -> int:
    m = 2**64 - 1
    h = _mix(op ^ (channel << 8) ^ (country << 16))
    h = _mix(h ^ (target & m))
    h = _mix(h ^ (amount & m))
    if lines:
        folded = 0
        for position, (sku, qty) in enumerate(lines):
            folded ^= _mix(_mix((sku & m) ^ position) ^ (qty & m))
        h = _mix(h ^ folded)
    return h


COMMAND = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535),
                    st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1),
                    st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), st.integers(-2**31, 2**31 - 1)), max_size=4))


@settings(max_examples=100, deadline=None)
@given(st.lists(COMMAND, max_size=12))
def test_fingerprint_is_the_documented_digest(commands):
    lines = [line for c in commands for line in c[5]]
    batch = CommandBatch(
        op=np.array([c[0] for c in commands], dtype=np.uint8),
        invalid=np.zeros(len(commands), dtype=np.uint8),
        channel=np.array([c[1] for c in commands], dtype=np.uint8),
        lines=np.array([len(c[5]) for c in commands], dtype=np.uint8),
        country=np.array([c[2] for c in commands], dtype=np.uint16),
        key=np.ones(len(commands), dtype=np.uint64),
        target=np.array([c[3] for c in commands], dtype=np.int64),
        amount=np.array([c[4] for c in commands], dtype=np.int64),
        sku=np.array([s for s, _ in lines], dtype=np.int64),
        qty=np.array([q for _, q in lines], dtype=np.int32),
    )
    assert batch.fingerprints().tolist() == [_fingerprint(*c) for c in commands]


def test_fingerprint_values_are_pinned():
    # snapshots store fingerprints: a change here makes retries after an upgrade fail
    assert _fingerprint(1, 1, 0x434E, 42, 0, [(1001, 2)]) == 0x3067CDF4D7ED387D
    assert _fingerprint(2, 0, 0, 7, 12_345, []) == 0x7099DD94D1DB8172


# (key, fingerprint, malformed) per command; few keys and bodies, so that
# retries and reuses, within a batch and across batches, are common
KEYED = st.lists(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 2), st.booleans()), max_size=40), max_size=4)


@settings(max_examples=200, deadline=None)
@given(KEYED)
def test_claim_keys_matches_claiming_one_command_at_a_time(batches):
    """The keys pass claims in command order: the rows, retries and refusals
    are those of a loop that claims each command's key as it runs."""
    from double11.engine.lookups import NOT_RUN, RETRY_OF, claim_keys
    from double11.engine.machine import KEY_FIELDS
    from double11.errors import Result

    index = HashIndex(capacity=64)
    keys = np.zeros(64, dtype=np.dtype(KEY_FIELDS, align=False))
    model: dict[int, tuple[int, int]] = {}  # key -> (row, fingerprint)
    for batch in batches:
        key = np.array([k for k, _, _ in batch], dtype=np.uint64)
        fingerprint = np.array([f for _, f, _ in batch], dtype=np.uint64)
        code = np.array([1 if bad else 0 for _, _, bad in batch], dtype=np.uint8)
        ref = np.zeros(len(batch), dtype=np.int64)
        claimed = np.empty(len(batch), dtype=np.int64)
        index.reserve(len(batch))
        index.size = int(claim_keys(key, fingerprint, code, ref, index.table, index.shift, index.mask,
                                    keys, index.size, claimed))
        for (k, f, bad), got, c in zip(batch, claimed.tolist(), code.tolist()):
            if bad:
                assert (got, c) == (NOT_RUN, 1)
            elif k not in model:
                model[k] = (len(model), f)
                assert (got, c) == (model[k][0], 0)
            elif model[k][1] == f:
                assert (got, c) == (RETRY_OF - model[k][0], 0)
            else:
                assert (got, c) == (NOT_RUN, Result.idempotency_key_reused)
        assert index.size == len(model)
        assert [int(keys[row]["fingerprint"]) for row, _ in model.values()] == [f for _, f in model.values()]


def test_engine_declares_a_field_column_for_each_field_of_its_tables(small_catalog):
    """Engine's c_/l_/o_/b_/i_ columns are declared on the class (FieldOf), one
    per field of its tables and none more, each reading its own table's field."""
    from double11.engine import machine
    from double11.engine.columns import FieldOf

    tables = (("c_", "checkouts", machine.CHECKOUT_FIELDS), ("l_", "lines", machine.LINE_FIELDS),
              ("o_", "orders", machine.ORDER_FIELDS), ("b_", "buyers", machine.BUYER_FIELDS),
              ("i_", "keys", machine.KEY_FIELDS))
    fields = {prefix + name: (table, name) for prefix, table, record in tables for name, _ in record}
    declared = {name: (value.table, value.name) for name, value in vars(machine.Engine).items()
                if isinstance(value, FieldOf)}
    assert declared == fields
    engine = machine.Engine(small_catalog, FestivalConfig())
    engine.checkouts.reserve(3)
    engine.checkouts.size = 3
    engine.checkouts.rows["amount"] = [5, 6, 7]
    assert engine.c_amount.data.tolist() == [5, 6, 7] and engine.c_amount.size == 3
    engine.c_amount.data[1] = 9  # a write through the column lands in the table
    assert engine.checkouts.rows["amount"].tolist() == [5, 9, 7]


def test_touching_every_page_keeps_every_byte():
    """Engine.prefault writes every page of a restored table with its own
    bytes: the content must not change (columns.touch_pages)."""
    from double11.engine.columns import touch_pages

    rng = np.random.default_rng(5)
    for n in (1, 4095, 4096, 4097, 3 * 4096 + 17):
        data = rng.integers(0, 256, size=n, dtype=np.uint8)
        buf = data.copy()
        touch_pages(buf)
        assert np.array_equal(buf, data)
    table = np.zeros((1 << 12, 2), dtype=np.uint64)
    table[::7, 0] = np.arange(1, len(table[::7]) + 1, dtype=np.uint64)
    before = table.copy()
    touch_pages(table)
    assert np.array_equal(table, before)
