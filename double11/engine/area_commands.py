"""An area's commands between JSON, a batch's args and plain values, read
from their declarations (double11/spec.py): no area writes a validator,
an encoder or a decoder of its own.

- `encode_fields`: a JSON command's fields, checked in declared order (the
  first broken one names the refusal), as args;
- `values_of`: a command's args as named values (the engine's answers and
  views, and `check_args`, read them so);
- `check_args`: a binary batch's area commands, held to the same rules.

A checkout's coupons travel in its args too (`coupon_args`).

These run once per operator command or grant: plain Python, not a hot path.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np

from double11 import areas
from double11.engine import area_rules, commands, refusals
from double11.engine.batch import CommandBatch
from double11.errors import Result
from double11.spec import Command, Field, string_of, string_words

_INT_MIN, _INT_MAX = -(2**63), 2**63


class Refused(Exception):
    def __init__(self, code: Result, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _is_int(v: Any) -> TypeGuard[int]:
    return type(v) is int and _INT_MIN <= v < _INT_MAX


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


# ------------------------------------------------------------------ JSON -> args
def _one(field: Field, holder: dict, name: str, shown_as: str) -> list[int]:
    """Field `name` of `holder` as its args; Refused naming `shown_as`."""
    if name not in holder:
        if field.optional:
            return [0] if field.kind == "list" else [field.default]
        raise Refused(field.code, refusals.missing(shown_as, _wanted(field)))
    v = holder[name]
    if field.kind == "integer":
        if _is_int(v) and field.low <= v <= field.high:
            return [v]
    elif field.kind == "choice":
        if type(v) is str and v in field.choices:
            return [field.choices.index(v)]
    elif field.kind == "string":
        if type(v) is str and field.low <= len(v) <= field.high and _printable(v):
            return string_words(v, field.arg_words)
        if type(v) is str:
            raise Refused(field.code, refusals.wrong(shown_as, _wanted(field), v))
    elif type(v) is list and field.low <= len(v) <= field.high:  # a list of one-integer items
        item = field.items[0]
        out = [len(v)]
        for p, x in enumerate(v):
            out += _one(item, {item.name: x}, item.name, f"{shown_as}[{p}]")
        return out
    raise Refused(field.code, refusals.wrong(shown_as, _wanted(field), v))


def _wanted(field: Field) -> str:
    if field.kind == "list":
        return f"a list of {field.low}..{field.high} {field.unit}"
    return field.wanted


def encode_fields(command: Command, cmd: dict) -> tuple[int, list[int]]:
    """(target, args) of an area's JSON command: its path id and its fields as
    args; Refused with the first broken rule (each field's bounds in
    declared order, then the rules between fields)."""
    target = 0
    by_name: dict[str, list[int]] = {}
    for field in command.fields:
        if field.name == "idempotency_key":
            continue
        got = _one(field, cmd, field.name, field.name)
        if field.where == "path":
            target = got[0]
        else:
            by_name[field.name] = got
    # the args in their layout (a list last)
    args = [x for field in command.arg_fields for x in by_name[field.name]]
    _check_between(command, args)
    return target, args


def _check_between(command: Command, args: list[int]) -> None:
    if command.check is None:
        return
    broken = command.check(values_of(command, args))
    if broken is not None:
        raise Refused(command.arg_fields[0].code, broken)


def coupon_args(cmd: dict) -> list[int]:
    """A JSON checkout's coupons as its args (none when left out); Refused
    when the list is malformed or names a coupon twice."""
    got = _one(commands.COUPONS, cmd, "coupons", "coupons")[1:]
    for p, coupon in enumerate(got):
        if coupon in got[:p]:
            raise Refused(commands.COUPONS.code, f"coupons[{p}] repeats coupon {coupon}")
    return got


# ------------------------------------------------------------------ args -> values
def values_of(command: Command, args: list[int] | np.ndarray) -> dict[str, Any]:
    """A command's args as {field name: value}: a choice as its index, a
    string as its text, a list as a list."""
    values: dict[str, Any] = {}
    at = 0
    # a command refused for its shape may hold fewer args than its fields
    # (none, from the JSON edge): the missing ones read as 0, never past the end
    fixed = sum(f.arg_words for f in command.arg_fields if f.kind != "list")
    args = list(args) + [0] * max(0, fixed + 1 - len(args))
    for field in command.arg_fields:
        if field.kind == "list":
            count = int(args[at]) if at < len(args) else 0
            values[field.name] = [int(x) for x in args[at + 1: at + 1 + count]]
            at += 1 + count
        elif field.kind == "string":
            values[field.name] = string_of(args[at: at + field.arg_words])
            at += field.arg_words
        else:
            values[field.name] = int(args[at])
            at += 1
    return values


def _args_refusal(command: Command, args: list[int]) -> tuple[Result, str] | None:
    """The first rule a binary command's args break (None: well formed)."""
    fixed = sum(f.arg_words for f in command.arg_fields if f.kind != "list")
    lists = [f for f in command.arg_fields if f.kind == "list"]
    wanted_count = fixed + (1 + args[fixed] if lists and len(args) > fixed else 0)
    if len(args) != wanted_count or (lists and len(args) <= fixed):
        shape = f"{fixed} + a list's" if lists else f"{fixed}"
        return command.arg_fields[0].code, f"{command.op} takes {shape} args, got {len(args)}"
    values = values_of(command, args)
    for field in command.arg_fields:
        v = values[field.name]
        if field.kind == "choice" and not 0 <= v < len(field.choices):
            return field.code, refusals.wrong(field.name, _wanted(field), v)
        if field.kind == "string" and not (field.low <= len(v) <= field.high and _printable(v)):
            return field.code, refusals.wrong(field.name, _wanted(field), v)
        if field.kind == "integer" and not (field.low <= v <= field.high or (field.optional and v == field.default)):
            return field.code, refusals.wrong(field.name, _wanted(field), v)
        if field.kind == "list":
            if len(v) > field.high:
                return field.code, refusals.wrong(field.name, _wanted(field), v)
            item = field.items[0]
            for p, x in enumerate(v):
                if not item.low <= x <= item.high:
                    return item.code, refusals.wrong(f"{field.name}[{p}]", item.wanted, x)
    if command.check is not None:
        broken = command.check(values)
        if broken is not None:
            return command.arg_fields[0].code, broken
    return None


