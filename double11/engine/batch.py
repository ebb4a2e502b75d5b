"""A batch of commands as columns: the unit the engine applies and the log stores.

One row per command and one row per checkout line.  The same layout is the
compact wire format for gateways (`application/x-double11-batch`) and the
payload of a command-log record, so a gateway's bytes go to disk as they came.

Wire layout (little endian): magic "D11B", u16 version, u16 flags, u32 commands,
u32 lines, u32 args, then the columns in the order of COMMAND_COLUMNS, LINE_COLUMNS
and ARG_COLUMNS.  Version 1 (before the args) has no args count, no `args`
column and no arg section; it is still read (a log written before them).

The args: a command's fields that have no column of their own, one int64
each, one command's after another: a checkout's coupon ids, and every field
of an area's command (laid out by its declaration, `spec.Command.arg_fields`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from double11 import limits
from double11.engine.compiled import inline, kernel
from double11.errors import Double11Error, Result


class Op(enum.IntEnum):
    checkout = 1
    pay = 2
    cancel = 3
    confirm = 4
    refund = 5
    restock = 6


class Channel(enum.IntEnum):
    mobile = 1
    pc = 2


# name, dtype; `target` is the buyer of a checkout, the checkout of pay/cancel,
# the order of confirm/refund and the sku of restock; `amount` is amount_fen of
# pay and qty of restock.  `invalid` is the edge's verdict on the command's shape.
COMMAND_COLUMNS: tuple[tuple[str, str], ...] = (
    ("op", "<u1"),
    ("invalid", "<u1"),
    ("channel", "<u1"),
    ("lines", "<u1"),
    ("country", "<u2"),
    ("key", "<u8"),
    ("target", "<i8"),
    ("amount", "<i8"),
    ("args", "<u1"),
)
LINE_COLUMNS: tuple[tuple[str, str], ...] = (("sku", "<i8"), ("qty", "<i4"))
ARG_COLUMNS: tuple[tuple[str, str], ...] = (("arg", "<i8"),)
_V1_COMMAND_COLUMNS = COMMAND_COLUMNS[:-1]

_HEADER_V1 = struct.Struct("<4sHHII")
_HEADER = struct.Struct("<4sHHIII")
_MAGIC = b"D11B"
_NO_ROLES, _NO_ACTORS = np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
_TRUSTED_ROLE = 1  # access.roles.Role.operator (the engine does not import the edges' roles)
_VERSION = 2


@dataclass
class CommandBatch:
    op: np.ndarray
    invalid: np.ndarray
    channel: np.ndarray
    lines: np.ndarray
    country: np.ndarray
    key: np.ndarray
    target: np.ndarray
    amount: np.ndarray
    sku: np.ndarray
    qty: np.ndarray
    args: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    arg: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # the words of a malformed command's refusal, by index, where the edge
    # that refused it knew more than the columns hold (a JSON field missing
    # or of the wrong type: encode.py); not part of the wire form or the log
    notes: dict[int, str] = field(default_factory=dict)
    # who sent each command (double11/access: a Role number and the id it
    # acts as), checked just before the batch is applied; empty: all of them
    # trusted (the Python API, the log's replay).  Not part of the wire form
    # or the log: a refusal lands in `invalid`, and the log replays that
    role: np.ndarray = field(default_factory=lambda: _NO_ROLES)
    actor: np.ndarray = field(default_factory=lambda: _NO_ACTORS)

    def __post_init__(self) -> None:
        if len(self.args) != len(self.op):  # a batch made without args: none
            self.args = np.zeros(len(self.op), dtype=np.uint8)
            # read-only as the other columns when they are (a version 1 record replayed):
            # the compiled loop is compiled once for each mix of read-only columns it meets
            self.args.flags.writeable = self.op.flags.writeable

    def __len__(self) -> int:
        return len(self.op)

    @classmethod
    def concat(cls, batches: list[CommandBatch]) -> CommandBatch:
        if len(batches) == 1:
            return batches[0]
        notes, at = {}, 0
        for b in batches:
            notes.update({at + i: note for i, note in b.notes.items()})
            at += len(b.op)
        role, actor = _NO_ROLES, _NO_ACTORS
        if any(len(b.role) for b in batches):  # the trusted ones as the operator (access.roles.OPERATOR)
            role = np.concatenate([b.role if len(b.role) else np.full(len(b), _TRUSTED_ROLE, np.uint8)
                                   for b in batches])
            actor = np.concatenate([b.actor if len(b.actor) else np.zeros(len(b), np.int64) for b in batches])
        return cls(**{
            name: np.concatenate([getattr(b, name) for b in batches])
            for name, _ in COMMAND_COLUMNS + LINE_COLUMNS + ARG_COLUMNS
        }, notes=notes, role=role, actor=actor)

    def sent_by(self, role: int, actor: int) -> CommandBatch:
        """This batch, every command sent by one principal (access.roles)."""
        if role != _TRUSTED_ROLE or actor:
            self.role = np.full(len(self), role, dtype=np.uint8)
            self.actor = np.full(len(self), actor, dtype=np.int64)
        return self

    def slice(self, start: int, stop: int) -> CommandBatch:
        """Commands start..stop-1 and their lines (views, not copies)."""
        l0 = int(self.lines[:start].sum(dtype=np.int64))
        l1 = l0 + int(self.lines[start:stop].sum(dtype=np.int64))
        a0 = int(self.args[:start].sum(dtype=np.int64))
        a1 = a0 + int(self.args[start:stop].sum(dtype=np.int64))
        notes = {i - start: note for i, note in self.notes.items() if start <= i < stop}
        role, actor = (self.role[start:stop], self.actor[start:stop]) if len(self.role) else (_NO_ROLES, _NO_ACTORS)
        return CommandBatch(**{name: getattr(self, name)[start:stop] for name, _ in COMMAND_COLUMNS},
                            sku=self.sku[l0:l1], qty=self.qty[l0:l1], arg=self.arg[a0:a1], notes=notes,
                            role=role, actor=actor)

    def arg_starts(self) -> np.ndarray:
        """Where each command's args start in `arg`."""
        counts = self.args.astype(np.int64)
        return np.cumsum(counts) - counts

    def to_bytes(self) -> bytes:
        parts = [_HEADER.pack(_MAGIC, _VERSION, 0, len(self.op), len(self.sku), len(self.arg))]
        for name, dt in COMMAND_COLUMNS + LINE_COLUMNS + ARG_COLUMNS:
            parts.append(np.ascontiguousarray(getattr(self, name), dtype=dt).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, trusted: bool = False) -> CommandBatch:
        """Decodes the wire form.  Untrusted input (a request) gets its shape
        checked and every command's `invalid` column set by `validate`."""
        if len(data) < _HEADER_V1.size:
            raise Double11Error(Result.invalid_request, "binary batch shorter than its header")
        magic, version, _flags, n, n_lines = _HEADER_V1.unpack_from(data)
        if magic != _MAGIC or version not in (1, _VERSION):
            raise Double11Error(Result.invalid_request, "not a double11 binary batch (magic/version)")
        if version == 1:
            header, command_columns, n_args = _HEADER_V1, _V1_COMMAND_COLUMNS, 0
        else:
            if len(data) < _HEADER.size:
                raise Double11Error(Result.invalid_request, "binary batch shorter than its header")
            header, command_columns = _HEADER, COMMAND_COLUMNS
            n_args = _HEADER.unpack_from(data)[5]
        if not trusted and n > limits.batch_commands_max:
            raise Double11Error(Result.batch_too_large,
                                f"it holds {n} commands, the limit is {limits.batch_commands_max}")
        expected = (header.size + n * _row_bytes(command_columns) + n_lines * _row_bytes(LINE_COLUMNS)
                    + n_args * _row_bytes(ARG_COLUMNS))
        if len(data) != expected:
            raise Double11Error(Result.invalid_request, f"binary batch is {len(data)} bytes, header says {expected}")
        offset = header.size
        columns: dict[str, Any] = {}  # name -> column (Any: mypy matches **columns against `notes` too)
        for cols, count in ((command_columns, n), (LINE_COLUMNS, n_lines), (ARG_COLUMNS, n_args)):
            for name, dt in cols:
                arr = np.frombuffer(data, dtype=dt, count=count, offset=offset)
                offset += arr.nbytes
                columns[name] = arr.astype(np.dtype(dt).newbyteorder("="), copy=not trusted)
        batch = cls(**columns)
        if not trusted:
            if int(batch.lines.sum(dtype=np.int64)) != n_lines:
                raise Double11Error(Result.invalid_request, "line counts do not add up to the lines given")
            if int(batch.args.sum(dtype=np.int64)) != n_args:
                raise Double11Error(Result.invalid_request, "arg counts do not add up to the args given")
            batch.invalid[:] = 0
            validate(batch)
        return batch

    def fingerprints(self) -> np.ndarray:
        """A 64-bit digest of each command's body (all but its key): a retry
        with the same key must carry the same body."""
        out = np.empty(len(self.op), dtype=np.uint64)
        _fingerprints(self.op, self.channel, self.country, self.lines, self.target, self.amount,
                      self.sku, self.qty, out)
        if len(self.arg):
            _fold_args(self.args, self.arg, out)
        return out


