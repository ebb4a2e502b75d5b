"""The promotions' definitions on a cluster: every unit holds every coupon
template, threshold discount and deal, under the same id, with its share of
a template's budget and of a deal's units.

Why every unit: a buyer's checkout and grants run in the buyer's unit alone
(slots.py), so each unit must know every template, threshold and deal.
Why shares: a template's budget and a deal's units are quotas, as a SKU's
stock is (quotas.py): the shares sum to the whole, so the cluster never
grants more coupons or sells more deal units than the definition allows.
The rebalancer moves shares by demand (`coupon_budget`, `deal_qty`).

Why the same id: a unit numbers its definitions in the order it applies
them, so every unit must apply them in one order.  A definition takes the
next slot of the journal (the KV bucket `d11-definitions`, key `def.<n>`,
made only if absent, so two fronts never take one slot) holding each
unit's request; before sending slot n, its sender finishes slot n - 1 (its
requests sent again: each unit answers a retry from its idempotency table).
So every unit applies slot n - 1 before slot n, whoever sends them, and a
sender that died midway is finished by the next definition's.

A template's budget on a unit is a count alone: a cap on budget_fen allows
budget_fen // discount_fen grants (each grant promises discount_fen), so the
template's grantable coupons, min(budget_count, budget_fen // discount_fen),
are split, and budget_fen is kept whole on each unit, where it never binds.
Its view on a cluster therefore says budget_count = the coupons it may grant.

Pure but for `DefinitionSender`, which sends over the units it is given.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import nats.js.errors
import numpy as np
from nats.js.kv import KeyValue

from double11.cluster.quotas import split_stock
from double11.engine.batch import CommandBatch
from double11.promotions.spec import COUPON_TEMPLATE, DEAL

_TEMPLATE, _DEAL = COUPON_TEMPLATE.number, DEAL.number
_SPLIT_FIELD = {_TEMPLATE: "budget_count", _DEAL: "qty"}
_SPLIT_AT = {_TEMPLATE: COUPON_TEMPLATE.arg_at("budget_count"), _DEAL: DEAL.arg_at("qty")}
_TEMPLATE_AT = {name: COUPON_TEMPLATE.arg_at(name) for name in ("budget_count", "budget_fen", "discount_fen")}
DEFINITIONS_BUCKET, KEY_PREFIX = "d11-definitions", "def."
_SLOT = re.compile(r"def\.(\d+)$")


def grantable(budget_count: int, budget_fen: int, discount_fen: int) -> int:
    """The coupons a template may grant: its count, or fewer where its fen budget caps it."""
    return min(budget_count, budget_fen // discount_fen) if budget_fen > 0 else budget_count


def shares(op: int, fields: dict[str, Any], units: int) -> list[int] | None:
    """Each unit's share of a definition's quota (a template's coupons, a
    deal's units); None for fields that do not read (the unit refuses them:
    one unit is sent them) or a definition without a quota."""
    try:
        if op == _TEMPLATE:
            whole = grantable(int(fields["budget_count"]), int(fields.get("budget_fen") or 0),
                              max(int(fields["discount_fen"]), 1))
        elif op == _DEAL:
            whole = int(fields["qty"])
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    if whole < 0:
        return None
    return [int(x) for x in split_stock(np.array([whole], dtype=np.int64), units)[:, 0]]


def split_command(command: dict[str, Any], op: int, units: int) -> list[dict[str, Any]] | None:
    """A JSON definition as each unit is sent it (None: to one unit as it came)."""
    if op not in _SPLIT_FIELD:
        return [command] * units  # a threshold discount: alike in every unit
    split = shares(op, command, units)
    if split is None:
        return None
    return [{**command, _SPLIT_FIELD[op]: share} for share in split]


def split_batch(batch: CommandBatch, units: int) -> list[CommandBatch] | None:
    """A binary batch of one definition as each unit is sent it (None: to one unit as it came)."""
    op = int(batch.op[0])
    if batch.invalid[0] != 0:
        return None
    if op not in _SPLIT_FIELD:
        return [batch] * units
    fields = {name: int(batch.arg[at]) for name, at in _TEMPLATE_AT.items()} if op == _TEMPLATE else (
        {"qty": int(batch.arg[_SPLIT_AT[op]])} if op == _DEAL else {})
    split = shares(op, fields, units)
    if split is None:
        return None
    out = []
    for share in split:
        arg = batch.arg.copy()
        arg[_SPLIT_AT[op]] = share
        out.append(dataclasses.replace(batch, arg=arg))
    return out


# --------------------------------------------------------------- the journal
class Definition(msgspec.Struct):
    """One slot of the journal: what each unit is sent, and how."""

    request: str  # the unit request: "batch", "commands" or "single"
    payloads: list[bytes]  # by unit index; empty bytes: that unit is not sent it
    headers: dict[str, str] | None = None  # the principal it is sent on behalf of
    done: bool = False


class Journal(Protocol):
    """Slots taken in order, kept where every sender finds them."""

    async def take(self, slot: int, value: bytes) -> bool: ...  # False: the slot was taken
    async def read(self, slot: int) -> bytes | None: ...
    async def write(self, slot: int, value: bytes) -> None: ...
    async def last(self) -> int: ...  # the highest slot taken, 0: none


class MemoryJournal:
    def __init__(self) -> None:
        self.slots: dict[int, bytes] = {}

    async def take(self, slot: int, value: bytes) -> bool:
        if slot in self.slots:
            return False
        self.slots[slot] = value
        return True

    async def read(self, slot: int) -> bytes | None:
        return self.slots.get(slot)

    async def write(self, slot: int, value: bytes) -> None:
        self.slots[slot] = value

    async def last(self) -> int:
        return max(self.slots, default=0)


def slot_of_key(key: str) -> int | None:
    match = _SLOT.match(key)
    return int(match[1]) if match else None


Send = Callable[[int, str, bytes, "dict[str, str] | None"], Awaitable[bytes]]


class DefinitionSender:
    """Sends definitions to every unit in the journal's order (see the module)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._next: int | None = None

    async def define(self, definition: Definition, send: Send) -> list[bytes]:
        """Each unit's answer (empty where it was not sent), in unit order;
        `send` reaches a unit (and says how long a failing one is waited for)."""
        value = msgspec.msgpack.encode(definition)
        slot = self._next if self._next is not None else await self.journal.last() + 1
        while not await self.journal.take(slot, value):
            slot += 1
        self._next = slot + 1
        if slot > 1:
            await self.finish(slot - 1, send)
        answers = await _send_all(definition, send)
        definition.done = True
        await self.journal.write(slot, msgspec.msgpack.encode(definition))
        return answers

    async def finish(self, slot: int, send: Send) -> None:
        """Slot `slot` sent to every unit, unless it is known done."""
        value = await self.journal.read(slot)
        if value is None:
            return
        earlier = msgspec.msgpack.decode(value, type=Definition)
        if not earlier.done:
            await _send_all(earlier, send)


async def _send_all(definition: Definition, send: Send) -> list[bytes]:
    return [await send(unit, definition.request, payload, definition.headers) if payload else b""
            for unit, payload in enumerate(definition.payloads)]


class KvJournal:
    """The journal in the KV bucket `d11-definitions` (key `def.<slot>`)."""

    def __init__(self, bucket: KeyValue) -> None:
        self.bucket = bucket

    async def take(self, slot: int, value: bytes) -> bool:
        try:
            await self.bucket.create(f"{KEY_PREFIX}{slot}", value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def read(self, slot: int) -> bytes | None:
        try:
            return (await self.bucket.get(f"{KEY_PREFIX}{slot}")).value
        except nats.js.errors.KeyNotFoundError:
            return None

    async def write(self, slot: int, value: bytes) -> None:
        await self.bucket.put(f"{KEY_PREFIX}{slot}", value)

    async def last(self) -> int:
        try:
            keys = await self.bucket.keys()
        except nats.js.errors.NoKeysError:
            return 0
        return max((s for s in map(slot_of_key, keys) if s is not None), default=0)
