"""JSON-shaped commands (dicts) into a CommandBatch: the edge of the engine.

Every shape rule is checked here, per command, in the order docs/api.md
gives, with the same result codes the binary path gets from the compiled
`batch.validate` (tests/test_wire.py holds them together).  The loop stays
plain: lists of Python ints, turned into arrays once at the end.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeGuard

import msgspec
import numpy as np

from double11 import areas, geo
from double11.engine import commands, refusals
from double11.engine.area_commands import Refused, coupon_args, encode_fields
from double11.engine.batch import Channel, CommandBatch, Op
from double11.errors import Double11Error, Result
from double11.spec import IDEMPOTENCY_KEY

# every bound, choice and refusal code below is a field's declaration
# (double11/engine/commands.py), read once here into plain locals for the loop
OPS = {command.op: command.number for command in areas.COMMANDS}
_IN_ARGS = {command.number: command for command in areas.COMMANDS if command.in_args}
CHANNELS = {name: int(Channel[name]) for name in commands.CHANNEL.choices}
COUNTRIES = {alpha2: geo.encode(alpha2) for alpha2 in commands.COUNTRY.choices}
_TARGET_FIELD = refusals.TARGET_FIELD  # the declarations' (refusals.py), not a copy
# a command's target field's bound and code, by op (all but a checkout's, whose buyer comes first)
_TARGET: dict[int, tuple[str, int, Result]] = {
    c.number: (c.target.name, c.target.low, c.target.code) for c in areas.COMMANDS
    if c.op != "checkout" and not c.in_args}
_CHECKOUT, _PAY, _RESTOCK = int(Op.checkout), int(Op.pay), int(Op.restock)
_KEY_LOW, _KEY_HIGH, _KEY_CODE = IDEMPOTENCY_KEY.low, IDEMPOTENCY_KEY.high, IDEMPOTENCY_KEY.code
_BUYER_LOW, _BUYER_CODE = commands.BUYER.low, commands.BUYER.code
_COUNTRY_CODE, _CHANNEL_CODE = commands.COUNTRY.code, commands.CHANNEL.code
_LINES_LOW, _LINES_HIGH, _LINES_CODE = commands.LINES.low, commands.LINES.high, commands.LINES.code
_LINES_TOO_FEW = commands.LINES.code_below or _LINES_CODE
_LINES_TOO_MANY = commands.LINES.code_above or _LINES_CODE
_SKU_LOW, _SKU_CODE = commands.LINE_SKU.low, commands.LINE_SKU.code
_QTY_LOW, _QTY_HIGH, _QTY_CODE = commands.LINE_QTY.low, commands.LINE_QTY.high, commands.LINE_QTY.code
_AMOUNT_LOW, _AMOUNT_CODE = commands.AMOUNT_FEN.low, commands.AMOUNT_FEN.code
_RESTOCK_LOW, _RESTOCK_HIGH = commands.RESTOCK_QTY.low, commands.RESTOCK_QTY.high
_RESTOCK_CODE = commands.RESTOCK_QTY.code
_INT_MIN, _INT_MAX = -(2**63), 2**63
# `_is_int(v) and v >= low` says all of these fields' bounds only while each one's high is int64's
if any(f.high != _INT_MAX - 1 for f in (commands.BUYER, commands.LINE_SKU, commands.AMOUNT_FEN,
                                        *(c.target for c in areas.COMMANDS if not c.in_args))):
    raise AssertionError("an id's or amount_fen's declared high bound is no longer int64's: check it here")


def key_hash(key: str) -> int:
    """Idempotency keys are stored as 64-bit digests (0 is reserved for 'none')."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return digest or 1


_DECODER = msgspec.json.Decoder()


def decode_object(body: bytes) -> dict:
    """A request body that must be one JSON object (400 invalid_request if not)."""
    try:
        obj = _DECODER.decode(body)
    except msgspec.DecodeError as e:
        raise Double11Error(Result.invalid_request, f"body is not JSON ({e})") from None
    if type(obj) is not dict:
        raise Double11Error(Result.invalid_request, "body must be a JSON object")
    return obj