def check_args(batch: CommandBatch) -> None:
    """Marks a binary batch's malformed area commands (a path id that is not
    positive, args against their declarations: area_rules.py, compiled) in
    `invalid`; then the rules between fields of those that have some."""
    area_rules.check_batch(batch.op, batch.invalid, batch.target, batch.args, batch.arg)
    checked = np.flatnonzero((batch.invalid == 0) & _HAS_CHECK[np.minimum(batch.op, len(_HAS_CHECK) - 1)])
    if not len(checked):
        return
    starts = batch.arg_starts()
    for i in checked.tolist():
        command = areas.BY_NUMBER[int(batch.op[i])]
        broken = command.check(values_of(command, batch.arg[starts[i]: starts[i] + batch.args[i]]))  # type: ignore[misc]
        if broken is not None:
            batch.invalid[i] = command.arg_fields[0].code


# by op: whether its command has rules between fields (`Command.check`)
_HAS_CHECK = np.zeros(len(areas.IN_ARGS), dtype=np.bool_)
_HAS_CHECK[[c.number for c in areas.COMMANDS if c.check is not None]] = True


def args_message(batch: CommandBatch, i: int) -> tuple[Result, str] | None:
    """The words of a binary area command's shape refusal (wire.messages)."""
    command = areas.BY_NUMBER.get(int(batch.op[i]))
    if command is None or not command.in_args:
        return None
    if command.path_fields and batch.target[i] <= 0:
        field = command.path_fields[0]
        return field.code, refusals.wrong(field.name, refusals.ID_WANTED, int(batch.target[i]))
    start = int(batch.arg_starts()[i])
    return _args_refusal(command, batch.arg[start: start + batch.args[i]].tolist())
