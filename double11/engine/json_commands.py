"""Single JSON commands straight from their bytes: the fast lane for phones.

A phone sends one command per request.  Decoding each body into a dict and
checking it field by field in Python cost more than everything else the
server does for that request, so the gathered bodies of a group commit are
parsed here in one compiled pass, straight into the batch's columns.

The lane is narrow on purpose.  It takes a body only when it is a plain,
valid command: one JSON object with exactly the fields its op needs, each
once, integers without sign, fraction or exponent, strings of printable
ASCII without escapes.  Anything else (an error to report, an unusual but
valid spelling) goes to the general path (`encode.encode_commands`), which
decides and words every error.  So the lane never changes an answer: for a
body it takes, its columns equal the general path's (a property test pins it).
"""

from __future__ import annotations

import numpy as np

from double11 import geo, limits
from double11.engine.batch import Channel, CommandBatch, Op
from double11.engine.blake2 import SCRATCH_WORDS as BLAKE2B_SCRATCH_WORDS
from double11.engine.blake2 import blake2b64
from double11.engine.compiled import helper, inline, kernel
from double11.engine.encode import decode_single, encode_commands
from double11.errors import Double11Error

LINES_MAX = limits.checkout_lines_max
COUPONS_MAX = limits.checkout_coupons_max
_QTY_MAX = limits.line_qty_max
_RESTOCK_MAX = limits.restock_qty_max
_KEY_BYTES_MAX = limits.idempotency_key_chars_max  # ASCII only here: a byte is a character
_DIGITS_MAX = 18  # below 2**63 whatever the digits; longer numbers take the general path

_COUNTRY_VALID = geo.VALID.copy()
_MOBILE, _PC = int(Channel.mobile), int(Channel.pc)
_CHECKOUT = int(Op.checkout)
_RESTOCK = int(Op.restock)

# member names, by the bit each takes in a command's `seen` mask
F_BUYER, F_COUNTRY, F_CHANNEL, F_LINES, F_KEY, F_AMOUNT, F_QTY = 1, 2, 4, 8, 16, 32, 64
_NEEDS = np.zeros(8, dtype=np.int64)  # op -> exactly the members it takes
_NEEDS[int(Op.checkout)] = F_BUYER | F_COUNTRY | F_CHANNEL | F_LINES | F_KEY
_NEEDS[int(Op.pay)] = F_AMOUNT | F_KEY
_NEEDS[int(Op.cancel)] = F_KEY
_NEEDS[int(Op.confirm)] = F_KEY
_NEEDS[int(Op.refund)] = F_KEY
_NEEDS[int(Op.restock)] = F_QTY | F_KEY


def _bytes(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8).copy()


_F_SKU = 128  # a line's member, never a command's
F_COUPONS = 256  # a checkout's, and optional
# the member names known, end to end, and the bit of each
_NAME_LIST = (("buyer", F_BUYER), ("country", F_COUNTRY), ("channel", F_CHANNEL), ("lines", F_LINES),
              ("idempotency_key", F_KEY), ("amount_fen", F_AMOUNT), ("qty", F_QTY), ("sku", _F_SKU),
              ("coupons", F_COUPONS))
_NAMES = _bytes("".join(name for name, _ in _NAME_LIST))
_NAME_START = np.cumsum([0] + [len(name) for name, _ in _NAME_LIST]).astype(np.int64)
_NAME_BIT = np.array([bit for _, bit in _NAME_LIST], dtype=np.int64)
_V_MOBILE, _V_PC = _bytes("mobile"), _bytes("pc")


@inline
def _at(buf, p, end):
    # the byte at p, or 0 past the end (0 never matches what a parser expects)
    return buf[p] if p < end else 0


@inline
def _skip_ws(buf, p, end):
    while p < end:
        c = buf[p]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        p += 1
    return p


@inline
def _equals(buf, s, e, name):
    if e - s != len(name):
        return False
    for k in range(e - s):  # noqa: SIM110 (compiled: Numba takes no generator in all())
        if buf[s + k] != name[k]:
            return False
    return True


@inline
def _string(buf, p, end):
    """A string at p: (first byte, end, position after it), or first byte -1
    when it is not a plain one (escapes, control or non-ASCII bytes)."""
    if _at(buf, p, end) != 34:
        return -1, p, p
    s = p + 1
    q = s
    while q < end:
        c = buf[q]
        if c == 34:
            return s, q, q + 1
        if c == 92 or c < 32 or c >= 128:
            return -1, q, q
        q += 1
    return -1, q, q


