"""A batch of the cluster's commands split by unit, and the units' answers
put back together in the batch's order.

Routing (slots.py): a checkout goes to its buyer's unit; a pay or cancel to
the unit its checkout id names, a confirm or refund to the unit its order id
names (the unit's index rides in the id's high bits); a restock to the SKU's
home unit (the unit owning the SKU id's slot), from which the rebalancer
spreads it.  Each unit sees its own local ids; the answers carry the
cluster's again.  Commands the cluster does not serve yet (the promotions
area's; `release`, which only the rebalancer sends, to one unit by name:
not_on_cluster) and ids naming no unit are answered here, changing nothing
anywhere.

Pure: no I/O.  `client.py` sends the parts to the units over NATS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from double11 import areas
from double11.cluster.slots import SlotMap, global_ids, local_ids, slot_of, unit_of_id
from double11.engine.batch import CommandBatch, Op
from double11.engine.wire import COLUMNS, decode_results
from double11.errors import Result

_CHECKOUT, _PAY, _CANCEL, _CONFIRM, _REFUND, _RESTOCK = (
    int(Op.checkout), int(Op.pay), int(Op.cancel), int(Op.confirm), int(Op.refund), int(Op.restock))
_OK = int(Result.ok)
_UNKNOWN_CHECKOUT, _UNKNOWN_ORDER = int(Result.unknown_checkout), int(Result.unknown_order)
# the areas' commands (the promotions', release): a cluster answers them not_on_cluster
_NOT_SERVED = np.array([number for number in areas.BY_NUMBER if number not in {int(op) for op in Op}], dtype=np.int64)
_HEADER = struct.Struct("<4sI")
NOT_ROUTED = -1


@dataclass
class Part:
    """The commands of one unit: their places in the batch, and the batch
    the unit is sent (local ids)."""

    unit: int
    places: np.ndarray  # int64, ascending
    batch: CommandBatch


@dataclass
class Routed:
    parts: list[Part]
    # the answers of the commands answered here (unit NOT_ROUTED), by place
    code: np.ndarray  # uint8, for every command (NOT_ROUTED ones filled in)
    ref: np.ndarray  # int64
    batch: CommandBatch  # as sent


def units_of(batch: CommandBatch, slot_map: SlotMap) -> tuple[np.ndarray, np.ndarray]:
    """(unit, refusal) per command: the index of the unit serving it, or
    NOT_ROUTED with the code it is answered with here."""
    return units_of_commands(batch.op, batch.target, batch.invalid, slot_map)


def units_of_commands(ops: np.ndarray, target: np.ndarray, invalid: np.ndarray,
                      slot_map: SlotMap) -> tuple[np.ndarray, np.ndarray]:
    """units_of, from the commands' columns: op, target (a checkout's buyer,
    an id, a SKU) and invalid (the edge's code for a command of a bad shape, or 0)."""
    op = ops.astype(np.int64)
    unit = np.full(len(op), NOT_ROUTED, dtype=np.int64)
    refusal = np.where(np.isin(op, _NOT_SERVED), int(Result.not_on_cluster), int(Result.unknown_op)).astype(np.uint8)
    by_buyer = op == _CHECKOUT
    unit[by_buyer] = slot_map.unit_of_buyer(target[by_buyer])
    by_sku = op == _RESTOCK
    unit[by_sku] = slot_map.owner[slot_of(target[by_sku], slot_map.slots)]
    by_id = (op >= _PAY) & (op <= _REFUND)
    named = unit_of_id(target)
    known = by_id & (named >= 0) & (named < len(slot_map.units))
    unit[known] = named[known]
    strays = by_id & ~known
    refusal[strays & (op <= _CANCEL)] = int(Result.unknown_checkout)
    refusal[strays & (op >= _CONFIRM)] = int(Result.unknown_order)
    # a command whose shape the edge refused goes to the first unit, which
    # answers its refusal in the engine's words and logs it as every unit does
    shaped = invalid != 0
    unit[shaped & (unit == NOT_ROUTED) & (op <= _RESTOCK) & (op >= _CHECKOUT)] = 0
    return unit, refusal


def take(batch: CommandBatch, places: np.ndarray) -> CommandBatch:
    """Commands at `places` with their lines and args (copies)."""
    lines = batch.lines.astype(np.int64)
    args = batch.args.astype(np.int64)
    line_idx = _ranges(np.cumsum(lines) - lines, lines, places)
    arg_idx = _ranges(np.cumsum(args) - args, args, places)
    notes = {k: batch.notes[int(p)] for k, p in enumerate(places) if int(p) in batch.notes}
    role = batch.role[places] if len(batch.role) else batch.role
    actor = batch.actor[places] if len(batch.actor) else batch.actor
    return CommandBatch(op=batch.op[places], invalid=batch.invalid[places], channel=batch.channel[places],
                        lines=batch.lines[places], country=batch.country[places], key=batch.key[places],
                        target=batch.target[places], amount=batch.amount[places], args=batch.args[places],
                        sku=batch.sku[line_idx], qty=batch.qty[line_idx], arg=batch.arg[arg_idx], notes=notes,
                        role=role, actor=actor)


def _ranges(starts: np.ndarray, counts: np.ndarray, places: np.ndarray) -> np.ndarray:
    """The indexes starts[p] .. starts[p] + counts[p] - 1 for each p in places, in order."""
    n = counts[places]
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(n) - n
    return np.repeat(starts[places] - offsets, n) + np.arange(total, dtype=np.int64)


def route(batch: CommandBatch, slot_map: SlotMap) -> Routed:
    unit, refusal = units_of(batch, slot_map)
    parts = []
    for u in range(len(slot_map.units)):
        places = np.flatnonzero(unit == u)
        if len(places) == 0:
            continue
        part = take(batch, places)
        by_id = (part.op >= _PAY) & (part.op <= _REFUND)
        part.target = np.where(by_id, local_ids(part.target), part.target)
        parts.append(Part(u, places, part))
    code = np.where(unit == NOT_ROUTED, refusal, 0).astype(np.uint8)
    stray = (unit == NOT_ROUTED) & ((refusal == _UNKNOWN_CHECKOUT) | (refusal == _UNKNOWN_ORDER))
    ref = np.where(stray, batch.target, 0)  # an id naming no unit is the ref of its refusal, as the engine's
    return Routed(parts, code, ref.astype(np.int64), batch)


def merge(routed: Routed, answers: list[bytes]) -> bytes:
    """The binary results of the whole batch, in its order, in the cluster's
    ids, from each part's results (`answers[k]` answers `routed.parts[k]`)."""
    n = len(routed.code)
    out = {name: np.zeros(n, dtype=dt) for name, dt in COLUMNS}
    out["code"][:] = routed.code
    out["ref"][:] = routed.ref
    for part, data in zip(routed.parts, answers, strict=True):
        got = decode_results(data)
        if len(got["code"]) != len(part.places):
            raise ValueError(f"unit {part.unit} answered {len(got['code'])} commands of {len(part.places)}")
        cols = {name: got[name].astype(out[name].dtype) for name, _ in COLUMNS}
        sent = routed.batch.target[part.places]
        op = part.batch.op
        ref = cols["ref"]
        # an id the command named comes back as it was sent; a new checkout's id and its orders' get the unit
        by_id = (op >= _PAY) & (op <= _REFUND) & (ref == part.batch.target)
        ref[by_id] = sent[by_id]
        made = (op == _CHECKOUT) & (cols["code"] == _OK)
        ref[made] = global_ids(part.unit, ref[made])
        has_orders = made & (cols["orders"] > 0)
        cols["first_order"][has_orders] = global_ids(part.unit, cols["first_order"][has_orders])
        for name, _ in COLUMNS:
            out[name][part.places] = cols[name]
    parts = [_HEADER.pack(b"D11R", n)]
    parts += [np.ascontiguousarray(out[name], dtype=dt).tobytes() for name, dt in COLUMNS]
    return b"".join(parts)
