"""The JSON answers to single requests, written in one compiled pass.

The common answers (a created checkout, a payment) are written straight
from the engine's columns into one buffer, byte for byte what
`views.results` + msgspec give (a test pins it); every other answer is built
by `views`: refusals by `views.refusal` (each worded for its command: the
field, the line, the bound), cancels, settlements... by `views.results`.
"""

from __future__ import annotations

import msgspec
import numpy as np

from double11.engine import refusals, views
from double11.engine.batch import CommandBatch, Op
from double11.engine.compiled import inline, kernel
from double11.engine.machine import Engine
from double11.errors import Result

_ENC = msgspec.json.Encoder()
_OK, _CREATED = int(Result.ok), int(Result.created)
_LEFT_TO_PYTHON = -1  # an answer code column's mark for the rows `_write` did not write
_CHECKOUT, _PAY = int(Op.checkout), int(Op.pay)
ROW_BYTES_MAX = 200  # a checkout's answer without its orders, every number at 20 digits
ORDER_BYTES_MAX = 100  # one order of it



def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8).copy()


_T_CHECKOUT = _text('{"checkout":')
_T_AMOUNT = _text(',"amount_fen":')
_T_ORDERS = _text(',"orders":[')
_T_ORDER = _text('{"order":')
_T_MERCHANT = _text(',"merchant":')
_T_RESERVED = _text('],"status":"reserved","expires_at":')
_T_PAID = _text(',"status":"paid","amount_fen":')


# The byte loops index with unsigned integers: a signed index is checked for
# being negative (Python's a[-1]) at every byte, which keeps LLVM from
# vectorizing a copy (link.frames._pack_answers: 8x slower)

@inline
def _put(out, p, text):
    for k in range(len(text)):
        out[np.uint64(p + k)] = text[np.uint64(k)]
    return p + len(text)


@inline
def _put_int(out, p, v):
    if v < 0:
        out[p] = 45
        p += 1
        v = -v
    n = 1
    t = v // 10
    while t > 0:
        n += 1
        t //= 10
    for k in range(n - 1, -1, -1):
        out[np.uint64(p + k)] = 48 + v % 10
        v //= 10
    return p + n


@kernel
def _write(code, ref, op, checkouts, checkout_promos, orders, timeout_ms, merchant_id, out, answered, ends):
    """Answers of created checkouts and payments into out: row i's ends at
    ends[i] and starts where row i-1's ended, and its result code in
    answered[i]; _LEFT_TO_PYTHON (and no bytes) for the rows left to Python.
    `checkouts`, `orders`: the tables' records."""
    p = 0
    for i in range(len(code)):
        if code[i] != _OK or (op[i] != _CHECKOUT and op[i] != _PAY):
            answered[i] = _LEFT_TO_PYTHON
            ends[i] = p
            continue
        checkout = checkouts[ref[i] - 1]
        off = 0
        if checkout.promo != 0:
            cp = checkout_promos[checkout.promo - 1]
            off = cp.off_deal + cp.off_store + cp.off_threshold + cp.off_platform
        if op[i] == _CHECKOUT and checkout.promo != 0:  # with its discounts and coupons: Python's
            answered[i] = _LEFT_TO_PYTHON
            ends[i] = p
            continue
        answered[i] = _CREATED if op[i] == _CHECKOUT else _OK
        p = _put(out, p, _T_CHECKOUT)
        p = _put_int(out, p, ref[i])
        if op[i] == _PAY:
            p = _put(out, p, _T_PAID)
            p = _put_int(out, p, checkout.amount - off)
        else:
            p = _put(out, p, _T_AMOUNT)
            p = _put_int(out, p, checkout.amount)
            p = _put(out, p, _T_ORDERS)
            first = checkout.order_start
            for o in range(first, first + checkout.orders):
                if o > first:
                    out[p] = 44
                    p += 1
                p = _put(out, p, _T_ORDER)
                p = _put_int(out, p, o + 1)
                order = orders[o]
                p = _put(out, p, _T_MERCHANT)
                p = _put_int(out, p, merchant_id[order.merchant])
                p = _put(out, p, _T_AMOUNT)
                p = _put_int(out, p, order.amount)
                out[p] = 125
                p += 1
            p = _put(out, p, _T_RESERVED)
            p = _put_int(out, p, checkout.created + timeout_ms)
        out[p] = 125
        p += 1
        ends[i] = p


class Answers:
    """(result code, JSON body) per command, as columns: the bodies lie in
    one buffer, answer i's at data[starts[i]:ends[i]], so hundreds of them go
    down the link in one compiled pass (`link.frames.pack_answers`) without
    a Python object each.  Reads as a sequence of (code, body) tuples; the
    edge says a code as an HTTP status (double11/statuses.py)."""

    __slots__ = ("code", "data", "starts", "ends")

    def __init__(self, code: np.ndarray, data: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.code, self.data, self.starts, self.ends = code, data, starts, ends

    def __len__(self) -> int:
        return len(self.code)

    def __getitem__(self, i):
        if isinstance(i, slice):
            first, last, step = i.indices(len(self))
            if step != 1:
                raise ValueError("Answers slices are contiguous")
            return Answers(self.code[first:last], self.data, self.starts[first:last], self.ends[first:last])
        if i < 0:
            i += len(self)
        return int(self.code[i]), self.data[self.starts[i]:self.ends[i]]

    def __iter__(self):
        data = self.data
        return iter([(s, data[a:b]) for s, a, b in zip(self.code.tolist(), self.starts.tolist(),
                                                       self.ends.tolist())])


def answers(engine: Engine, batch: CommandBatch, code: np.ndarray, ref: np.ndarray,
            start: int, stop: int) -> Answers:
    """(result code, JSON body) for commands start..stop of an applied batch."""
    codes, refs, ops = code[start:stop], ref[start:stop], batch.op[start:stop]
    created = (codes == _OK) & (ops == _CHECKOUT)
    orders = int(engine.c_orders.data[refs[created] - 1].sum()) if created.any() else 0
    out = np.empty(ROW_BYTES_MAX * len(codes) + ORDER_BYTES_MAX * orders, dtype=np.uint8)
    ends = np.empty(len(codes), dtype=np.int64)
    answered = np.empty(len(codes), dtype=np.int64)
    # arrays of one kind whatever the catalog came from (files give read-only
    # ones): a kernel compiles once per kind, and the warm-up compiles this one
    merchant_id = engine.catalog.merchant_id.view()
    merchant_id.flags.writeable = False
    _write(codes, refs, ops, engine.checkouts.rows, engine.promos.checkout_promos.reserve(0), engine.orders.rows,
           engine.config.payment_timeout_ms, merchant_id, out, answered, ends)
    written = int(ends[-1]) if len(ends) else 0
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1]
    rarer = np.flatnonzero(answered == _LEFT_TO_PYTHON).tolist()
    if not rarer:
        return Answers(answered, out[:written].tobytes(), starts, ends)
    extra, at = [], written  # the rarer answers: built in Python, their bodies after the others
    first_line = None  # of each command, for the refusals' messages (they name the line)
    for i in rarer:
        if codes[i] != _OK:
            if first_line is None:
                first_line = refusals.first_lines(batch, stop)
            result, value = views.refusal(engine, batch, start + i, int(codes[i]), int(refs[i]),
                                          int(first_line[start + i]))
        else:
            result, value = views.results(engine, batch, code, ref, start + i, start + i + 1)[0]
        body = _ENC.encode(value)
        answered[i], starts[i] = result, at
        at += len(body)
        ends[i] = at
        extra.append(body)
    return Answers(answered, out[:written].tobytes() + b"".join(extra), starts, ends)