@inline
def _number(buf, p, end):
    """An unsigned integer at p: (value, position after it), value -1 when it
    is not a plain one (sign, leading zero, fraction, exponent, too long)."""
    s = p
    v = 0
    while p < end and 48 <= buf[p] <= 57 and p - s <= _DIGITS_MAX:
        v = v * 10 + (buf[p] - 48)
        p += 1
    n = p - s
    if n == 0 or n > _DIGITS_MAX or (n > 1 and buf[s] == 48):
        return -1, p
    c = _at(buf, p, end)
    if c == 46 or c == 101 or c == 69:
        return -1, p
    return v, p


@helper
def _member_name(buf, p, end):
    """The member name at p as its F_* bit (0 if unknown, -1 if not a plain
    string), and the position after its colon."""
    s, e, p = _string(buf, p, end)
    if s < 0:
        return -1, p
    p = _skip_ws(buf, p, end)
    if _at(buf, p, end) != 58:
        return -1, p
    p = _skip_ws(buf, p + 1, end)
    for k in range(len(_NAME_BIT)):
        if _equals(buf, s, e, _NAMES[_NAME_START[k]:_NAME_START[k + 1]]):
            return _NAME_BIT[k], p
    return 0, p


@inline
def _next_member(buf, p, end):
    """After a member's value: (1, next member) on a comma, (0, after the
    object) on its closing brace, -1 on anything else."""
    p = _skip_ws(buf, p, end)
    c = _at(buf, p, end)
    p = _skip_ws(buf, p + 1, end)
    if c == 44:
        return 1, p
    return (0 if c == 125 else -1), p


@inline
def _next_item(buf, p, end):
    """After an array's item: (1, next item) on a comma, (0, after the
    array) on its closing bracket, -1 on anything else."""
    c = _at(buf, p, end)
    p = _skip_ws(buf, p + 1, end)
    if c == 44:
        return 1, p
    return (0 if c == 93 else -1), p


@helper
def _lines(buf, p, end, slot, sku, qty):
    """The lines array at p into sku/qty[slot:]: (count, position after it),
    count -1 when it is not a plain list of 1 to LINES_MAX valid lines."""
    if _at(buf, p, end) != 91:
        return -1, p
    p = _skip_ws(buf, p + 1, end)
    n = 0
    while True:
        if n == LINES_MAX or _at(buf, p, end) != 123:
            return -1, p
        p = _skip_ws(buf, p + 1, end)
        the_sku, the_qty, seen = 0, 0, 0
        while True:
            name, p = _member_name(buf, p, end)
            if name == _F_SKU and seen & 1 == 0:
                the_sku, p = _number(buf, p, end)
                seen |= 1
            elif name == F_QTY and seen & 2 == 0:
                the_qty, p = _number(buf, p, end)
                seen |= 2
            else:
                return -1, p
            more, p = _next_member(buf, p, end)
            if more <= 0:
                if more < 0:
                    return -1, p
                break
        if seen != 3 or the_sku <= 0 or the_qty <= 0 or the_qty > _QTY_MAX:
            return -1, p
        sku[slot + n] = the_sku
        qty[slot + n] = the_qty
        n += 1
        more, p = _next_item(buf, p, end)
        if more <= 0:
            return (n if more == 0 else -1), p


@helper
def _coupons(buf, p, end, slot, coupon):
    """A checkout's coupons array at p into coupon[slot:]: (count, position
    after it), count -1 when it is not a plain list of at most COUPONS_MAX
    positive ids, none repeated (the general path words what is wrong)."""
    if _at(buf, p, end) != 91:
        return -1, p
    p = _skip_ws(buf, p + 1, end)
    if _at(buf, p, end) == 93:
        return 0, _skip_ws(buf, p + 1, end)
    n = 0
    while True:
        v, p = _number(buf, p, end)
        if v <= 0 or n == COUPONS_MAX:
            return -1, p
        for q in range(n):
            if coupon[slot + q] == v:
                return -1, p
        coupon[slot + n] = v
        n += 1
        more, p = _next_item(buf, _skip_ws(buf, p, end), end)
        if more <= 0:
            return (n if more == 0 else -1), p


