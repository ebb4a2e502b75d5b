"""An area's commands in a binary batch, checked in one compiled pass
against their declarations: a grant arrives beside every tenth checkout at
the festival's peak, and checking its args one command at a time in Python
cost more than applying the batch.

The declarations (double11/spec.py) are read once, here, into tables of
rules: per op, how many args it takes and where its list is; per field, its
place in the args, its kind and bounds and the code a bad value gets.  The
loop checks each area command's arg count, then its fields in layout order,
exactly as `area_commands._args_refusal` words them (a property test holds
the two together); the rules between fields (`Command.check`) stay Python's,
for the few operator commands that have them.
"""

from __future__ import annotations

import numpy as np

from double11 import areas
from double11.engine.compiled import kernel

INTEGER, CHOICE, STRING = 0, 1, 2

_ops = max(areas.BY_NUMBER) + 1
FIXED = np.zeros(_ops, dtype=np.int64)  # args before its list (or all of them)
LIST_MAX = np.full(_ops, -1, dtype=np.int64)  # -1: no list
LIST_CODE = np.zeros(_ops, dtype=np.int64)  # a wrong count's code (its first field's)
ITEM_LOW = np.zeros(_ops, dtype=np.int64)
ITEM_HIGH = np.zeros(_ops, dtype=np.int64)
ITEM_CODE = np.zeros(_ops, dtype=np.int64)
PATH_CODE = np.zeros(_ops, dtype=np.int64)  # a path id's code (0: no path)
FIRST_RULE = np.zeros(_ops, dtype=np.int64)
RULES = np.zeros(_ops, dtype=np.int64)
_rules: list[tuple[int, int, int, int, int, int, int]] = []  # at, kind, low, high, words, code, default|-1
for _command in areas.COMMANDS:
    if not _command.in_args:
        continue
    o = _command.number
    FIRST_RULE[o] = len(_rules)
    LIST_CODE[o] = int(_command.arg_fields[0].code)
    if _command.path_fields:
        PATH_CODE[o] = int(_command.path_fields[0].code)
    at = 0
    for f in _command.arg_fields:
        if f.kind == "list":
            LIST_MAX[o], item = f.high, f.items[0]
            ITEM_LOW[o], ITEM_HIGH[o], ITEM_CODE[o] = item.low, item.high, int(item.code)
            continue
        kind = {"integer": INTEGER, "choice": CHOICE, "string": STRING}[f.kind]
        high = len(f.choices) - 1 if f.kind == "choice" else f.high
        default = f.default if f.optional and f.kind == "integer" else -1
        _rules.append((at, kind, f.low if f.kind != "choice" else 0, high, f.arg_words, int(f.code), default))
        at += f.arg_words
    FIXED[o] = at
    RULES[o] = len(_rules) - FIRST_RULE[o]
RULE = np.array(_rules, dtype=np.int64).reshape(-1, 7)


@kernel
def check(op, invalid, target, args, arg, in_args, fixed, list_max, list_code, item_low, item_high, item_code,
          path_code, first_rule, rules, rule):
    """Marks each area command (`in_args[op]`) not marked yet whose path id
    or args break their declaration, with the code of the first broken rule."""
    a = 0
    for i in range(len(op)):
        first = a
        n = args[i]
        a += n
        o = op[i]
        if invalid[i] != 0 or o >= len(in_args) or not in_args[o]:
            continue
        if path_code[o] != 0 and target[i] <= 0:
            invalid[i] = path_code[o]
            continue
        want = fixed[o]
        if list_max[o] >= 0:
            want = fixed[o] + 1 + (arg[first + fixed[o]] if n > fixed[o] else 0)
            if n <= fixed[o]:
                want = -1
        if n != want:
            invalid[i] = list_code[o]
            continue
        code = 0
        for r in range(first_rule[o], first_rule[o] + rules[o]):
            at, kind, low, high, words, bad, default = (rule[r, 0], rule[r, 1], rule[r, 2], rule[r, 3], rule[r, 4],
                                                        rule[r, 5], rule[r, 6])
            if kind == STRING:
                if not _printable(arg, first + at, words, low, high):
                    code = bad
            else:
                v = arg[first + at]
                if not (low <= v <= high or (default >= 0 and v == default)):
                    code = bad
            if code != 0:
                break
        if code == 0 and list_max[o] >= 0:
            count = arg[first + fixed[o]]
            if count < 0 or count > list_max[o]:
                code = list_code[o]
            for p in range(first + fixed[o] + 1, first + fixed[o] + 1 + count):
                if code == 0 and not item_low[o] <= arg[p] <= item_high[o]:
                    code = item_code[o]
        invalid[i] = code


@kernel
def _printable(arg, start, words, low, high):
    """A string field's words: its text (up to the last non-zero byte) is
    low..high printable ASCII characters (0x20..0x7e), no zero byte inside."""
    length = 0
    for w in range(words):
        x = np.uint64(arg[start + w])
        for b in range(8):
            if (x >> np.uint64(8 * b)) & np.uint64(0xFF) != 0:
                length = 8 * w + b + 1
    if not low <= length <= high:
        return False
    for k in range(length):
        c = (np.uint64(arg[start + k // 8]) >> np.uint64(8 * (k % 8))) & np.uint64(0xFF)
        if c < 0x20 or c > 0x7E:
            return False
    return True


def check_batch(op: np.ndarray, invalid: np.ndarray, target: np.ndarray, args: np.ndarray, arg: np.ndarray) -> None:
    check(op, invalid, target, args, arg, areas.IN_ARGS, FIXED, LIST_MAX, LIST_CODE, ITEM_LOW, ITEM_HIGH, ITEM_CODE,
          PATH_CODE, FIRST_RULE, RULES, RULE)
