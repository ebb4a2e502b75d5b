"""An op the compiled loop does not know is refused, never taken for another.

Validation refuses an unknown op at every edge, but a batch can reach the
loop without it: a log record is read back as trusted (written by a newer
version with an op this one lacks, say), and `Engine.apply` takes any batch.
The loop's last branch used to be restock for whatever op was left, so such a
command added stock.  Here the op column is forged after validation."""

from __future__ import annotations

import pytest
from model import T0, co, restock, small_catalog
from model.state import engine_state

from double11.config import FestivalConfig
from double11.engine import views
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine
from double11.errors import Result

SKU = 102  # 5 in stock in the small catalog


def forged(commands: list[dict], at: int, op: int) -> CommandBatch:
    batch = encode_commands(commands)
    assert not batch.invalid.any()
    batch.op[at] = op
    return batch


def stock_of(engine: Engine, sku: int) -> tuple[int, int]:
    """(stock on sale, units ever stocked) of a SKU."""
    view = views.sku(engine, sku)
    assert view is not None
    return view["stock"], view["stocked"]


@pytest.mark.parametrize("op", [0, max(Op) + 1, 255])
def test_an_unknown_op_is_refused_and_changes_nothing(op):
    commands = [co("before", [(SKU, 1)]), restock("forged", SKU, 50), co("after", [(SKU, 1)])]
    engine = Engine(small_catalog(), FestivalConfig())
    code, ref = engine.apply(forged(commands, 1, op), T0)
    assert code.tolist() == [Result.ok, Result.unknown_op, Result.ok]
    assert ref[1] == 0
    assert stock_of(engine, SKU) == (3, 5), "the forged command touched the stock"

    # the same state as without the forged command, but for its key, which
    # remembers the refusal as every command that reached the loop does
    control = Engine(small_catalog(), FestivalConfig())
    control_code, _ = control.apply(encode_commands([commands[0], commands[2]]), T0)
    assert control_code.tolist() == [Result.ok, Result.ok]
    ours, theirs = engine_state(engine), engine_state(control)
    assert {name for name in ours if ours[name] != theirs[name]} <= {"keys", "idem_index"}

    # a retry, in a batch of its own, is answered the same refusal
    retry, _ = engine.apply(forged([commands[1]], 0, op), T0)
    assert retry.tolist() == [Result.unknown_op]
    assert stock_of(engine, SKU) == (3, 5)


def test_a_known_op_after_an_unknown_one_runs():
    """The refusal is the forged command's alone: a restock beside it still restocks."""
    commands = [restock("forged", SKU, 7), restock("real", SKU, 7)]
    engine = Engine(small_catalog(), FestivalConfig())
    code, ref = engine.apply(forged(commands, 0, max(Op) + 1), T0)
    assert code.tolist() == [Result.unknown_op, Result.ok]
    assert ref[1] == SKU
    assert stock_of(engine, SKU) == (12, 12)