@helper
def _command(buf, p, end, op, i, channel, lines, country, key, target, amount, sku, qty, coupon, coupons,
             scratch):
    """Body i (buf[p:end]) into row i; False to leave it to the general path."""
    if op > _RESTOCK or (op != _CHECKOUT and target[i] <= 0):  # an area's command: the general path
        return False
    p = _skip_ws(buf, p, end)
    if _at(buf, p, end) != 123:
        return False
    p = _skip_ws(buf, p + 1, end)
    seen = 0
    while True:
        name, p = _member_name(buf, p, end)
        if name <= 0 or name == _F_SKU or seen & name:
            return False
        seen |= name
        if name == F_BUYER or name == F_AMOUNT or name == F_QTY:  # noqa: SIM109 (compiled: plain comparisons)
            v, p = _number(buf, p, end)
            if v <= 0:
                return False
            if name == F_BUYER:
                target[i] = v
            elif name == F_AMOUNT:
                amount[i] = v
            elif v > _RESTOCK_MAX:
                return False
            else:
                amount[i] = v
        elif name == F_LINES:
            n, p = _lines(buf, p, end, i * LINES_MAX, sku, qty)
            if n < 0:
                return False
            lines[i] = n
        elif name == F_COUPONS:
            n, p = _coupons(buf, p, end, i * COUPONS_MAX, coupon)
            if n < 0 or op != _CHECKOUT:
                return False
            coupons[i] = n
        else:
            s, e, p = _string(buf, p, end)
            if s < 0:
                return False
            if name == F_KEY:
                if e == s or e - s > _KEY_BYTES_MAX:
                    return False
                key[i] = blake2b64(buf, s, e, scratch)
            elif name == F_CHANNEL:
                if _equals(buf, s, e, _V_MOBILE):
                    channel[i] = _MOBILE
                elif _equals(buf, s, e, _V_PC):
                    channel[i] = _PC
                else:
                    return False
            else:  # country: an ISO 3166 alpha-2 code, packed as geo.encode does
                a, b = _at(buf, s, e) - 65, _at(buf, s + 1, e) - 65
                if e - s != 2 or not (0 <= a < 26 and 0 <= b < 26) or not _COUNTRY_VALID[a * 26 + b]:
                    return False
                country[i] = a * 26 + b
        more, p = _next_member(buf, p, end)
        if more <= 0:
            if more < 0:
                return False
            break
    return p == end and (seen & ~F_COUPONS) == _NEEDS[op]


@kernel
def parse_commands(buf, starts, ends, op, taken, channel, lines, country, key, target, amount, sku, qty, coupon,
                   coupons, scratch):
    """Each body buf[starts[i]:ends[i]] of op[i] into row i; taken[i] says
    whether it was (the rest go to the general path).  A row's lines go to
    sku/qty[i * LINES_MAX:], its coupons to coupon[i * COUPONS_MAX:], its
    target is preset from the path (pay...)."""
    for i in range(len(starts)):
        taken[i] = _command(buf, starts[i], ends[i], op[i], i, channel, lines, country, key, target, amount,
                            sku, qty, coupon, coupons, scratch)


class Bodies:
    """Request bodies side by side in one buffer: body i is
    buf[starts[i]:ends[i]] (a read from the link holds them between their
    frames' headers, and is parsed where it lies: no bytes object per body)."""

    __slots__ = ("buf", "starts", "ends")

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        if buf.flags.writeable:  # one compiled parser, for read-only buffers (bytes)
            buf = buf.view()
            buf.flags.writeable = False
        self.buf, self.starts, self.ends = buf, starts, ends

    @classmethod
    def of(cls, bodies: list[bytes]) -> Bodies:
        sizes = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
        ends = np.cumsum(sizes)
        return cls(np.frombuffer(b"".join(bodies), dtype=np.uint8), ends - sizes, ends)

    @classmethod
    def concat(cls, parts: list[Bodies]) -> Bodies:
        if len(parts) == 1:
            return parts[0]
        shift = np.cumsum([0] + [len(p.buf) for p in parts[:-1]])
        return cls(np.concatenate([p.buf for p in parts]),
                   np.concatenate([p.starts + k for p, k in zip(parts, shift)]),
                   np.concatenate([p.ends + k for p, k in zip(parts, shift)]))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> bytes:
        return self.buf[self.starts[i]:self.ends[i]].tobytes()


def parse_bodies(bodies: Bodies, op: np.ndarray, targets: np.ndarray):
    """The fast lane over the bodies: the mask of those it took, and the
    columns (lines as rows of LINES_MAX slots, coupons as rows of
    COUPONS_MAX and their counts), filled for those rows."""
    n = len(bodies)
    invalid = np.zeros(n, dtype=np.uint8)
    channel = np.zeros(n, dtype=np.uint8)
    lines = np.zeros(n, dtype=np.uint8)
    country = np.zeros(n, dtype=np.uint16)
    key = np.zeros(n, dtype=np.uint64)
    target = np.where(op == _CHECKOUT, 0, targets)
    amount = np.zeros(n, dtype=np.int64)
    # a row's slots past its line count are never read (`_compact_lines`)
    sku = np.empty((n, LINES_MAX), dtype=np.int64)
    qty = np.empty((n, LINES_MAX), dtype=np.int32)
    coupon = np.empty((n, COUPONS_MAX), dtype=np.int64)
    coupons = np.zeros(n, dtype=np.uint8)
    taken = np.zeros(n, dtype=np.bool_)
    parse_commands(bodies.buf, bodies.starts, bodies.ends, op, taken, channel, lines, country, key, target, amount,
                   sku.reshape(-1), qty.reshape(-1), coupon.reshape(-1), coupons,
                   np.empty(BLAKE2B_SCRATCH_WORDS, dtype=np.uint64))
    return taken, (invalid, channel, lines, country, key, target, amount, sku, qty, coupon, coupons)


