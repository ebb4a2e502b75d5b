"""A batch's commands checked against the principals that sent them.

Runs on the engine thread, under its lock, just before the batch is applied
and logged (service/writes.py): whose checkout a payment names is a fact of
the state, and ownership never changes once a thing exists, so a check here
is exact.  A refused command gets its code in the batch's `invalid` column,
as a malformed one does: the engine refuses it without remembering its key,
and the log replays the same refusal without knowing any principal.

- a role the command does not allow: 403 forbidden;
- a buyer paying, cancelling, settling or refunding another buyer's
  checkout or order: 404 unknown_checkout / unknown_order, the answer to one
  that does not exist (a token learns nothing of others' things);
- a buyer checking out or claiming a coupon as another buyer, a merchant
  restocking another's SKU or making coupons for another store: 403.
A thing that does not exist is left to the engine, which says so.

An idempotency key is scoped to who sent it: a buyer's or a merchant's key
is mixed with its role and id (the gateways and the operator share one
space), so one buyer cannot take, or learn of, the keys another will use.
The log holds the mixed keys: a replay needs no principal.
"""

from __future__ import annotations

import numpy as np

from double11 import areas
from double11.access.roles import Role, a_token_of
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine
from double11.errors import Result
from double11.spec import Command

_NOBODY = -1  # the owner of a thing that does not exist

# a refused owner check: the code, and whether the thing is one a token may
# not learn exists (then its words are the engine's for a missing one)
_NOT_THEIRS = {
    "checkout": Result.unknown_checkout,
    "order": Result.unknown_order,
}


def refuse(batch: CommandBatch, engine: Engine) -> None:
    """Marks, in `batch.invalid`, the commands their principals may not
    call (`batch.role`, `batch.actor`; none: all trusted)."""
    if not len(batch.role):
        return
    batch.key = scoped_keys(batch.key, batch.role, batch.actor)
    checked = (batch.invalid == 0) & (batch.role != Role.operator)
    if not checked.any():
        return
    for number in np.unique(batch.op[checked]).tolist():
        command = areas.BY_NUMBER.get(number)
        if command is None:  # an unknown op: the edge already refused it
            continue
        mine = np.flatnonzero(checked & (batch.op == number))
        roles = batch.role[mine]
        anyone = np.isin(roles, list(command.allowed.anyone))
        own = np.isin(roles, list(command.allowed.own)) & ~anyone
        for i in mine[~anyone & ~own].tolist():
            batch.invalid[i] = Result.forbidden
            batch.notes[i] = f"{a_token_of(Role(int(batch.role[i])))} may not {command.op}"
        owned = mine[own]
        if len(owned):
            _check_owners(batch, engine, command, owned)


_SCOPED = np.array([Role.buyer, Role.merchant], dtype=np.uint8)


def scoped_keys(keys: np.ndarray, roles: np.ndarray, actors: np.ndarray) -> np.ndarray:
    """Keys (digests) sent by these roles and actors, as the engine holds
    them: each buyer's and merchant's in a space of its own (also for the
    HTTP front's questions about keys: engine/stock_probe.py)."""
    keys = np.array(keys, dtype=np.uint64)
    scoped = np.isin(roles, _SCOPED) & (keys != 0)
    if scoped.any():
        keys[scoped] = _mixed(keys[scoped], roles[scoped], actors[scoped])
    return keys


def _mixed(keys: np.ndarray, roles: np.ndarray, actors: np.ndarray) -> np.ndarray:
    who = (roles.astype(np.uint64) << np.uint64(56)) ^ actors.astype(np.uint64)
    with np.errstate(over="ignore"):  # a 64-bit hash: it wraps by design
        mixed = _mix64(keys ^ _mix64(who))
    return np.where(mixed == 0, np.uint64(1), mixed)  # 0 is 'no key'


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _check_owners(batch: CommandBatch, engine: Engine, command: Command, rows: np.ndarray) -> None:
    roles = batch.role[rows]
    owners = _owners(batch, engine, command, rows, roles)
    wrong = (owners != _NOBODY) & (owners != batch.actor[rows])
    hidden = _NOT_THEIRS.get(command.owner)
    for k in np.flatnonzero(wrong).tolist():
        i = int(rows[k])
        if hidden is not None:
            batch.invalid[i] = hidden  # worded by the engine, as for one that does not exist
        else:
            batch.invalid[i] = Result.forbidden
            whose = "buyer" if roles[k] == Role.buyer else "merchant"
            batch.notes[i] = (f"a {whose} token acts for {whose} {int(batch.actor[i])} only: "
                              f"{command.owner} {int(_named(batch, command, np.array([i]))[0])} is another's")


def _named(batch: CommandBatch, command: Command, rows: np.ndarray) -> np.ndarray:
    """The value of the command's owner field in each of these commands."""
    if command.in_args:
        return batch.arg[batch.arg_starts()[rows] + command.arg_at(command.owner)]
    return batch.target[rows]


def _owners(batch: CommandBatch, engine: Engine, command: Command, rows: np.ndarray,
            roles: np.ndarray) -> np.ndarray:
    """The buyer (for a buyer's token) or merchant (a merchant's) each
    command's thing belongs to; _NOBODY where there is no such thing."""
    named = _named(batch, command, rows).astype(np.int64)
    kind = command.owner
    if kind in ("buyer", "merchant"):  # the command names its owner itself
        return named
    out = np.full(len(rows), _NOBODY, dtype=np.int64)
    if kind == "sku":
        sku_rows = engine.sku_index.lookup(named)
        found = sku_rows >= 0
        out[found] = engine.catalog.sku_merchant[sku_rows[found]]
        return out
    if kind == "order":
        exists = (named >= 1) & (named <= engine.o_status.size)
        checkout_rows = np.full(len(rows), -1, dtype=np.int64)
        checkout_rows[exists] = engine.o_checkout.data[named[exists] - 1]
    elif kind == "checkout":
        exists = (named >= 1) & (named <= engine.c_status.size)
        checkout_rows = np.where(exists, named - 1, -1)
    else:
        raise ValueError(f"{command.op}: no way to find the owner of a {kind!r}")
    found = checkout_rows >= 0
    out[found] = engine.b_id.data[engine.c_buyer.data[checkout_rows[found]]]
    return out
