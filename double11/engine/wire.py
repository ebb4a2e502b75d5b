"""The compact result format for binary batches (`application/x-double11-batch`).

Layout (little endian): magic "D11R", u32 commands, then columns:
code u8 (double11.errors.Result), ref i64 (checkout / order / sku id),
amount_fen i64 (checkout total for checkout and pay), first_order i64,
orders u8 (a checkout's orders are first_order .. first_order + orders - 1),
expires_at i64.
"""

from __future__ import annotations

import struct

import numpy as np

from double11.engine.batch import CommandBatch, Op
from double11.engine.machine import Engine
from double11.errors import Result

_HEADER = struct.Struct("<4sI")
COLUMNS = (("code", "<u1"), ("ref", "<i8"), ("amount_fen", "<i8"), ("first_order", "<i8"),
           ("orders", "<u1"), ("expires_at", "<i8"))


def encode_results(engine: Engine, batch: CommandBatch, code: np.ndarray, ref: np.ndarray) -> bytes:
    n = len(code)
    amount = np.zeros(n, dtype=np.int64)
    first_order = np.zeros(n, dtype=np.int64)
    orders = np.zeros(n, dtype=np.uint8)
    expires = np.zeros(n, dtype=np.int64)
    ok = code == Result.ok
    with_checkout = np.flatnonzero(ok & ((batch.op == Op.checkout) | (batch.op == Op.pay)))
    rows = ref[with_checkout] - 1
    amount[with_checkout] = engine.c_amount.data[rows]
    created = np.flatnonzero(ok & (batch.op == Op.checkout))
    rows = ref[created] - 1
    first_order[created] = engine.c_order_start.data[rows] + 1
    orders[created] = engine.c_orders.data[rows]
    expires[created] = engine.c_created.data[rows] + engine.config.payment_timeout_ms
    parts = [_HEADER.pack(b"D11R", n)]
    for arr, (_, dt) in zip((code, ref, amount, first_order, orders, expires), COLUMNS):
        parts.append(np.ascontiguousarray(arr, dtype=dt).tobytes())
    return b"".join(parts)


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