def encode_bodies(bodies: Bodies, ops: np.ndarray, targets: np.ndarray
                  ) -> tuple[CommandBatch, dict[int, Double11Error]]:
    """The bodies of single requests (the op and path target of each) as one
    batch, in their order, but those refused before the engine (a body that
    is not a JSON object), returned by index with their error.  Bodies the
    fast lane does not take are encoded as a JSON batch's commands are."""
    op, targets = np.asarray(ops, dtype=np.uint8), np.asarray(targets, dtype=np.int64)
    taken, columns = parse_bodies(bodies, op, targets)
    invalid, channel, lines, country, key, target, amount, sku, qty, coupon, nargs = columns
    refused: dict[int, Double11Error] = {}
    notes: dict[int, str] = {}  # the words of a malformed command, by index
    # the args of the bodies the lane did not take (an area's commands may hold more than a row's slots)
    args_of: dict[int, np.ndarray] = {}
    for i in np.flatnonzero(~taken).tolist():
        nargs[i] = 0  # what the lane read before it let the body go
        try:
            cmd = decode_single(bodies[i], int(op[i]), int(targets[i]))
        except Double11Error as e:
            refused[i] = e
            continue
        one = encode_commands([cmd])
        invalid[i], channel[i], lines[i], country[i] = one.invalid[0], one.channel[0], one.lines[0], one.country[0]
        key[i], target[i], amount[i] = one.key[0], one.target[0], one.amount[0]
        sku[i, :len(one.sku)] = one.sku
        qty[i, :len(one.qty)] = one.qty
        if len(one.arg):
            nargs[i] = one.args[0]
            args_of[i] = one.arg
        if one.notes:
            notes[i] = one.notes[0]
    if refused:  # rare (a body that is not a JSON object): no copy of the columns otherwise
        keep = np.ones(len(bodies), dtype=np.bool_)
        keep[list(refused)] = False
        op, invalid, channel, lines, country, key, target, amount, sku, qty, coupon, nargs = (
            column[keep] for column in (op, invalid, channel, lines, country, key, target, amount, sku, qty,
                                        coupon, nargs))
        kept_index = np.cumsum(keep) - 1
        notes = {int(kept_index[i]): note for i, note in notes.items()}
        args_of = {int(kept_index[i]): args for i, args in args_of.items()}
    line_sku = np.empty(int(lines.sum(dtype=np.int64)), dtype=np.int64)
    line_qty = np.empty(len(line_sku), dtype=np.int32)
    _compact_lines(sku.reshape(-1), qty.reshape(-1), lines, line_sku, line_qty)
    # args in the order of their commands: the lane's from their slots, the
    # general path's (rare: an area's command, a malformed checkout) as it made them
    arg = np.empty(int(nargs.sum(dtype=np.int64)), dtype=np.int64)
    _compact_args(coupon.reshape(-1), nargs, arg)
    if args_of:
        at = np.cumsum(nargs, dtype=np.int64) - nargs
        for i, args in args_of.items():
            arg[at[i]:at[i] + len(args)] = args
    batch = CommandBatch(op=op, invalid=invalid, channel=channel, lines=lines, country=country, key=key,
                         target=target, amount=amount, sku=line_sku, qty=line_qty, args=nargs, arg=arg,
                         notes=notes)
    return batch, refused


@kernel
def _compact_args(coupon, nargs, arg):
    """Row i's first nargs[i] slots (of COUPONS_MAX) one after another; a
    row with more (the general path's) is left for the caller to fill."""
    p = 0
    for i in range(len(nargs)):
        if nargs[i] <= COUPONS_MAX:
            slot = i * COUPONS_MAX
            for j in range(nargs[i]):
                arg[p + j] = coupon[slot + j]
        p += nargs[i]


@kernel
def _compact_lines(sku, qty, lines, line_sku, line_qty):
    """Row i's first lines[i] slots (of LINES_MAX) one after another."""
    p = 0
    for i in range(len(lines)):
        slot = i * LINES_MAX
        for j in range(lines[i]):
            line_sku[p] = sku[slot + j]
            line_qty[p] = qty[slot + j]
            p += 1
