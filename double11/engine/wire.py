"""The compact result format for binary batches (`application/x-double11-batch`).

Layout (little endian): magic "D11R", u32 commands, then columns:
code u8 (double11.errors.Result), ref i64 (checkout / order / sku id),
amount_fen i64 (checkout total for checkout and pay, a refused pay's
amount_mismatch included), first_order i64, orders u8 (a checkout's orders
are first_order .. first_order + orders - 1), expires_at i64.

A refusal's ref is the engine's: the id it is about (unknown_sku: the SKU;
a pay, cancel, confirm or refund: its checkout or order), 0 for a malformed
command, and for out_of_stock the short line and the units its SKU had
(refusals.short_line).  A release's ref (double11/quotas) is the units its
SKU has for sale after it, or, refused out_of_stock, had before it.  `messages` words each refusal from the batch sent
and these columns, as the JSON answer words it.
"""

from __future__ import annotations

import struct

import numpy as np

from double11.engine import refusals
from double11.engine.batch import CommandBatch, Op
from double11.engine.compiled import inline, kernel
from double11.engine.machine import Engine
from double11.errors import Result, error_body

_HEADER = struct.Struct("<4sI")
_OK = int(Result.ok)
_AMOUNT_MISMATCH = int(Result.amount_mismatch)
_CHECKOUT, _PAY = int(Op.checkout), int(Op.pay)
COLUMNS = (("code", "<u1"), ("ref", "<i8"), ("amount_fen", "<i8"), ("first_order", "<i8"),
           ("orders", "<u1"), ("expires_at", "<i8"))


def encode_results(engine: Engine, batch: CommandBatch, code: np.ndarray, ref: np.ndarray) -> bytes:
    n = len(code)
    amount = np.empty(n, dtype=np.int64)
    first_order = np.empty(n, dtype=np.int64)
    orders = np.empty(n, dtype=np.uint8)
    expires = np.empty(n, dtype=np.int64)
    _checkout_columns(code, ref, batch.op, engine.checkouts.rows, engine.promos.checkout_promos.reserve(0),
                      engine.config.payment_timeout_ms, amount, first_order, orders, expires)
    parts = [_HEADER.pack(b"D11R", n)]
    for arr, (_, dt) in zip((code, ref, amount, first_order, orders, expires), COLUMNS):
        parts.append(np.ascontiguousarray(arr, dtype=dt).tobytes())
    return b"".join(parts)


@inline
def _payable(row, checkout_promos):
    if row["promo"] == 0:
        return row["amount"]
    cp = checkout_promos[row["promo"] - 1]
    return row["amount"] - cp["off_deal"] - cp["off_store"] - cp["off_threshold"] - cp["off_platform"]


@kernel
def _checkout_columns(code, ref, op, checkouts, checkout_promos, payment_timeout_ms, amount, first_order, orders,
                      expires):
    # one pass, each checkout's record read once (it was four NumPy gathers
    # and a dozen passes: about 3 ms a batch of 20,480, on the answer's path)
    for i in range(len(code)):
        amount[i] = 0
        first_order[i] = 0
        orders[i] = 0
        expires[i] = 0
        if code[i] == _AMOUNT_MISMATCH:  # the total the pay should have given
            amount[i] = _payable(checkouts[ref[i] - 1], checkout_promos)
            continue
        if code[i] != _OK or (op[i] != _CHECKOUT and op[i] != _PAY):
            continue
        row = checkouts[ref[i] - 1]
        amount[i] = _payable(row, checkout_promos)
        if op[i] == _CHECKOUT:
            first_order[i] = row["order_start"] + 1
            orders[i] = row["orders"]
            expires[i] = row["created"] + payment_timeout_ms


def decode_results(data: bytes) -> dict[str, np.ndarray]:
    magic, n = _HEADER.unpack_from(data)
    if magic != b"D11R":
        raise ValueError("not a double11 result batch")
    offset = _HEADER.size
    out = {}
    for name, dt in COLUMNS:
        arr = np.frombuffer(data, dtype=dt, count=n, offset=offset)
        offset += arr.nbytes
        out[name] = arr
    return out


def messages(batch: CommandBatch, answer: dict[str, np.ndarray]) -> list[str | None]:
    """The message of each refused command of a binary batch (None where it
    was done): the words its JSON answer carries.  `batch`: the batch as
    sent; `answer`: its `decode_results`."""
    out: list[str | None] = []
    first_line = refusals.first_lines(batch, len(batch))
    for i, (c, r) in enumerate(zip(answer["code"].tolist(), answer["ref"].tolist())):
        if c == _OK:
            out.append(None)
            continue
        code = Result(c)
        message = None
        if refusals.refused_at_the_edge(code, r):
            shaped = refusals.shape_message(batch, i, int(first_line[i]))
            message = shaped[1] if shaped is not None and shaped[0] == code else None
        else:
            total = int(answer["amount_fen"][i]) if code == Result.amount_mismatch else None
            message = refusals.state_message(code, r, batch, i, int(first_line[i]), total)
        out.append(error_body(code, message=message)["error"]["message"])
    return out
