"""The compiled check of area commands' args (double11/engine/area_rules.py)
against the plain one that words their refusals (area_commands._args_refusal):
the same verdict for any args, well formed or not."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from double11 import areas
from double11.engine import area_rules
from double11.engine.area_commands import _args_refusal
from double11.engine.encode import encode_commands
from double11.errors import Result

AREA_COMMANDS = [c for c in areas.COMMANDS if c.in_args]
_WORD = st.one_of(st.integers(-3, 3), st.integers(0, 2**40), st.integers(-(2**63), 2**63 - 1),
                  st.sampled_from([int.from_bytes(b"game:ar\0", "little"), int.from_bytes(b"abcdefgh", "little"),
                                   int.from_bytes(b"ab\x01", "little"), 4_102_444_800_000, 10**12]))


@st.composite
def area_args(draw):
    """An area command's args: a valid one's, with some words changed, cut or added."""
    command = draw(st.sampled_from(AREA_COMMANDS))
    size = sum(f.arg_words for f in command.arg_fields if f.kind != "list")
    args = [draw(_WORD) for _ in range(size)]
    if any(f.kind == "list" for f in command.arg_fields):
        items = draw(st.lists(_WORD, max_size=5))
        args += [draw(st.sampled_from([len(items), len(items), -1, 70]))] + items
    how = draw(st.integers(0, 9))
    if how == 0 and args:
        args = args[:draw(st.integers(0, len(args) - 1))]
    elif how == 1:
        args.append(draw(_WORD))
    return command, args, draw(st.integers(-1, 3))


@settings(max_examples=2000, deadline=None)
@given(area_args())
def test_the_compiled_check_agrees_with_the_words(case):
    command, args, target = case
    invalid = np.zeros(1, dtype=np.uint8)
    area_rules.check_batch(np.array([command.number], dtype=np.uint8), invalid, np.array([target], dtype=np.int64),
                           np.array([len(args)], dtype=np.uint8), np.array(args, dtype=np.int64))
    if command.path_fields and target <= 0:
        want = command.path_fields[0].code
    else:
        refused = _args_refusal(command.__class__(**{**command.__dict__, "check": None}), args)
        want = Result.ok if refused is None else refused[0]
    assert invalid[0] == want, (command.op, args, target)


def test_well_formed_commands_pass():
    window = {"from": 0, "until": 10**12}
    batch = encode_commands([
        {"op": "grant", "idempotency_key": "g", "template": 1, "buyer": 7, "source": "game:ar-catch-the-cat"},
        {"op": "deal", "idempotency_key": "d", "sku": 3, "price_fen": 5, "qty": 2, "per_buyer_max": 1,
         "kind": "livestream", **window},
        {"op": "threshold_discount", "idempotency_key": "t", "every_fen": 100, "off_fen": 5, "merchants": [1, 2],
         **window}])
    assert batch.invalid.tolist() == [0, 0, 0]
    area_rules.check_batch(batch.op, batch.invalid, batch.target, batch.args, batch.arg)
    assert batch.invalid.tolist() == [0, 0, 0]