@inline
def _mix(x):
    # splitmix64's finalizer: every input bit affects every output bit
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@kernel
def _fingerprints(op, channel, country, lines, target, amount, sku, qty, out):
    """Each command's fingerprint: op, channel, country, target, amount and
    every (position, sku, qty) of its lines go in.  In two loops: the first
    has no branch, so the CPU overlaps the multiplies of many commands; in one
    loop, each command's chain of six dependent mixes ran mostly on its own
    (22 against 13 ns a checkout)."""
    for i in range(len(op)):
        h = _mix(np.uint64(op[i]) ^ (np.uint64(channel[i]) << np.uint64(8)) ^ (np.uint64(country[i]) << np.uint64(16)))
        h = _mix(h ^ np.uint64(target[i]))
        out[i] = _mix(h ^ np.uint64(amount[i]))
    j = 0
    for i in range(len(op)):
        if lines[i] > 0:
            folded = np.uint64(0)
            for p in range(lines[i]):
                folded ^= _mix(_mix(np.uint64(sku[j + p]) ^ np.uint64(p)) ^ np.uint64(np.int64(qty[j + p])))
            out[i] = _mix(out[i] ^ folded)
            j += lines[i]


@kernel
def _fold_args(args, arg, out):
    """Each command's args, in their order, into its fingerprint (a command
    without args keeps the fingerprint it had before args existed)."""
    j = 0
    for i in range(len(args)):
        if args[i] > 0:
            h = out[i]
            for p in range(args[i]):
                h = _mix(h ^ _mix(np.uint64(arg[j + p]) ^ np.uint64(p + 0x9E37)))
            out[i] = h
            j += args[i]


