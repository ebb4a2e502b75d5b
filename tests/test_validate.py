"""The compiled check of a binary batch's shape (`batch.validate`) against
the rules written plainly, one NumPy pass per rule, in their order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from double11 import geo, limits
from double11.engine.batch import Channel, CommandBatch, Op, validate
from double11.errors import Result


def reference(batch: CommandBatch) -> np.ndarray:
    """Each command's first failing rule (0: none)."""
    inv = np.zeros(len(batch.op), dtype=np.uint8)
    op = batch.op.astype(np.int64)

    def mark(mask, code: Result) -> None:
        inv[mask & (inv == 0)] = code

    is_checkout = op == Op.checkout
    owner = np.repeat(np.arange(len(op)), batch.lines)
    # lines in order, each its sku then its qty: the first bad line decides
    line_code = np.where(batch.sku <= 0, Result.invalid_request,
                         np.where((batch.qty < 1) | (batch.qty > limits.line_qty_max), Result.invalid_quantity, 0))
    bad = np.flatnonzero(line_code)
    owners, first = np.unique(owner[bad], return_index=True)
    bad_line = np.zeros(len(op), dtype=np.uint8)
    bad_line[owners] = line_code[bad[first]]
    known_country = np.zeros(len(op), dtype=bool)
    in_range = batch.country < geo.COUNTRY_SLOTS
    known_country[in_range] = geo.VALID[batch.country[in_range]]
    mark((op < Op.checkout) | (op > Op.restock), Result.unknown_op)
    mark(batch.key == 0, Result.invalid_idempotency_key)
    mark(is_checkout & (batch.target <= 0), Result.invalid_request)
    mark(is_checkout & ~known_country, Result.invalid_country)
    mark(is_checkout & (batch.channel != Channel.mobile) & (batch.channel != Channel.pc), Result.invalid_channel)
    mark(is_checkout & (batch.lines == 0), Result.empty_checkout)
    mark(is_checkout & (batch.lines > limits.checkout_lines_max), Result.too_many_lines)
    mark(~is_checkout & (batch.lines != 0), Result.invalid_request)
    open_ = inv == 0
    inv[open_] = bad_line[open_]
    mark(np.isin(op, [Op.pay, Op.cancel, Op.confirm, Op.refund]) & (batch.target <= 0), Result.invalid_request)
    mark((op == Op.pay) & (batch.amount <= 0), Result.invalid_amount)
    mark((op == Op.restock) & (batch.target <= 0), Result.invalid_request)
    mark((op == Op.restock) & ((batch.amount < 1) | (batch.amount > limits.restock_qty_max)), Result.invalid_quantity)
    return inv


CN = geo.encode("CN")
command = st.fixed_dictionaries({
    "op": st.sampled_from([0, *map(int, Op), 7, 255]),
    "key": st.sampled_from([0, 1, 2**64 - 1]),
    "target": st.sampled_from([-1, 0, 1, 2**63 - 1]),
    "country": st.sampled_from([CN, 0, 1, geo.COUNTRY_SLOTS - 1, geo.COUNTRY_SLOTS, 65535]),
    "channel": st.sampled_from([0, int(Channel.mobile), int(Channel.pc), 3]),
    "amount": st.sampled_from([-5, 0, 1, 999, limits.restock_qty_max, limits.restock_qty_max + 1]),
    "lines": st.lists(st.tuples(st.sampled_from([-1, 0, 101, 2**63 - 1]),
                                st.sampled_from([-1, 0, 1, limits.line_qty_max, limits.line_qty_max + 1])),
                      max_size=limits.checkout_lines_max + 2),
})


def _batch(commands: list[dict]) -> CommandBatch:
    lines = [line for c in commands for line in c["lines"]]
    return CommandBatch(
        op=np.array([c["op"] for c in commands], dtype=np.uint8),
        invalid=np.zeros(len(commands), dtype=np.uint8),
        channel=np.array([c["channel"] for c in commands], dtype=np.uint8),
        lines=np.array([len(c["lines"]) for c in commands], dtype=np.uint8),
        country=np.array([c["country"] for c in commands], dtype=np.uint16),
        key=np.array([c["key"] for c in commands], dtype=np.uint64),
        target=np.array([c["target"] for c in commands], dtype=np.int64),
        amount=np.array([c["amount"] for c in commands], dtype=np.int64),
        sku=np.array([s for s, _ in lines], dtype=np.int64),
        qty=np.array([q for _, q in lines], dtype=np.int32),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(command, max_size=40))
def test_the_compiled_check_marks_what_the_rules_say(commands):
    batch = _batch(commands)
    validate(batch)
    assert batch.invalid.tolist() == reference(batch).tolist()


def test_a_batch_of_every_verdict_round_trips_through_the_wire_form():
    commands = [{"op": int(Op.checkout), "key": 1, "target": 7, "country": CN, "channel": 1, "amount": 0,
                 "lines": [(101, 1)]}] * 3
    commands[1] = dict(commands[1], country=geo.COUNTRY_SLOTS)
    commands[2] = dict(commands[2], lines=[(101, 1), (0, 1)])
    decoded = CommandBatch.from_bytes(_batch(commands).to_bytes())
    assert [Result(c).name if c else "" for c in decoded.invalid] == ["", "invalid_country", "invalid_request"]


def test_a_command_already_marked_keeps_its_mark():
    batch = _batch([{"op": 0, "key": 0, "target": 0, "country": 0, "channel": 0, "amount": 0, "lines": []}])
    batch.invalid[0] = Result.unknown_sku
    validate(batch)
    assert batch.invalid[0] == Result.unknown_sku


def test_the_first_bad_line_decides_as_on_the_json_path():
    """A bad qty on line 0 before a bad sku on line 1 is invalid_quantity,
    a bad sku before a bad qty invalid_request (the JSON edge reads lines in order)."""
    checkout = {"op": int(Op.checkout), "key": 1, "target": 7, "country": CN, "channel": 1, "amount": 0}
    batch = _batch([dict(checkout, lines=[(101, 0), (0, 1)]), dict(checkout, lines=[(0, 1), (101, 0)]),
                    dict(checkout, lines=[(101, 1), (101, limits.line_qty_max + 1)])])
    validate(batch)
    assert [Result(c).name for c in batch.invalid] == ["invalid_quantity", "invalid_request", "invalid_quantity"]
    assert batch.invalid.tolist() == reference(batch).tolist()