def decode_single(body: bytes, op: int, target: int) -> dict:
    """The command of a single request: its body, its op from the route and,
    but for a checkout, its target from the path (both win over the body's)."""
    cmd = decode_object(body)
    cmd["op"] = areas.BY_NUMBER[op].op
    if op in _TARGET_FIELD and op != _CHECKOUT:
        cmd[_TARGET_FIELD[op]] = target
    return cmd


def _is_int(v: Any) -> TypeGuard[int]:
    return type(v) is int and _INT_MIN <= v < _INT_MAX


def _id_message(cmd: dict, name: str, field: str | None = None) -> str:
    """The words for a missing or bad id (`name` in cmd, called `field`)."""
    field = field or name
    if name not in cmd:
        return refusals.missing(field, refusals.ID_WANTED)
    return refusals.wrong(field, refusals.ID_WANTED, cmd[name])


def _key_message(cmd: dict) -> str:
    if "idempotency_key" not in cmd:
        return refusals.missing("idempotency_key", refusals.KEY_WANTED)
    k = cmd["idempotency_key"]
    if type(k) is str:
        return refusals.key_length(len(k))
    return refusals.wrong("idempotency_key", "a string of " + refusals.KEY_WANTED, k)


def _qty_message(holder: dict, field: str, wanted: str) -> str:
    if "qty" not in holder:
        return refusals.missing(field, wanted)
    q = holder["qty"]
    return refusals.wrong(field, wanted if type(q) is int else "a whole number " + wanted, q)


def encode_commands(commands: list[Any]) -> CommandBatch:
    """The commands as a batch; a malformed one is marked in `invalid` and
    worded in `notes` (the field, the line, the bound: refusals.py)."""
    n = len(commands)
    op, invalid, channel, nlines = [0] * n, [0] * n, [0] * n, [0] * n
    country, key, target, amount = [0] * n, [0] * n, [0] * n, [0] * n
    skus: list[int] = []
    qtys: list[int] = []
    nargs, args = [0] * n, []
    notes: dict[int, str] = {}
    for i, cmd in enumerate(commands):
        if type(cmd) is not dict:
            invalid[i], notes[i] = Result.invalid_request, refusals.not_object(cmd)
            continue
        name = cmd.get("op")
        o = OPS.get(name) if type(name) is str else None
        if o is None:
            invalid[i] = Result.unknown_op
            notes[i] = (refusals.wrong("op", refusals.OP_WANTED, name) if "op" in cmd
                        else refusals.missing("op", refusals.OP_WANTED))
            continue
        op[i] = o
        k = cmd.get("idempotency_key")
        if type(k) is str and _KEY_LOW <= len(k) <= _KEY_HIGH:
            key[i] = key_hash(k)
        else:
            invalid[i], notes[i] = _KEY_CODE, _key_message(cmd)
            continue
        if o == _CHECKOUT:
            refused = _encode_checkout(cmd, i, channel, nlines, country, target, skus, qtys)
            if refused is not None:
                invalid[i], notes[i] = refused
                continue
            try:
                coupons = coupon_args(cmd)
            except Refused as e:
                invalid[i], notes[i] = e.code, e.message
                nlines[i] = 0
                del skus[len(skus) - len(cmd["lines"]):], qtys[len(qtys) - len(cmd["lines"]):]
                continue
            nargs[i] = len(coupons)
            args += coupons
            continue
        area_command = _IN_ARGS.get(o)
        if area_command is not None:
            try:
                target[i], its_args = encode_fields(area_command, cmd)
            except Refused as e:
                invalid[i], notes[i] = e.code, e.message
                continue
            nargs[i] = len(its_args)
            args += its_args
            continue
        field, low, code = _TARGET[o]
        t = cmd.get(field)
        if not _is_int(t) or t < low:
            invalid[i], notes[i] = code, _id_message(cmd, field)
            continue
        target[i] = t
        if o == _PAY:
            a = cmd.get("amount_fen")
            if not _is_int(a) or a < _AMOUNT_LOW:
                invalid[i] = _AMOUNT_CODE
                notes[i] = (refusals.wrong("amount_fen", refusals.AMOUNT_WANTED, a) if "amount_fen" in cmd
                            else refusals.missing("amount_fen", refusals.AMOUNT_WANTED))
                continue
            amount[i] = a
        elif o == _RESTOCK:
            q = cmd.get("qty")
            if not (type(q) is int and _RESTOCK_LOW <= q <= _RESTOCK_HIGH):
                invalid[i], notes[i] = _RESTOCK_CODE, _qty_message(cmd, "qty", refusals.RESTOCK_QTY_WANTED)
                continue
            amount[i] = q
    batch = CommandBatch(
        op=np.array(op, dtype=np.uint8), invalid=np.array(invalid, dtype=np.uint8),
        channel=np.array(channel, dtype=np.uint8), lines=np.array(nlines, dtype=np.uint8),
        country=np.array(country, dtype=np.uint16), key=np.array(key, dtype=np.uint64),
        target=np.array(target, dtype=np.int64), amount=np.array(amount, dtype=np.int64),
        sku=np.array(skus, dtype=np.int64), qty=np.array(qtys, dtype=np.int32),
        args=np.array(nargs, dtype=np.uint8), arg=np.array(args, dtype=np.int64), notes=notes,
    )
    return batch


