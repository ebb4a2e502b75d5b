"""JSON-shaped commands (dicts) into a CommandBatch: the edge of the engine.

Type errors are caught here, per command, with the same result codes the
binary path gets from `batch.validate`; range checks are left to `validate`
so both paths share one set of rules.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from double11 import geo, limits
from double11.engine.batch import Channel, CommandBatch, Op, validate
from double11.errors import Result

OPS = {op.name: op for op in Op}
CHANNELS = {ch.name: ch for ch in Channel}
_TARGET_FIELD = {Op.pay: "checkout", Op.cancel: "checkout", Op.confirm: "order", Op.refund: "order", Op.restock: "sku"}


def key_hash(key: str) -> int:
    """Idempotency keys are stored as 64-bit digests (0 is reserved for 'none')."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return digest or 1


def _is_int(v: Any) -> bool:
    return type(v) is int and -(2**63) <= v < 2**63


def encode_commands(commands: list[Any]) -> CommandBatch:
    n = len(commands)
    op = np.zeros(n, dtype=np.uint8)
    invalid = np.zeros(n, dtype=np.uint8)
    channel = np.zeros(n, dtype=np.uint8)
    nlines = np.zeros(n, dtype=np.uint8)
    country = np.zeros(n, dtype=np.uint16)
    key = np.zeros(n, dtype=np.uint64)
    target = np.zeros(n, dtype=np.int64)
    amount = np.zeros(n, dtype=np.int64)
    skus: list[int] = []
    qtys: list[int] = []
    for i, cmd in enumerate(commands):
        if not isinstance(cmd, dict):
            invalid[i] = Result.invalid_request
            continue
        o = OPS.get(cmd.get("op")) if isinstance(cmd.get("op"), str) else None
        if o is None:
            invalid[i] = Result.unknown_op
            continue
        op[i] = o
        k = cmd.get("idempotency_key")
        if isinstance(k, str) and 0 < len(k) <= limits.idempotency_key_chars_max:
            key[i] = key_hash(k)
        else:
            invalid[i] = Result.invalid_idempotency_key
            continue
        if o == Op.checkout:
            _encode_checkout(cmd, i, invalid, channel, nlines, country, target, skus, qtys)
            continue
        t = cmd.get(_TARGET_FIELD[o])
        if not _is_int(t):
            invalid[i] = Result.invalid_request
            continue
        target[i] = t
        if o == Op.pay:
            a = cmd.get("amount_fen")
            if not _is_int(a):
                invalid[i] = Result.invalid_amount
                continue
            amount[i] = a
        elif o == Op.restock:
            q = cmd.get("qty")
            if not _is_int(q):
                invalid[i] = Result.invalid_quantity
                continue
            amount[i] = q
    batch = CommandBatch(
        op=op, invalid=invalid, channel=channel, lines=nlines, country=country, key=key,
        target=target, amount=amount,
        sku=np.array(skus, dtype=np.int64), qty=np.array(qtys, dtype=np.int32),
    )
    validate(batch)
    return batch


def _encode_checkout(cmd, i, invalid, channel, nlines, country, target, skus, qtys) -> None:
    buyer = cmd.get("buyer")
    if not _is_int(buyer):
        invalid[i] = Result.invalid_request
        return
    target[i] = buyer
    c = cmd.get("country")
    code = geo.encode(c) if isinstance(c, str) else -1
    if code < 0:
        invalid[i] = Result.invalid_country
        return
    country[i] = code
    ch = cmd.get("channel")
    if not (isinstance(ch, str) and ch in CHANNELS):
        invalid[i] = Result.invalid_channel
        return
    channel[i] = CHANNELS[ch]
    lines = cmd.get("lines")
    if not isinstance(lines, list):
        invalid[i] = Result.invalid_request
        return
    if len(lines) > limits.checkout_lines_max:
        invalid[i] = Result.too_many_lines
        return
    for line in lines:
        if not isinstance(line, dict) or not _is_int(line.get("sku")):
            invalid[i] = Result.invalid_request
            return
        q = line.get("qty")
        if not _is_int(q) or not 0 < q <= limits.line_qty_max:
            invalid[i] = Result.invalid_quantity
            return
    # only well-formed lines enter the batch, so line counts always add up
    nlines[i] = len(lines)
    for line in lines:
        skus.append(line["sku"])
        qtys.append(line["qty"])
