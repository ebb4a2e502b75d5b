"""A JSON batch's commands held to their declared shape: each one a JSON
object with a known `op`, every declared field there (unless optional) and
of its JSON type: an integer, a string, a list (of integers, or of objects
whose own fields are there and typed).

A batch with a command that breaks its shape is refused whole, 400 naming
the command's index and the field, and nothing of it is applied: such a batch
is not what its sender meant to send.  A value of the right type but out of
its bounds is that command's own refusal, in its result, as in the binary
batch (whose columns can only carry values).  The OpenAPI document declares
a batch's commands by these same rules (double11/http/openapi.py).

Run on the error path only: on the commands encode.py has already refused
(a command of the wrong shape always is).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from double11 import areas
from double11.engine import commands, refusals
from double11.errors import Double11Error, Result
from double11.spec import IDEMPOTENCY_KEY, Field

# how encode.py words these when they are not of their type: a quantity
# "a whole number 1..999", the key "a string of 1..128 characters"
_WORDED_AS_A_TYPE = {commands.LINE_QTY: "a whole number ", commands.RESTOCK_QTY: "a whole number ",
                     IDEMPOTENCY_KEY: "a string of "}
_JSON_TYPE = {"integer": int, "string": str, "choice": str, "list": list}


def _wanted(field: Field) -> str:
    """The bound as the JSON edge quotes it (area_commands._wanted, encode.py)."""
    if field.kind == "list":
        return f"a list of {field.low}..{field.high} {field.unit}"
    return field.wanted


def _field_error(field: Field, holder: dict, shown_as: str) -> tuple[Result, str] | None:
    """Field `field` of `holder` (named `shown_as`): missing, or not of its type."""
    if field.name not in holder:
        if field.optional:
            return None
        return field.code, refusals.missing(shown_as, _wanted(field))
    value = holder[field.name]
    if type(value) is not _JSON_TYPE[field.kind]:  # exact: true is not an integer here, as in encode.py
        return field.code, refusals.wrong(shown_as, _WORDED_AS_A_TYPE.get(field, "") + _wanted(field), value)
    if type(value) is not list:  # of its type, and not a list: nothing inside to check
        return None
    if len(field.items) == 1:  # bare items: [10, 20]
        item = field.items[0]
        for p, x in enumerate(value):
            error = _field_error(item, {item.name: x}, f"{shown_as}[{p}]")
            if error is not None:
                return error
        return None
    for p, x in enumerate(value):
        if type(x) is not dict:
            wanted = "an object with " + " and ".join(item.name for item in field.items)
            return Result.invalid_request, refusals.wrong(f"{shown_as}[{p}]", wanted, x)
        for item in field.items:
            error = _field_error(item, x, f"{shown_as}[{p}].{item.name}")
            if error is not None:
                return error
    return None


def misshapen(cmd: Any) -> tuple[Result, str] | None:
    """The first way a command breaks its declared JSON shape, in the order
    encode.py checks its fields (op, idempotency_key, then as declared), and
    its words; None if it has its shape (its values may still be refused)."""
    if type(cmd) is not dict:
        return Result.invalid_request, refusals.not_object(cmd)
    name = cmd.get("op")
    command = areas.BY_OP.get(name) if type(name) is str else None
    if command is None:
        return Result.unknown_op, (refusals.wrong("op", refusals.OP_WANTED, name) if "op" in cmd
                                   else refusals.missing("op", refusals.OP_WANTED))
    for field in sorted(command.fields, key=lambda f: f is not IDEMPOTENCY_KEY):
        error = _field_error(field, cmd, field.name)
        if error is not None:
            return error
    return None


def first_misshapen(batch_commands: list[Any], refused: Iterable[int]) -> Double11Error | None:
    """The refusal of a whole batch for its first command (among those
    `refused`: the indexes encode.py refused) not of its declared shape."""
    for i in sorted(refused):
        error = misshapen(batch_commands[i])
        if error is not None:
            code, words = error
            return Double11Error(code, message=f"commands[{i}]: {words}")
    return None


def misshapen_batches(batches: list[list[Any]], refused: Iterable[int]) -> dict[int, Double11Error]:
    """Of JSON batches encoded together (their commands one after another),
    the refusal of each one that holds a command not of its shape, by its
    index in `batches`; `refused`: the indexes encode.py refused, over all."""
    by_batch: dict[int, list[int]] = {}
    start, k, ends = 0, 0, []
    for one in batches:
        start += len(one)
        ends.append(start)
    for i in sorted(refused):
        while ends[k] <= i:
            k += 1
        by_batch.setdefault(k, []).append(i - (ends[k] - len(batches[k])))
    out: dict[int, Double11Error] = {}
    for k, indexes in by_batch.items():
        error = first_misshapen(batches[k], indexes)
        if error is not None:
            out[k] = error
    return out