def _row_bytes(cols) -> int:
    return sum(np.dtype(dt).itemsize for _, dt in cols)


def validate(batch: CommandBatch) -> None:
    """Marks commands whose shape is wrong (the engine never sees them): in
    `invalid`, each command's first failing rule of the list in `_validate`;
    an area's command (its fields in args) by its declaration
    (`area_commands.check_args`).  The line and arg counts must add up to
    the lines and args given."""
    from double11 import areas, geo

    _validate(batch.op, batch.key, batch.target, batch.country, batch.channel, batch.lines, batch.amount,
              batch.sku, batch.qty, batch.args, batch.arg, areas.IN_ARGS, geo.VALID, batch.invalid)
    if len(batch.op) and int(batch.op.max()) > _RESTOCK:
        from double11.engine import area_commands

        area_commands.check_args(batch)


_CHECKOUT, _PAY, _RESTOCK = int(Op.checkout), int(Op.pay), int(Op.restock)
_MOBILE, _PC = int(Channel.mobile), int(Channel.pc)
_UNKNOWN_OP, _INVALID_KEY = int(Result.unknown_op), int(Result.invalid_idempotency_key)
_INVALID_REQUEST, _INVALID_COUNTRY = int(Result.invalid_request), int(Result.invalid_country)
_INVALID_CHANNEL, _EMPTY_CHECKOUT = int(Result.invalid_channel), int(Result.empty_checkout)
_TOO_MANY_LINES, _INVALID_QUANTITY = int(Result.too_many_lines), int(Result.invalid_quantity)
_INVALID_AMOUNT = int(Result.invalid_amount)
_LINES_MAX, _QTY_MAX, _RESTOCK_MAX = limits.checkout_lines_max, limits.line_qty_max, limits.restock_qty_max
_COUPONS_MAX = limits.checkout_coupons_max