def _encode_checkout(cmd: dict, i: int, channel: list[int], nlines: list[int], country: list[int],
                     target: list[int], skus: list[int], qtys: list[int]) -> tuple[Result, str] | None:
    """Fills command i's checkout fields; returns its shape error and its words (None if none)."""
    buyer = cmd.get("buyer")
    if not _is_int(buyer) or buyer < _BUYER_LOW:
        return _BUYER_CODE, _id_message(cmd, "buyer")
    target[i] = buyer
    c = cmd.get("country")
    code = COUNTRIES.get(c, -1) if type(c) is str else -1
    if code < 0:
        return _COUNTRY_CODE, (refusals.wrong("country", refusals.COUNTRY_WANTED, c) if "country" in cmd
                                        else refusals.missing("country", refusals.COUNTRY_WANTED))
    country[i] = code
    ch = cmd.get("channel")
    ch_code = CHANNELS.get(ch) if type(ch) is str else None
    if ch_code is None:
        return _CHANNEL_CODE, (refusals.wrong("channel", refusals.CHANNEL_WANTED, ch) if "channel" in cmd
                                        else refusals.missing("channel", refusals.CHANNEL_WANTED))
    channel[i] = ch_code
    lines = cmd.get("lines")
    if type(lines) is not list:
        wanted = "a list of " + refusals.LINES_WANTED
        return _LINES_CODE, (refusals.wrong("lines", wanted, lines) if "lines" in cmd
                                        else refusals.missing("lines", wanted))
    count = len(lines)
    if count < _LINES_LOW:
        return _LINES_TOO_FEW, refusals.line_count(count)
    if count > _LINES_HIGH:
        return _LINES_TOO_MANY, refusals.line_count(count)
    line_skus, line_qtys = [], []
    for p, line in enumerate(lines):
        if type(line) is not dict:
            return Result.invalid_request, refusals.wrong(f"lines[{p}]", "an object with sku and qty", line)
        sku = line.get("sku")
        if not _is_int(sku) or sku < _SKU_LOW:
            return _SKU_CODE, _id_message(line, "sku", refusals.line_field(p, "sku"))
        q = line.get("qty")
        if not (type(q) is int and _QTY_LOW <= q <= _QTY_HIGH):
            return _QTY_CODE, _qty_message(line, refusals.line_field(p, "qty"),
                                                         refusals.LINE_QTY_WANTED)
        line_skus.append(sku)
        line_qtys.append(q)
    # only well-formed lines enter the batch, so line counts always add up
    nlines[i] = len(line_skus)
    skus.extend(line_skus)
    qtys.extend(line_qtys)
    return None
