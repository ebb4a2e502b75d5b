"""A batch of the cluster's commands split by unit, and the units' answers
put back together in the batch's order.

Routing (slots.py): a checkout and a coupon grant go to their buyer's unit; a
pay or cancel to the unit its checkout id names, a confirm or refund to the
unit its order id names (the unit's index rides in the id's high bits); a
restock to the SKU's home unit (the unit owning the SKU id's slot), from
which the rebalancer spreads it.  Each unit sees its own local ids; the
answers carry the cluster's again.  A coupon lives in its buyer's unit, so a
checkout naming a coupon of another unit is refused here (not_your_coupon:
it can only be another buyer's), as is one naming a unit that does not
exist (unknown_coupon).

The promotions' definitions (a coupon template, a threshold discount, a deal)
go to every unit (`DEFINED`, definitions.py sends them in one order, so each
has the same id everywhere).  Commands the cluster does not serve (the quota
moves `release`, `coupon_budget` and `deal_qty`, which only the rebalancer
sends, to one unit by name: not_on_cluster) and ids naming no unit are
answered here, changing nothing anywhere.

Pure: no I/O.  `client.py` sends the parts to the units over NATS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from double11 import areas
from double11.cluster.slots import SlotMap, global_ids, local_ids, slot_of, unit_of_id
from double11.engine.batch import CommandBatch, Op
from double11.engine.refusals import COUPON_REF_CODES
from double11.engine.wire import COLUMNS, decode_results
from double11.errors import Result
from double11.promotions.spec import COUPON_TEMPLATE, DEAL, GRANT, THRESHOLD_DISCOUNT

_CHECKOUT, _PAY, _CANCEL, _CONFIRM, _REFUND, _RESTOCK = (
    int(Op.checkout), int(Op.pay), int(Op.cancel), int(Op.confirm), int(Op.refund), int(Op.restock))
_OK = int(Result.ok)
_UNKNOWN_CHECKOUT, _UNKNOWN_ORDER = int(Result.unknown_checkout), int(Result.unknown_order)
_GRANT = GRANT.number
_GRANT_BUYER_AT = GRANT.arg_at("buyer")
# the promotions' definitions: every unit holds each one (definitions.py)
DEFINITIONS = np.array([COUPON_TEMPLATE.number, THRESHOLD_DISCOUNT.number, DEAL.number], dtype=np.int64)
_SERVED = {int(op) for op in Op} | {_GRANT} | set(DEFINITIONS.tolist())
# the quota moves (release, coupon_budget, deal_qty): the rebalancer's, to one unit by name
_NOT_SERVED = np.array([number for number in areas.BY_NUMBER if number not in _SERVED], dtype=np.int64)
_COUPON_REFS = np.array(sorted(int(code) for code in COUPON_REF_CODES), dtype=np.int64)
_UNKNOWN_COUPON, _NOT_YOUR_COUPON = int(Result.unknown_coupon), int(Result.not_your_coupon)
_HEADER = struct.Struct("<4sI")
NOT_ROUTED = -1
DEFINED = -2  # a definition: sent to every unit


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


def units_of(batch: CommandBatch, slot_map: SlotMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, refusal, ref) per command: the index of the unit serving it,
    DEFINED (every unit), or NOT_ROUTED with the code and ref it is
    answered with here."""
    unit, refusal = units_of_commands(batch.op, routing_keys(batch), batch.invalid, slot_map)
    ref = np.zeros(len(unit), dtype=np.int64)
    stray = (unit == NOT_ROUTED) & ((refusal == _UNKNOWN_CHECKOUT) | (refusal == _UNKNOWN_ORDER))
    ref[stray] = batch.target[stray]  # an id naming no unit is the ref of its refusal, as the engine's
    foreign = _foreign_coupons(batch, unit)
    refused = np.flatnonzero(foreign >= 0)
    if len(refused):
        coupon = batch.arg[foreign[refused]]
        unit[refused] = NOT_ROUTED
        refusal[refused] = foreign_coupon_codes(coupon, len(slot_map.units))
        ref[refused] = coupon
    return unit, refusal, ref


def foreign_coupon_codes(coupons: np.ndarray, units: int) -> np.ndarray:
    """The refusal of a checkout naming each coupon, which is not in the
    buyer's unit: not_your_coupon where it names another unit of the cluster
    (a coupon there is another buyer's), unknown_coupon where it names none."""
    named = unit_of_id(coupons)
    return np.where((named >= 0) & (named < units), _NOT_YOUR_COUPON, _UNKNOWN_COUPON).astype(np.uint8)


def routing_keys(batch: CommandBatch) -> np.ndarray:
    """What routes each command: its target (a checkout's buyer, an id, a
    SKU), or for a grant the buyer in its args."""
    keys = batch.target.astype(np.int64)
    grants = np.flatnonzero((batch.op == _GRANT) & (batch.args > _GRANT_BUYER_AT))
    keys[grants] = batch.arg[batch.arg_starts()[grants] + _GRANT_BUYER_AT]
    return keys