@kernel
def _validate(op, key, target, country, channel, lines, amount, sku, qty, args, arg, in_args, valid_country,
              invalid):
    # one pass (it was two dozen NumPy passes: 1 ms of a checkout batch's
    # 1.6 ms decode, on the request's path); a command already marked keeps
    # its mark.  Lines are checked in order, each its sku then its qty, as
    # the JSON edge does: the first bad line decides the code.  An area's
    # command gets only its key and its lines checked here: its fields are
    # its args, checked against its declaration after this pass
    line = 0
    a = 0
    for i in range(len(op)):
        n_lines = lines[i]
        bad_line = 0
        for k in range(line, line + n_lines):
            if bad_line == 0:
                if sku[k] <= 0:
                    bad_line = _INVALID_REQUEST
                elif qty[k] < 1 or qty[k] > _QTY_MAX:
                    bad_line = _INVALID_QUANTITY
        line += n_lines
        n_args = args[i]
        first_arg = a
        a += n_args
        if invalid[i] != 0:
            continue
        o = op[i]
        is_checkout = o == _CHECKOUT
        is_area = o < len(in_args) and in_args[o]
        code = 0
        if (o < _CHECKOUT or o > _RESTOCK) and not is_area:
            code = _UNKNOWN_OP
        elif key[i] == 0:
            code = _INVALID_KEY
        elif is_area:
            if n_lines != 0:
                code = _INVALID_REQUEST
        elif is_checkout and target[i] <= 0:
            code = _INVALID_REQUEST
        elif is_checkout and (country[i] >= len(valid_country) or not valid_country[country[i]]):
            code = _INVALID_COUNTRY
        elif is_checkout and channel[i] != _MOBILE and channel[i] != _PC:
            code = _INVALID_CHANNEL
        elif is_checkout and n_lines == 0:
            code = _EMPTY_CHECKOUT
        elif is_checkout and n_lines > _LINES_MAX:
            code = _TOO_MANY_LINES
        elif not is_checkout and n_lines != 0:
            code = _INVALID_REQUEST
        elif bad_line != 0:
            code = bad_line
        elif ((is_checkout and not _coupons_ok(arg, first_arg, n_args))  # its coupons
              or (not is_checkout and n_args != 0)
              or (o != _RESTOCK and not is_checkout and target[i] <= 0)):  # pay, cancel, confirm, refund
            code = _INVALID_REQUEST
        elif o == _PAY and amount[i] <= 0:
            code = _INVALID_AMOUNT
        elif o == _RESTOCK and target[i] <= 0:
            code = _INVALID_REQUEST
        elif o == _RESTOCK and (amount[i] < 1 or amount[i] > _RESTOCK_MAX):
            code = _INVALID_QUANTITY
        invalid[i] = code


@inline
def _coupons_ok(arg, first, count):
    """A checkout's coupons (its args): at most _COUPONS_MAX ids, each
    positive, none repeated."""
    if count > _COUPONS_MAX:
        return False
    for p in range(first, first + count):
        if arg[p] <= 0:
            return False
        for q in range(first, p):
            if arg[q] == arg[p]:
                return False
    return True
