"""The batch's hash-table lookups, each in a tight pass of its own before the
state machine's main loop (`transitions.apply_batch`) runs.

Why passes: the idempotency and buyer tables are hundreds of megabytes to
gigabytes, so a probe misses the TLB as well as the cache.  A page walk is
a few hundred ns on a virtual machine, and a software prefetch waits for
its walk before it retires, so a prefetch only hides a walk if the CPU can
look far enough ahead to start the next ones meanwhile.  Inside the main
loop, hundreds of instructions per command, it cannot: the walks ran one
after another and cost half the engine's time.  In a loop of a few dozen
instructions per command the CPU overlaps the walks of many commands
(measured on 2 cores: 200-250 ns per command inside the main loop, ~20 ns
in a pass).

The passes keep the batch's meaning: keys are claimed in command order, so
rows are the same as if each command claimed its own key as it ran.
"""

from __future__ import annotations

import numpy as np

from double11.engine.batch import Op
from double11.engine.compiled import kernel
from double11.engine.hashindex import _home, find_or_claim_one
from double11.engine.prefetch import prefetch
from double11.errors import Result

AHEAD = 16  # probes between prefetching a slot and probing it
CHECKOUT = int(Op.checkout)
KEY_REUSED = int(Result.idempotency_key_reused)
# claimed[i] for a command that does not run; RETRY_OF - row for a retry of row's command
NOT_RUN, RETRY_OF = -1, -2


@kernel
def claim_keys(key, fingerprint, code, ref, table, shift, mask, keys, size, claimed):
    """Every command's idempotency key, found or claimed in order.

    claimed[i] goes out as the key's new row (a command to run), RETRY_OF -
    row (a retry with the same body: it answers row's first result), or
    NOT_RUN: malformed (code[i] != 0 coming in), or a key reused with another
    body, refused here (code[i] = KEY_REUSED) and not remembered.  A new key's
    fingerprint is stored at once, so a retry later in the same batch is
    checked against it.  `keys`: the key records, by row.  Returns the new
    count of keys."""
    slots = table.reshape(-1)
    n = len(key)
    for j in range(n + AHEAD):
        if j < n:
            prefetch(slots, 2 * _home(key[j], shift))
        i = j - AHEAD
        if i < 0:
            continue
        if code[i] != 0:
            claimed[i] = NOT_RUN
            continue
        row, fresh = find_or_claim_one(table, shift, mask, key[i], size)
        if fresh:
            size += 1
            keys[row].fingerprint = fingerprint[i]
            claimed[i] = row
        elif keys[row].fingerprint == fingerprint[i]:
            claimed[i] = RETRY_OF - row
        else:
            code[i], ref[i] = KEY_REUSED, 0
            claimed[i] = NOT_RUN
    return size


@kernel
def claim_buyers(buyer_id, claimed, table, shift, mask, buyers, returning_sorted, buyer_balance, size,
                 buyer_row):
    """The buyer row of every command that names a buyer (`buyer_id`, 0:
    none; a checkout's, a grant's) and will run (a fresh key), registered on
    first sight: a buyer is known from the first checkout they attempt,
    whether or not it is served.  Returns the new count of buyers."""
    slots = table.reshape(-1)
    n = len(buyer_id)
    for j in range(n + AHEAD):
        if j < n and buyer_id[j] != 0:
            prefetch(slots, 2 * _home(np.uint64(buyer_id[j]), shift))
        i = j - AHEAD
        if i < 0:
            continue
        buyer_row[i] = -1
        if buyer_id[i] == 0 or claimed[i] < 0:
            continue
        buyer_id_i = buyer_id[i]
        row, added = find_or_claim_one(table, shift, mask, np.uint64(buyer_id_i), size)
        if added:
            size += 1
            buyer = buyers[row]
            buyer.id = buyer_id_i
            buyer.has_paid = False
            buyer.promo = 0
            at = np.searchsorted(returning_sorted, buyer_id_i)
            buyer.returning = at < len(returning_sorted) and returning_sorted[at] == buyer_id_i
            buyer_balance[row] = 0
        buyer_row[i] = row
    return size