def _foreign_coupons(batch: CommandBatch, unit: np.ndarray) -> np.ndarray:
    """Per command: the index in `batch.arg` of the first coupon of a
    routed checkout that names another unit than the buyer's (-1: none)."""
    first = np.full(len(batch.op), -1, dtype=np.int64)
    with_coupons = (batch.op == _CHECKOUT) & (batch.args > 0) & (unit >= 0) & (batch.invalid == 0)
    if not with_coupons.any():
        return first
    counts = batch.args.astype(np.int64)
    owner = np.repeat(np.where(with_coupons, unit, -1), counts)
    places = np.flatnonzero((owner >= 0) & (unit_of_id(batch.arg) != owner))
    command = np.repeat(np.arange(len(batch.op)), counts)[places]
    first[command[::-1]] = places[::-1]  # reversed: the first foreign coupon of each checkout is written last
    return first


def units_of_commands(ops: np.ndarray, target: np.ndarray, invalid: np.ndarray,
                      slot_map: SlotMap) -> tuple[np.ndarray, np.ndarray]:
    """units_of, from the commands' columns: op, routing key (a checkout's or
    grant's buyer, an id, a SKU: routing_keys) and invalid (the edge's code
    for a command of a bad shape, or 0)."""
    op = ops.astype(np.int64)
    unit = np.full(len(op), NOT_ROUTED, dtype=np.int64)
    refusal = np.where(np.isin(op, _NOT_SERVED), int(Result.not_on_cluster), int(Result.unknown_op)).astype(np.uint8)
    unit[np.isin(op, DEFINITIONS)] = DEFINED
    by_buyer = (op == _CHECKOUT) | (op == _GRANT)
    unit[by_buyer] = slot_map.unit_of_buyer(np.maximum(target[by_buyer], 0))
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
    unit[shaped & (unit == DEFINED)] = 0  # a refused definition makes nothing anywhere: one unit says why
    return unit, refusal


def take(batch: CommandBatch, places: np.ndarray) -> CommandBatch:
    """Commands at `places` with their lines and args (copies)."""
    lines = batch.lines.astype(np.int64)
    args = batch.args.astype(np.int64)
    line_idx = _ranges(np.cumsum(lines) - lines, lines, places)
    arg_idx = _ranges(np.cumsum(args) - args, args, places)
    notes = {}
    if batch.notes:  # rare (a command the edge refused): found without a Python loop over the batch
        noted = np.flatnonzero(np.isin(places, np.fromiter(batch.notes, dtype=np.int64)))
        notes = {int(k): batch.notes[int(places[k])] for k in noted}
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
    """The batch's parts by unit (a batch without definitions: `segments`)."""
    unit, refusal, ref = units_of(batch, slot_map)
    if (unit == DEFINED).any():
        raise ValueError("a definition is sent to every unit on its own (router.segments)")
    parts = []
    for u in range(len(slot_map.units)):
        places = np.flatnonzero(unit == u)
        if len(places) == 0:
            continue
        part = take(batch, places)
        by_id = (part.op >= _PAY) & (part.op <= _REFUND)
        part.target = np.where(by_id, local_ids(part.target), part.target)
        coupons = np.repeat(part.op == _CHECKOUT, part.args.astype(np.int64))
        part.arg = np.where(coupons, local_ids(part.arg), part.arg)  # every one names this unit (units_of)
        parts.append(Part(u, places, part))
    code = np.where(unit == NOT_ROUTED, refusal, 0).astype(np.uint8)
    return Routed(parts, code, ref, batch)


def segments(batch: CommandBatch, slot_map: SlotMap) -> list[tuple[np.ndarray, bool]]:
    """The batch in order as runs of commands routed by unit and single
    definitions, each (places, whether it is a definition): a definition
    goes to every unit between what comes before and after it."""
    return runs(units_of(batch, slot_map)[0])


def runs(unit: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """segments, from each command's unit (units_of)."""
    out: list[tuple[np.ndarray, bool]] = []
    start = 0
    for place in [*np.flatnonzero(unit == DEFINED).tolist(), len(unit)]:
        if place > start:
            out.append((np.arange(start, place, dtype=np.int64), False))
        if place < len(unit):
            out.append((np.array([place], dtype=np.int64), True))
        start = place + 1
    return out


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
        made = ((op == _CHECKOUT) | (op == _GRANT)) & (cols["code"] == _OK)  # a checkout, a coupon
        coupon_named = (op == _CHECKOUT) & np.isin(cols["code"], _COUPON_REFS) & (ref > 0)
        ref[made | coupon_named] = global_ids(part.unit, ref[made | coupon_named])
        made &= op == _CHECKOUT
        has_orders = made & (cols["orders"] > 0)
        cols["first_order"][has_orders] = global_ids(part.unit, cols["first_order"][has_orders])
        for name, _ in COLUMNS:
            out[name][part.places] = cols[name]
    return _results_bytes(out, n)


def joined(results: list[bytes]) -> bytes:
    """The binary results of consecutive runs of a batch, as the whole batch's."""
    got = [decode_results(data) for data in results]
    out = {name: np.concatenate([g[name] for g in got]).astype(dt) for name, dt in COLUMNS}
    return _results_bytes(out, len(out["code"]))


def _results_bytes(columns: dict[str, np.ndarray], n: int) -> bytes:
    parts = [_HEADER.pack(b"D11R", n)]
    parts += [np.ascontiguousarray(columns[name], dtype=dt).tobytes() for name, dt in COLUMNS]
    return b"".join(parts)
